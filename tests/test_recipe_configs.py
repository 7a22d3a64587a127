"""Every shipped recipe, in milliseconds: it resolves on a CPU with and without bf16 hardware,
its engine accepts every key, and the engine's own argument builders take the result.

The training matrix (tests/test_recipe_matrix.py) proves the same recipes train; this file
is what catches a broken recipe in seconds, for every recipe on every `make test`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunebook.engines import get_engine
from tunebook.lock import discover
from tunebook.machine import Machine
from tunebook.recipe import load_recipe
from tunebook.resolve import resolve

RECIPES = discover(Path("recipes"))
AVX2 = Machine(cpu_count=2, ram_gib=24, cpu_model="test cpu", cpu_flags=("avx2",))
AMX = Machine(cpu_count=2, ram_gib=24, cpu_model="test cpu", cpu_flags=("avx512f", "avx512_bf16", "amx_bf16", "avx2"))


@pytest.mark.parametrize("machine", [AVX2, AMX], ids=["avx2", "amx"])
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.as_posix())
def test_recipe_resolves_and_its_engine_takes_it(path, machine):
    r = resolve(path, machine=machine, check_inputs=False)  # base models of other families are hub ids
    meta = load_recipe(path).meta
    assert r.meta == meta and r.as_written and r.engine == meta.engine
    assert get_engine(r.engine).check(r.adapted) == []
    assert r.adapted["bf16"] is machine.cpu_bf16 or (r.adapted["bf16"] is False and not r.config.get("bf16"))
    assert not r.adapted.get("fp16") and not r.adapted.get("tf32")
    for c in r.changes:  # every change is said, with a reason, and is what the config now holds
        assert c.why and (r.adapted.get(c.key) == c.new or c.new == "<unset>" and c.key not in r.adapted)
    if r.engine == "unsloth":
        from trl import SFTConfig

        from tunebook.engines import unsloth as U

        assert U.model_kwargs(r.adapted)["load_in_4bit"] == bool(r.config.get("load_in_4bit"))
        assert (U.peft_kwargs(r.adapted) is None) == (not r.config.get("adapter"))
        assert set(U.sft_kwargs(r.adapted)) <= set(SFTConfig.__dataclass_fields__)
    else:
        from tunebook.engines.axolotl import CPU_PLUGIN

        assert CPU_PLUGIN in r.adapted["plugins"] and r.adapted["attn_implementation"] == "eager"
