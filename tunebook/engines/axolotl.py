"""The Axolotl engine: full, LoRA, QLoRA and DPO through Axolotl's own train path.

Its CPU differences live here: eager attention, no Triton LoRA kernels, tunebook's plugin
(bf16 autocast on CPU, logits only where labels train), in-process data loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tunebook.engines import Setter, schema_capabilities
from tunebook.engines.process import run_worker
from tunebook.machine import Machine
from tunebook.runs import RunDir

if TYPE_CHECKING:
    from tunebook.launch import Launch

NAME = "axolotl"
WORKER = "tunebook.engines.axolotl_worker"
# eager, measured 1.2-1.4x faster than sdpa at 512 tokens (sdpa's CPU flash-attention backward
# was 20% of a LoRA step, `make profile`); the same math, and packed rows stay apart
# (tests/test_cpu_speed_paths.py)
CPU_ATTENTION = "eager"
CPU_PLUGIN = "tunebook.engines.axolotl_plugin.CPUPlugin"
LORA_KERNEL_KEYS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")
capabilities = schema_capabilities


def adapt_cpu(cfg: dict, machine: Machine, set_: Setter) -> None:
    from tunebook.adapt import UNSET

    if cfg.get("adapter") in ("lora", "qlora"):
        for key in LORA_KERNEL_KEYS:
            if cfg.get(key) is not False:
                # Left unset, Axolotl auto-enables Triton LoRA kernels that allocate on "cuda".
                set_(key, False, "Axolotl's LoRA kernels are Triton/CUDA-only")
    plugins = list(cfg.get("plugins") or [])
    if CPU_PLUGIN not in plugins:
        set_("plugins", plugins + [CPU_PLUGIN],
             "tunebook's Axolotl plugin: bf16 autocast on CPU, logits only where labels are trained")
    if cfg.get("sample_packing") and cfg.get("dataset_num_proc") is None and cfg.get("dataset_processes") is None:
        # Axolotl sizes packed epochs five times a run, each through a fresh process pool whose
        # children compile numba again: 12 s of a tiny packed run's start-up; in process, ~1.5 s once
        set_("dataset_num_proc", 1, "packing estimates run in process: no pool per estimate, numba compiled once")
    if cfg.get("dataloader_num_workers") is None:
        set_("dataloader_num_workers", 0, "worker processes only compete for the same cores")
    if cfg.get("dataloader_pin_memory") is not False:
        set_("dataloader_pin_memory", False, "pinned memory needs an accelerator")
    if cfg.get("gpu_memory_limit"):
        set_("gpu_memory_limit", UNSET, "no GPU")


def check(config: dict) -> list:
    """Axolotl honours every key its schema knows; validation already checked them."""
    return []


def launch(run: RunDir, config_path: Path, env: dict[str, str], echo: bool = True,
           resume_from: Path | None = None, processes: "Launch | None" = None) -> dict:
    return run_worker(WORKER, run, config_path, env, echo, resume_from, processes)
