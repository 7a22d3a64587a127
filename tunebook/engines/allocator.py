"""The engine process's memory allocator: gperftools' tcmalloc where the machine has it.

A training step on a CPU allocates and frees activations of a new shape every step (Unsloth's
QLoRA batches are grouped by length, so every batch has another one). glibc's malloc keeps
those freed blocks in its heap, fits the next shapes into them badly, and the process grows;
`heap_trim` hands the free pages back after a step, at the cost of page faults in the next.
tcmalloc keeps size-classed free lists instead. Measured on a 2-core AMD EPYC (avx512_bf16),
one run at a time, each allocator with the trimmer (bench-levers defines the rows; not yet run as a whole):

- smollm2-qlora, 150 steps: glibc 257.2 tok/s at 2,257 MiB peak RSS, tcmalloc 286.0 at 1,876;
- smollm2-lora (packed), 120 steps: glibc 320.6 tok/s at 2,586 MiB, tcmalloc 341.5 at 2,233;
- jemalloc 5.3 (for comparison): QLoRA 249.5 at 1,825, but LoRA 255.5 at 2,244 (0.8x): not used.
- one epoch each in `make compare` (452996c, with the bounded oneDNN cache): QLoRA 285.9 tok/s at
  1,771 MiB, LoRA 356.6 at 2,295, full 288.8 at 4,125 (on glibc, f57d1a2: 243.0 at 2,462, 324.7 at
  2,879, 252.1 at 4,689).

It comes from the distribution (Debian/Ubuntu `libtcmalloc-minimal4`, which `make setup`
installs where it can) and is preloaded into the engine process only, never into tunebook
itself. Where it is missing, the engine runs on glibc with the trimmer, and the run summary
says so. TUNEBOOK_ALLOCATOR=glibc turns it off to measure the lever.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

ENV = "TUNEBOOK_ALLOCATOR"
SONAME = "libtcmalloc_minimal.so.4"
_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_tcmalloc() -> str | None:
    """Path of the tcmalloc shared library, or None. The distribution's directories first
    (what LD_PRELOAD needs is a path), then the linker's cache by name."""
    for d in _DIRS:
        path = Path(d) / SONAME
        if path.exists():
            return str(path)
    name = ctypes.util.find_library("tcmalloc_minimal")
    return name if name and Path(name).is_absolute() else None


def preload_env(environ: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    """(environment to add for the engine, why) - empty when glibc is asked for or tcmalloc is missing."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV, "tcmalloc") == "glibc":
        return {}, f"{ENV}=glibc"
    lib = find_tcmalloc()
    if lib is None:
        return {}, "tcmalloc not found (install libtcmalloc-minimal4): glibc malloc with the heap trimmer"
    present = [p for p in environ.get("LD_PRELOAD", "").split(":") if p]
    env = {"LD_PRELOAD": ":".join([lib, *[p for p in present if p != lib]]),
           # its "large alloc" notices are for leak hunting, not for a training log
           "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": environ.get("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD",
                                                                 str(1 << 40))}
    return env, ("tcmalloc: freed activations of varying shapes are reused instead of growing the heap "
                 "(QLoRA 0.83x the peak RSS, 1.11x the tokens/s; engines/allocator.py)")


def tcmalloc_release():
    """tcmalloc's own call that hands free pages back to the system, or None when this
    process's malloc is not tcmalloc (only tcmalloc exports it): both what the run ran on
    (`in_use`) and what the heap trimmer calls under it come from this one lookup."""
    try:
        release = ctypes.CDLL(None).MallocExtension_ReleaseFreeMemory
    except (OSError, AttributeError):
        return None
    release.argtypes, release.restype = [], None
    return release


def in_use() -> str:
    """Which allocator serves this process's malloc: what the run really ran with."""
    return "glibc" if tcmalloc_release() is None else "tcmalloc"
