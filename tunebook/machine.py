"""What this machine can run, detected once and recorded with every run."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Machine:
    cpu_count: int  # cores this process may use (affinity), not the host's total
    ram_gib: float
    cpu_model: str
    cpu_flags: tuple[str, ...] = field(default=())
    cuda_devices: tuple[str, ...] = field(default=())
    cuda_bf16: bool = False
    torch_version: str = ""
    python: str = platform.python_version()

    @property
    def has_cuda(self) -> bool:
        return bool(self.cuda_devices)

    @property
    def kind(self) -> str:
        """A coarse class for comparing runs: `cpu-2c` or `cuda-1xNVIDIA A100`."""
        if self.has_cuda:
            return f"cuda-{len(self.cuda_devices)}x{self.cuda_devices[0]}"
        return f"cpu-{self.cpu_count}c"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind
        return d


def _cpu_info() -> tuple[str, tuple[str, ...]]:
    model, flags = platform.processor() or platform.machine(), ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2")
                    have = set(line.split(":", 1)[1].split())
                    flags = tuple(f for f in wanted if f in have)
    except OSError:
        pass
    return model, flags


def detect() -> Machine:
    import psutil
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    cuda: tuple[str, ...] = ()
    bf16 = False
    if torch.cuda.is_available():
        cuda = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        bf16 = torch.cuda.is_bf16_supported()
    model, flags = _cpu_info()
    return Machine(
        cpu_count=cores,
        ram_gib=round(psutil.virtual_memory().total / 2**30, 1),
        cpu_model=model,
        cpu_flags=flags,
        cuda_devices=cuda,
        cuda_bf16=bf16,
        torch_version=torch.__version__,
    )
