"""The engine's workers started by Ray Train instead of torchrun: a recipe's `use_ray` (Axolotl's
key) or RAY_ADDRESS (a cluster someone runs).

Ray Train's TorchTrainer places the workers on the cluster, sets RANK / WORLD_SIZE /
MASTER_ADDR for each and opens the process group (gloo on CPUs, NCCL on GPUs); every worker
then runs the same engine worker torchrun would start, with the same config. Axolotl's own
`axolotl train` Ray path cannot be used as is: it asks Ray for a GPU per worker whatever the
recipe says (`use_gpu=True` in `axolotl/cli/train.py`), so on a CPU cluster its workers are
never placed. Ray workers start in a Ray session folder; each goes back to the folder the
run was started from, so the repo and `runs/` must be at the same path on every node
(a shared filesystem), as Axolotl's Ray integration also assumes for `output_dir`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

# what tunebook's parent set for the engine (offline hubs, thread policy, ...): a Ray cluster
# started elsewhere does not inherit this process's environment, so it travels with the job
PASSED_ENV_PREFIXES = ("HF_", "TRANSFORMERS_", "TUNEBOOK_", "WANDB_", "AXOLOTL_", "GOMP_", "OMP_WAIT", "TOKENIZERS_",
                       "DO_NOT_TRACK", "PYTHONUNBUFFERED", "ACCELERATE_", "MLFLOW_", "TENSORBOARD_")


def run_engine_worker(config: dict) -> None:
    """One Ray Train worker: the engine worker's main, in the run's folder."""
    os.chdir(config["cwd"])
    os.environ["TUNEBOOK_RAY_WORKER"] = "1"
    rc = importlib.import_module(config["module"]).main(*config["args"])
    if rc:
        raise RuntimeError(f"engine worker {config['module']} exited with code {rc}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tunebook.engines.ray_launch")
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--address", default=None, help="an existing Ray cluster; without it a local one is started")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--resources", default=None, help="JSON resources per worker (default: 1 GPU, or cores/workers CPUs)")
    p.add_argument("module")
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every rank's lines, as torchrun shows them
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES)}
    if a.address:
        ray.init(address=a.address, runtime_env={"env_vars": env})
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, a.workers), include_dashboard=False,
                 object_store_memory=256 * 1024 * 1024, runtime_env={"env_vars": env})
    if a.resources:
        resources = json.loads(a.resources)
    elif a.gpu:
        resources = {"GPU": 1}
    else:
        resources = {"CPU": max(1, (os.cpu_count() or 1) // a.workers)}
    run_dir = os.path.dirname(os.path.abspath(a.args[1])) if len(a.args) > 1 else os.getcwd()
    trainer = TorchTrainer(
        run_engine_worker,
        train_loop_config={"module": a.module, "args": a.args, "cwd": os.getcwd()},
        scaling_config=ScalingConfig(num_workers=a.workers, use_gpu=a.gpu, resources_per_worker=resources),
        run_config=RunConfig(name="ray", storage_path=run_dir),
    )
    print(f"tunebook: Ray Train, {a.workers} workers x {resources} on "
          f"{a.address or 'a local Ray cluster'}", flush=True)
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps the worker's exception: the cause is the worker's, not the wrapper's
        print(str(e), flush=True)
        return 1
    finally:
        ray.shutdown()
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
