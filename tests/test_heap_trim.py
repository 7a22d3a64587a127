"""The memory trimmer: freed heap pages really go back to the system when the RSS has grown,
a steady process is left alone, and it can be turned off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import json
from tunebook.engines.heap_trim import Trimmer, rss_mib

t = Trimmer(growth_mib=100)
t.after_step(1)                                        # the level: RSS after the first step
t.after_step(2)                                        # nothing grew: no trim
steady = len(t.trims)
blocks = [bytearray(64 * 1024) for _ in range(4000)]   # 250 MiB of heap blocks (under the mmap threshold)
keep = blocks[-1]                                      # the heap's top stays in use: only a trim returns the rest
del blocks
before = rss_mib()
t.after_step(3)
print(json.dumps({"enabled": t.enabled, "steady": steady, "trims": t.trims, "before": before, "after": rss_mib()}))
"""


def _probe(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TUNEBOOK_MALLOC_TRIM"}
    if env_value is not None:
        env["TUNEBOOK_MALLOC_TRIM"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# The RSS compared below is the probe's own, before and after one call in the same process:
# other processes on a busy machine do not move it (no timing, no peak of a shared resource).


def test_grown_heap_is_trimmed_and_a_steady_one_is_not():
    got = _probe(None)
    assert got["enabled"], "on by default (glibc)"
    assert got["steady"] == 0, "no growth, no trim (a trim costs the next step its page faults)"
    assert [t["step"] for t in got["trims"]] == [3]
    assert got["before"] - got["after"] > 150, got  # 250 MiB freed in the heap's middle, returned in place


def test_trim_off_keeps_the_memory():
    got = _probe("0")
    assert not got["enabled"] and got["trims"] == []
    assert got["before"] - got["after"] < 20, got
