"""Time to the first optimizer step, measured inside the engine process.

Both engines train through transformers' Trainer; wrapping `Trainer.training_step` once in
the worker (our own process) catches the first step whatever subclass the engine builds.
"""

from __future__ import annotations

import time

FIRST_STEP: dict[str, float] = {}


def install() -> None:
    import transformers

    original = transformers.Trainer.training_step
    if getattr(original, "_tunebook_timed", False):
        return

    def training_step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        FIRST_STEP.setdefault("at", time.time())
        return out

    training_step._tunebook_timed = True
    transformers.Trainer.training_step = training_step


def time_to_first_step(since: float) -> float | None:
    """Seconds from `since` (the worker's start) to the end of the first training step."""
    return round(FIRST_STEP["at"] - since, 2) if "at" in FIRST_STEP else None
