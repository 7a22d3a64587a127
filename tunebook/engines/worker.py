"""What both engine processes do the same way: threads, the step clock, the metrics they
hand back. Each worker is then only its engine's own calls."""

from __future__ import annotations

import json
import os
import resource
import sys
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
    join_cpu_processes()
    timing.install()


def freeze_imports() -> None:
    """Move what the imports built (torch, transformers, the engine: a few million objects) out
    of the garbage collector's sight. Axolotl calls gc.collect() after loading the model and at
    every checkpoint, and each full collection walked them all: 0.33 s a call, 2 s of a 2-step
    run here. Objects made later (model, data, optimizer) are collected as before."""
    import gc

    gc.collect()
    gc.freeze()


def exit_now(rc: int) -> None:
    """Leave without the interpreter's teardown. With torch, transformers and the trained
    model loaded, finalising modules took 1.8 s of every run here (measured: atexit handlers
    0.02 s, the rest in C with no Python frame), and tests launch dozens of runs. Everything
    the parent reads is written and closed by then; atexit handlers (logging, tqdm) still run."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(rc)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_rank_zero() -> bool:
    """Only rank 0 writes what the parent reads (metrics); every rank trains."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def join_cpu_processes() -> None:
    """Under torchrun on a CPU, make accelerate see the other processes. Its PartialState
    takes MULTI_CPU (gloo) only when created with cpu=True; created bare (as Axolotl and
    transformers do) it says DistributedType.NO, one process, and each rank trains alone on
    the whole data while torch.distributed holds a world of 2 (measured: the same loss curve
    as one process, dataloader length unsharded). transformers' TrainingArguments resets that
    state and makes its own from `use_cpu`, which Axolotl sets after the arguments are built
    (too late), or from ACCELERATE_USE_CPU: so both, the state for Axolotl's data loading and
    the variable for the trainer."""
    import torch

    if world_size() > 1 and not torch.cuda.is_available():
        from accelerate import PartialState

        os.environ["ACCELERATE_USE_CPU"] = "true"
        state = PartialState(cpu=True)
        assert state.num_processes == world_size(), (state.distributed_type, state.num_processes)
        BACKEND["backend"] = state.backend


def count_linear4bit(model) -> int:
    """How many layers really are bitsandbytes 4-bit: the proof that QLoRA was QLoRA."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def peak_rss_mib() -> float:
    """This process's own peak resident set, in MiB.

    Not getrusage's ru_maxrss alone: Linux carries the launching process's peak into it across
    (v)fork + exec, and Python's subprocess spawns with vfork, so a worker started by a `make
    compare` that had just evaluated a model reported that parent's peak as its own (LoRA 3045
    and QLoRA 3059 MiB at 8e33260, against 2295 and 1771 when the parent had held less).
    /proc/self/status VmHWM is the high-water mark of this process's own address space, which
    exec made new; ru_maxrss is the fallback where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def common_metrics(t0: float, args, model) -> dict[str, Any]:
    from tunebook.engines import allocator, timing

    return {
        "time_to_first_step_s": timing.time_to_first_step(t0),
        "threads": timing.thread_use(),
        **timing.token_counts(),
        "precision": timing.precision(args, model),
        "optimizer": dict(timing.OPTIMIZER) or None,
        "gradient_checkpointing": timing.CHECKPOINTING.get("on"),
        # what the model really ran, whatever the recipe asked (an engine may pick its own)
        "attention": getattr(getattr(model, "config", None), "_attn_implementation", None),
        "linear4bit_modules": count_linear4bit(model),
        "nonfinite_loss": dict(timing.NONFINITE) or None,
        "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "total_params": int(sum(p.numel() for p in model.parameters())),
        "peak_rss_mib": peak_rss_mib(),
        "malloc_trim": timing.TRIM["trimmer"].summary() if "trimmer" in timing.TRIM else None,
        "allocator": allocator.in_use(),  # tcmalloc when preloaded (engines/allocator.py), else glibc
        "distributed": distributed(),
    }


BACKEND: dict[str, Any] = {}  # what torch.distributed ran on, seen while the group was up


def distributed() -> dict[str, Any]:
    """World size and backend as this rank saw them (the engine may have torn the process
    group down by the time the run ends, so the backend is noted while it is up)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        BACKEND["backend"] = dist.get_backend()
    return {"world_size": world_size(), "backend": BACKEND.get("backend"),
            "nodes": int(os.environ.get("GROUP_WORLD_SIZE") or 1) if world_size() > 1 else 1}


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    from tunebook.atomic import atomic_write_text

    rank = int(os.environ.get("RANK", "0") or 0)
    if world_size() > 1:  # every rank's own peak, for the parent to gather once all have exited
        atomic_write_text(Path(f"{path}.rank{rank}"), json.dumps({"rank": rank, "peak_rss_mib": metrics.get(
            "peak_rss_mib")}))
    if is_rank_zero():
        atomic_write_text(Path(path), json.dumps(metrics, default=float))
