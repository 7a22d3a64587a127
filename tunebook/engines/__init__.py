"""Engines launch a real trainer on a resolved config; tunebook never trains by itself.

An engine is a module of `tunebook/engines/` that satisfies `Engine`. Everything that differs
between engines lives in its module: which CPU attention it runs, what it changes on a CPU
(`adapt_cpu`), which keys it cannot honour (`check`), and how its process is started
(`launch`). `adapt.py` keeps only what every engine needs; adding an engine (say TRL alone)
is a new module here and its name in ENGINES.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, cast

if TYPE_CHECKING:
    from tunebook.errors import Problem
    from tunebook.launch import Launch
    from tunebook.machine import Machine
    from tunebook.runs import RunDir

ENGINES = ("axolotl", "unsloth")

# set_(key, value, why): change one key of the config being adapted and say why (adapt.Change)
Setter = Callable[[str, Any, str], None]


class Engine(Protocol):
    NAME: str
    CPU_ATTENTION: str  # attention implementation on a CPU when the recipe names none (or a GPU-only one)

    def capabilities(self, machine: "Machine") -> tuple[dict, dict]:
        """What Axolotl's capability-aware validators assume (recipes are Axolotl configs)."""

    def adapt_cpu(self, cfg: dict[str, Any], machine: "Machine", set_: Setter) -> None:
        """This engine's own CPU changes, each through `set_` so it is recorded."""

    def check(self, config: dict[str, Any]) -> list["Problem"]:
        """Keys this engine cannot honour (source and line are filled in by `resolve`)."""

    def launch(self, run: "RunDir", config_path: Path, env: dict[str, str], echo: bool = True,
               resume_from: Path | None = None, processes: "Launch | None" = None) -> dict:
        """Train in a child process (under torchrun for several; from a trainer checkpoint when
        resuming); return rank 0's metrics."""


def get_engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return cast(Engine, importlib.import_module(f"tunebook.engines.{name}"))


def cpu_attention(default: str) -> str:
    """An engine's CPU attention; TUNEBOOK_CPU_ATTENTION=sdpa|eager overrides it to measure the lever."""
    import os

    return os.environ.get("TUNEBOOK_CPU_ATTENTION") or default


def schema_capabilities(machine: "Machine") -> tuple[dict, dict]:
    """The capability dicts Axolotl's validators take. Every engine's recipes are Axolotl configs,
    so this is every engine's `capabilities`; on CUDA, Axolotl measures them itself."""
    import torch

    if machine.has_cuda and torch.cuda.is_available():
        from axolotl.cli.config import gpu_capabilities

        return gpu_capabilities()
    if machine.has_cuda:  # a GPU node planned from here (`make show ... ON=cuda`): a bf16 datacenter GPU
        return ({"bf16": machine.cuda_bf16, "fp8": False, "tf32": True, "n_gpu": len(machine.cuda_devices),
                 "compute_capability": "sm_90"}, {"torch_version": torch.__version__.split("+")[0]})
    caps = {"bf16": machine.cpu_bf16, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": None}
    return caps, {"torch_version": torch.__version__.split("+")[0]}
