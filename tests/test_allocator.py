"""The engines' allocator: tcmalloc preloaded into the engine process when the machine has it,
glibc when asked or when it is missing, and the heap trimmer working with either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunebook.adapt import engine_env
from tunebook.engines import allocator
from tunebook.engines.unsloth import pad_multiple, sft_kwargs
from tunebook.machine import Machine

CPU = Machine(cpu_count=2, ram_gib=24, cpu_model="test cpu", cpu_flags=("avx2",))
TCMALLOC = allocator.find_tcmalloc()
needs_tcmalloc = pytest.mark.skipif(TCMALLOC is None, reason="libtcmalloc-minimal4 not installed (make setup installs it as root)")

PROBE = r"""
import json
from tunebook.engines.allocator import in_use
from tunebook.engines.heap_trim import Trimmer, rss_mib

t = Trimmer(growth_mib=100)
t.after_step(1)
t.after_step(2)
blocks = [bytearray(64 * 1024) for _ in range(4000)]   # 250 MiB of small blocks
keep = blocks[-1]
del blocks
before = rss_mib()
t.after_step(3)
print(json.dumps({"allocator": in_use(), "trims": len(t.trims), "before": before, "after": rss_mib()}))
"""


def _probe(extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TUNEBOOK_MALLOC_TRIM")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, **extra_env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_glibc_when_asked(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "glibc")
    env, why = allocator.preload_env()
    assert env == {} and "glibc" in why
    env, changes = engine_env(CPU)
    assert "LD_PRELOAD" not in env and not any(c.key == "env.LD_PRELOAD" for c in changes)


def test_missing_library_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    env, why = allocator.preload_env({})
    assert env == {} and "libtcmalloc-minimal4" in why


@needs_tcmalloc
def test_engine_env_preloads_tcmalloc_and_keeps_other_preloads(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    env, changes = engine_env(CPU)
    assert env["LD_PRELOAD"].split(":") == [TCMALLOC, "/opt/other.so"]
    assert any(c.key == "env.LD_PRELOAD" and "tcmalloc" in c.why for c in changes), "the run summary says why"
    assert "LD_PRELOAD" not in engine_env(CPU, allocator=False)[0], "evaluation keeps glibc"


@needs_tcmalloc
def test_preloaded_tcmalloc_serves_the_process_and_the_trimmer_returns_its_free_pages():
    env, _ = allocator.preload_env({})
    got = _probe(env)
    assert got["allocator"] == "tcmalloc"
    assert got["trims"] == 1 and got["before"] - got["after"] > 150, got  # tcmalloc's own release call
    assert _probe({})["allocator"] == "glibc"


def test_unsloth_pads_batches_as_axolotl_collator_does():
    base = {"output_dir": "x", "sequence_len": 500}
    assert pad_multiple({**base, "pad_to_sequence_len": None}) == 64
    assert pad_multiple({**base, "pad_to_multiple_of": 16}) == 16
    assert pad_multiple({**base, "pad_to_sequence_len": True}) == 512
    assert pad_multiple({**base, "pad_to_sequence_len": False, "pad_to_multiple_of": 16}) is None
    assert pad_multiple({**base, "sample_packing": True}) is None, "packed rows go padding-free"
    assert sft_kwargs({**base, "pad_to_multiple_of": 16})["pad_to_multiple_of"] == 16
    assert "pad_to_multiple_of" not in sft_kwargs({**base, "pad_to_sequence_len": False})
