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
    def cpu_bf16(self) -> bool:
        """bf16 matmul in hardware. Without it (AVX2 only) torch emulates bf16 at ~1/80 of
        the fp32 rate, so nothing may pick bf16 there."""
        return "amx_bf16" in self.cpu_flags or "avx512_bf16" in self.cpu_flags

    @property
    def matmul_class(self) -> str:
        """What sets a CPU's matmul speed more than its core count: amx > avx512bf16 > avx512 > avx2."""
        for flag, name in (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"), ("avx2", "avx2")):
            if flag in self.cpu_flags:
                return name
        return "basic"

    @property
    def kind(self) -> str:
        """The class runs are compared within: `cpu-2c-amx`, `cpu-2c-avx2` or `cuda-1xNVIDIA A100`.

        Core count alone put a 2-core AMX box and a 2-core AVX2 box in one class while their
        speeds differ 2-3x, so the matmul capability is part of the class.
        """
        if self.has_cuda:
            return f"cuda-{len(self.cuda_devices)}x{self.cuda_devices[0]}"
        return f"cpu-{self.cpu_count}c-{self.matmul_class}"

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
