"""What both engine processes do the same way: threads, the step clock, the metrics they
hand back. Each worker is then only its engine's own calls."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any


def begin() -> None:
    """Every core tunebook was given (OMP_NUM_THREADS, set by adapt.engine_env) and the step
    clock. Import torch only after the engine's own first import (Unsloth patches on import)."""
    import torch

    from tunebook.engines import timing

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    timing.install()


def count_linear4bit(model) -> int:
    """How many layers really are bitsandbytes 4-bit: the proof that QLoRA was QLoRA."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def common_metrics(t0: float, args, model) -> dict[str, Any]:
    from tunebook.engines import timing

    return {
        "time_to_first_step_s": timing.time_to_first_step(t0),
        "threads": timing.thread_use(),
        **timing.token_counts(),
        "precision": timing.precision(args, model),
        "linear4bit_modules": count_linear4bit(model),
        "nonfinite_loss": dict(timing.NONFINITE) or None,
        "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "total_params": int(sum(p.numel() for p in model.parameters())),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    from tunebook.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(metrics, default=float))
