"""The engine process: Axolotl's own train path, run in process so we keep its trainer.

`python -m axolotl.cli.train CONFIG` does the same three calls but drops the trainer, and
with it the per-step log history tunebook records. Runs as its own process so that a
crash, an OOM kill or Ctrl-C leaves the parent able to mark the run.
"""

from __future__ import annotations

import os
import sys
import time


def main(config_path: str, metrics_path: str, resume_from: str | None = None) -> int:
    t0 = time.time()
    from tunebook.fast_start import process_start

    process_start()
    from tunebook.engines import worker

    worker.begin()
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets, load_preference_datasets
    from axolotl.train import train

    from tunebook.fast_start import save_without_a_pool

    save_without_a_pool()
    worker.freeze_imports()
    cfg = load_cfg(config_path)
    import torch

    if (cfg.world_size or 1) > 1 and not torch.cuda.is_available():
        # Axolotl gives each rank device_map {"": LOCAL_RANK} (utils/config normalize_config), an
        # accelerator index: on a CPU transformers' loader fails with "Cannot access accelerator device"
        cfg.device_map = "cpu"
    if os.environ.get("TUNEBOOK_RAY_WORKER"):
        # set after load_cfg resolved dtype and batch sizes here, on the worker: inside train()
        # it keeps Axolotl off the main-thread-only signal handler and hands the trainer to Ray
        cfg.use_ray = True
    if resume_from:  # Axolotl's own key: the trainer restores weights, optimizer, RNG and data position
        cfg.resume_from_checkpoint = resume_from
    cli_args = TrainerCliArgs()
    from tunebook.engines import packed_order

    # before the data: Axolotl sizes the packed epoch while it loads it
    packed_order.install(cfg.seed if cfg.seed is not None else 42)  # packed batches survive a resume
    t_data = time.time()
    if cfg.rl:
        dataset_meta = load_preference_datasets(cfg=cfg, cli_args=cli_args)
    else:
        dataset_meta = load_datasets(cfg=cfg, cli_args=cli_args)

    # Axolotl seeds nothing before it builds the model (the Trainer seeds later), so LoRA's
    # random init followed whatever the data preparation drew: a first run (which tokenizes)
    # and a second (which reads the prepared cache) started from different adapters.
    from transformers import set_seed

    set_seed(cfg.seed if cfg.seed is not None else 42)
    t_train = time.time()
    model, _tokenizer, trainer = train(cfg=cfg, dataset_meta=dataset_meta)
    t_end = time.time()

    state = trainer.state
    tokens = getattr(state, "tokens", None) or {}
    metrics = {
        **worker.common_metrics(t0, trainer.args, model),
        "log_history": state.log_history,
        "global_step": state.global_step,
        "tokens_total": int(tokens["total"]) if "total" in tokens else None,
        "tokens_trainable": int(tokens["trainable"]) if "trainable" in tokens else None,
        "timing": {
            "startup_s": round(t_data - t0, 2),
            "data_s": round(t_train - t_data, 2),
            "train_s": round(t_end - t_train, 2),
        },
    }
    worker.write_metrics(metrics_path, metrics)
    return 0


if __name__ == "__main__":
    from tunebook.engines.worker import exit_now

    exit_now(main(*sys.argv[1:4]))
