"""Give freed heap memory back to the system when a run's resident memory grows (glibc's
malloc_trim), and leave a steady run alone.

Unsloth's QLoRA recipe trains on padded batches grouped by length, so every step allocates
activations of another shape. glibc keeps the freed blocks in its heap for reuse, the next
shapes fit them badly, and the process grew all epoch: peak RSS 1,430 MiB after 20 steps,
3,495 MiB after 250 (smollm2-qlora v7, 2-core AMD EPYC, 2026-11-24), above LoRA's 2,687.
Measured remedies, same machine (100 QLoRA steps / 60 packed LoRA steps):
- a fixed mmap threshold (MALLOC_MMAP_THRESHOLD_=1 MiB): most of the growth gone, half the
  speed (every large tensor a fresh mmap, zeroed by the kernel);
- malloc_trim(0) after every step: QLoRA's whole epoch peaked at 2,247 MiB at 0.95x its
  speed, but packed LoRA (the same shapes every step: a steady heap it reuses) ran 1.36x
  slower, re-faulting each step the pages the trim had returned;
- a trim when the RSS after a step is GROWTH_MIB above the level the heap settled at (after
  the first step, and after the step that follows each trim): QLoRA 2,214 MiB at 100 steps
  (untrimmed ~2,960), packed LoRA 6 trims in 60 steps at its untrimmed speed (within the
  run-to-run spread). 256 MiB let QLoRA reach 2,466.
TUNEBOOK_MALLOC_TRIM=0 turns it off; elsewhere than glibc it is a no-op. run.json:
timing.malloc_trim (how many trims, the first few with the RSS before and after).
"""

from __future__ import annotations

import ctypes
import os

from tunebook.engines.allocator import tcmalloc_release

GROWTH_MIB = 64


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Trimmer:
    def __init__(self, growth_mib: float = GROWTH_MIB):
        self.growth_mib = growth_mib
        self.level: float | None = None  # RSS after the first step, and after the step that follows a trim
        self.trims: list[dict] = []
        self._trim = _malloc_trim()

    @property
    def enabled(self) -> bool:
        return self._trim is not None

    def after_step(self, step: int) -> None:
        if self._trim is None:
            return
        rss = rss_mib()
        if self.level is None:
            self.level = rss
        elif rss > self.level + self.growth_mib:
            self._trim(0)
            self.level = None  # the next step re-faults what it needs: that is the new level
            self.trims.append({"step": step, "rss_mib": round(rss), "after_mib": round(rss_mib())})

    def summary(self) -> dict:
        return {"enabled": self.enabled, "growth_mib": self.growth_mib, "trims": len(self.trims),
                "first": self.trims[:3]}


def _malloc_trim():
    """The allocator's own call that hands free pages back: gperftools' tcmalloc when the engine
    runs with it preloaded (engines/allocator.py; glibc's malloc_trim would find nothing there to
    give back: its heap is not the one in use), else glibc's."""
    if os.environ.get("TUNEBOOK_MALLOC_TRIM", "1") == "0":
        return None
    release = tcmalloc_release()
    if release is not None:
        return lambda _pad: release()
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim
