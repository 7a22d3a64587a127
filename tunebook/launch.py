"""How the engine process is started: one Python process, `torchrun` with one process per
device (and per node), the launcher PyTorch ships and Axolotl's multi-GPU path expects, or
Ray Train's TorchTrainer on a Ray cluster (Axolotl's `use_ray`, or RAY_ADDRESS).

tunebook never spreads work itself: torchrun starts the ranks, torch.distributed (NCCL on
GPUs, gloo on CPUs) syncs them, the engine's trainer shards the data. The parent process
still owns the run directory; rank 0 alone writes what the parent reads.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass, replace

from tunebook.adapt import UNSET
from tunebook.errors import Problem, TunebookError


@dataclass(frozen=True)
class Launch:
    nproc: int = 1  # processes on this node (one per GPU; on a CPU, each gets cores // nproc threads)
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    rdzv_endpoint: str | None = None  # host:port of a c10d rendezvous, instead of master_addr/port
    ray: bool = False  # Ray Train starts `nproc` workers wherever the cluster has room (nnodes unused)
    ray_address: str | None = None  # an existing cluster (RAY_ADDRESS); None starts a local one
    ray_gpu: bool = False  # one GPU per worker (Axolotl's default resources_per_worker)
    ray_resources: dict | None = None  # the recipe's resources_per_worker, when it sets them

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def command(self, module: str, args: list[str]) -> list[str]:
        """The engine command: `python -m module ...`, or torchrun around it."""
        if self.ray:
            return [sys.executable, "-m", "tunebook.engines.ray_launch", f"--workers={self.nproc}",
                    *([f"--address={self.ray_address}"] if self.ray_address else []),
                    *(["--gpu"] if self.ray_gpu else []),
                    *([f"--resources={json.dumps(self.ray_resources)}"] if self.ray_resources else []),
                    "--", module, *args]
        if not self.distributed:
            return [sys.executable, "-m", module, *args]
        run = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={self.nproc}",
               f"--nnodes={self.nnodes}"]
        if self.rdzv_endpoint:
            run += ["--rdzv_backend=c10d", f"--rdzv_endpoint={self.rdzv_endpoint}"]
        else:
            run += [f"--node_rank={self.node_rank}", f"--master_addr={self.master_addr}",
                    f"--master_port={self.master_port}"]
        return [*run, "-m", module, *args]

    def shell(self, module: str, args: list[str]) -> str:
        return " ".join(shlex.quote(a) for a in self.command(module, args))

    def to_dict(self) -> dict:
        return {**asdict(self), "world_size": self.world_size,
                "launcher": "ray" if self.ray else "torchrun" if self.distributed else "python"}


def from_env(nproc: int | str | None = None) -> Launch:
    """NPROC (or --nproc), and for several nodes the variables torchrun users know:
    NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, or RDZV_ENDPOINT."""
    def number(name: str, raw, default: int, low: int = 1) -> int:
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = low - 1
        if value < low:
            raise TunebookError([Problem(name, "", f"must be an integer >= {low}, got {raw!r}")])
        return value

    env = os.environ
    launch = Launch(
        ray=bool(env.get("RAY_ADDRESS")), ray_address=env.get("RAY_ADDRESS") or None,
        nproc=number("NPROC", nproc if nproc is not None else env.get("NPROC"), 1),
        nnodes=number("NNODES", env.get("NNODES"), 1),
        node_rank=number("NODE_RANK", env.get("NODE_RANK"), 0, low=0),
        master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=number("MASTER_PORT", env.get("MASTER_PORT"), 29500),
        rdzv_endpoint=env.get("RDZV_ENDPOINT") or None,
    )
    if launch.node_rank >= launch.nnodes:
        raise TunebookError([Problem("NODE_RANK", "", f"{launch.node_rank} is not below NNODES={launch.nnodes}")])
    return launch


RAY_KEYS = ("use_ray", "ray_num_workers", "ray_run_name", "resources_per_worker")


def for_recipe(launch: Launch, cfg: dict, has_cuda: bool, set_key) -> Launch:
    """Axolotl's Ray keys decide the launcher: `use_ray: true` (or RAY_ADDRESS) starts
    `ray_num_workers` workers (NPROC, when given, wins) through Ray Train. The keys leave the
    engine's config: each worker is started by tunebook and runs Axolotl's train path in
    one rank of an ordinary distributed run (with `use_ray` left on, Axolotl would skip its
    dtype and batch-size resolution, deferred to a worker that is already this one)."""
    if not (cfg.get("use_ray") or launch.ray):
        return launch
    workers = launch.nproc if launch.nproc > 1 else int(cfg.get("ray_num_workers") or 1)
    resources = cfg.get("resources_per_worker") or None
    why = f"tunebook starts the {workers} Ray Train worker(s) itself (launch: ray)"
    for key in RAY_KEYS:
        if key in cfg:
            set_key(key, UNSET, why)
    return replace(launch, ray=True, nproc=workers, nnodes=1, node_rank=0, ray_gpu=has_cuda,
                   ray_resources=resources if has_cuda or "GPU" not in (resources or {}) else None)
