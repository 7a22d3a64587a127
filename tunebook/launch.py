"""How the engine process is started: one Python process, or `torchrun` with one process
per device (and per node), the launcher PyTorch ships and Axolotl's multi-GPU path expects.

tunebook never spreads work itself: torchrun starts the ranks, torch.distributed (NCCL on
GPUs, gloo on CPUs) syncs them, the engine's trainer shards the data. The parent process
still owns the run directory; rank 0 alone writes what the parent reads.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import asdict, dataclass

from tunebook.errors import Problem, TunebookError


@dataclass(frozen=True)
class Launch:
    nproc: int = 1  # processes on this node (one per GPU; on a CPU, each gets cores // nproc threads)
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    rdzv_endpoint: str | None = None  # host:port of a c10d rendezvous, instead of master_addr/port

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def command(self, module: str, args: list[str]) -> list[str]:
        """The engine command: `python -m module ...`, or torchrun around it."""
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
                "launcher": "torchrun" if self.distributed else "python"}


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
