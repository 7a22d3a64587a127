"""run.json's peak RSS is the training process's own, whoever launched it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and the inherited ru_maxrss are Linux's")
def test_a_workers_peak_is_its_own_not_its_launchers():
    """A worker started by a process that had grown large (`make compare`'s, just after it
    evaluated a model) reports its own peak. Linux hands the launcher's peak to the child's
    ru_maxrss across vfork + exec (shown here with 768 MiB of ballast in this process), which is
    what run.json carried for LoRA and QLoRA in a `make compare` at 8e33260."""
    code = ("import json, resource; from tunebook.engines.worker import peak_rss_mib; "
            "print(json.dumps([peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))")
    ballast = bytearray(768 * 2**20)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))  # every page written: resident
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    finally:
        del ballast
    own, inherited = json.loads(out.stdout)
    assert inherited >= 768  # the launcher's peak, as getrusage reports it in the child
    assert 0 < own < 256  # an interpreter and the worker module: tens of MiB
