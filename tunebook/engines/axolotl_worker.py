"""The engine process: Axolotl's own train path, run in process so we keep its trainer.

`python -m axolotl.cli.train CONFIG` does the same three calls but drops the trainer, and
with it the per-step log history tunebook records. Runs as its own process so that a
crash, an OOM kill or Ctrl-C leaves the parent able to mark the run.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def main(config_path: str, metrics_path: str) -> int:
    t0 = time.time()
    from tunebook.quiet import quiet_imports

    quiet_imports()
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)

    from tunebook.engines import timing

    timing.install()
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets, load_preference_datasets
    from axolotl.train import train
    cfg = load_cfg(config_path)
    cli_args = TrainerCliArgs()
    t_data = time.time()
    if cfg.rl:
        dataset_meta = load_preference_datasets(cfg=cfg, cli_args=cli_args)
    else:
        dataset_meta = load_datasets(cfg=cfg, cli_args=cli_args)

    t_train = time.time()
    model, _tokenizer, trainer = train(cfg=cfg, dataset_meta=dataset_meta)
    t_end = time.time()

    state = trainer.state
    tokens = getattr(state, "tokens", None) or {}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    metrics = {
        "time_to_first_step_s": timing.time_to_first_step(t0),
        "threads": timing.thread_use(),
        **timing.token_counts(),
        "precision": timing.precision(trainer.args, model),
        "linear4bit_modules": _count_linear4bit(model),
        "log_history": state.log_history,
        "global_step": state.global_step,
        "tokens_total": int(tokens["total"]) if "total" in tokens else None,
        "tokens_trainable": int(tokens["trainable"]) if "trainable" in tokens else None,
        "trainable_params": int(trainable),
        "total_params": int(total),
        "timing": {
            "startup_s": round(t_data - t0, 2),
            "data_s": round(t_train - t_data, 2),
            "train_s": round(t_end - t_train, 2),
        },
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    from tunebook.atomic import atomic_write_text

    atomic_write_text(Path(metrics_path), json.dumps(metrics, default=float))
    return 0


def _count_linear4bit(model) -> int:
    """How many layers really are bitsandbytes 4-bit: the proof that QLoRA was QLoRA."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
