"""Fit a recipe to the machine it runs on, and say exactly what was changed.

Recipes are written for the hardware they name; the runner, never the recipe file, bends
them to this machine. Each change is recorded in run.json and printed, so a CPU run of a
GPU recipe is never mistaken for the recipe as written.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from typing import Any

from tunebook.machine import Machine

GPU_ONLY_ATTENTION = {"flash_attention_2", "flash_attention_3", "flash_attention", "xformers", "sage", "flex_attention"}
DEPRECATED_ATTENTION_FLAGS = ("flash_attention", "xformers_attention", "sdp_attention", "flex_attention", "sage_attention", "s2_attention")
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
_UNSET = "<unset>"
UNSET = _UNSET  # an engine's adapt_cpu passes it to remove a key
EAGER_FASTER = "eager is 1.15-1.4x faster than sdpa on CPU (make bench-levers)"


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    why: str

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}  ({self.why})"

    def to_dict(self) -> dict:
        return asdict(self)


def _set(cfg: dict, key: str, value: Any, why: str, changes: list[Change]) -> None:
    old = cfg.get(key, _UNSET)
    if old == value:
        return
    if value is _UNSET:
        cfg.pop(key, None)
    else:
        cfg[key] = value
    changes.append(Change(key, old, value, why))


set_key = _set  # for the steps after adaptation that change the config too (the launcher, resolve.py)


def adapt_config(config: dict[str, Any], machine: Machine, engine: str = "axolotl",
                 online: bool = False) -> tuple[dict[str, Any], list[Change]]:
    """Return (adapted copy, changes). Pure: the same input, machine and `online` give the same output."""
    cfg = copy.deepcopy(config)
    changes: list[Change] = []
    if not machine.has_cuda:
        _adapt_cpu(cfg, changes, engine, machine)
    elif not machine.cuda_bf16 and cfg.get("bf16") in (True, "auto"):
        _set(cfg, "bf16", False, "this GPU has no bf16; fp16 mixed precision instead", changes)
        _set(cfg, "fp16", True, "this GPU has no bf16; fp16 mixed precision instead", changes)
    if online:  # TUNEBOOK_ONLINE=1: a recipe's W&B keys are honoured (Axolotl logs to W&B)
        return cfg, changes
    if cfg.get("use_wandb") or cfg.get("wandb_project"):
        for key in [k for k in cfg if k.startswith("wandb_")]:
            _set(cfg, key, _UNSET, "offline run: no W&B (TUNEBOOK_ONLINE=1 keeps the recipe's wandb_* keys)", changes)
    _set(cfg, "use_wandb", False, "offline run: no W&B (TUNEBOOK_ONLINE=1 keeps the recipe's wandb_* keys)", changes)
    return cfg, changes


def _adapt_cpu(cfg: dict, changes: list[Change], engine: str, machine: Machine) -> None:
    """What every engine needs on a CPU; then the engine's own changes (its `adapt_cpu`)."""
    from tunebook.engines import cpu_attention, get_engine

    eng = get_engine(engine)
    attn = cfg.get("attn_implementation")
    cpu_attn = cpu_attention(eng.CPU_ATTENTION)
    if attn in GPU_ONLY_ATTENTION or any(cfg.get(k) for k in DEPRECATED_ATTENTION_FLAGS):
        for key in DEPRECATED_ATTENTION_FLAGS:
            if key in cfg:
                _set(cfg, key, _UNSET, "GPU-only attention flag", changes)
        _set(cfg, "attn_implementation", cpu_attn, f"{attn or 'flash/xformers'} needs CUDA"
             + (f"; {EAGER_FASTER}" if cpu_attn == "eager" else "; sdpa runs on CPU"), changes)
    elif attn is None:
        _set(cfg, "attn_implementation", cpu_attn, "explicit attention so the engine picks no CUDA kernel"
             + (f"; {EAGER_FASTER}" if cpu_attn == "eager" else ""), changes)
    elif attn in ("sdpa", "eager") and attn != cpu_attn:
        # recipes say sdpa for GPUs; on a CPU the engine's measured choice
        _set(cfg, "attn_implementation", cpu_attn, EAGER_FASTER if cpu_attn == "eager" else "TUNEBOOK_CPU_ATTENTION",
             changes)
    _adapt_cpu_precision(cfg, changes, machine)
    if cfg.get("tf32"):
        _set(cfg, "tf32", False, "tf32 is a CUDA feature", changes)
    opt = str(cfg.get("optimizer") or "")
    if opt.startswith("paged_") or "8bit" in opt:
        # torch's fused AdamW has CPU kernels (torch >= 2.4): 7.8x the for-loop AdamW over
        # SmolLM2's weights here, full fine-tuning 1.30x end to end
        _set(cfg, "optimizer", "adamw_torch_fused", f"{opt} needs CUDA; fused AdamW runs on CPU", changes)
    for key in ("deepspeed", "fsdp", "fsdp_config", "fsdp_version"):
        if cfg.get(key):
            _set(cfg, key, _UNSET, "DeepSpeed/FSDP need CUDA GPUs", changes)
    eng.adapt_cpu(cfg, machine, lambda key, value, why: _set(cfg, key, _UNSET if value is UNSET else value,
                                                            why, changes))
    if cfg.get("eval_sample_packing") and not cfg.get("sample_packing"):
        # upstream examples set both; with packing off (by the recipe or above) a packed eval
        # only pays the packing estimate for nothing
        _set(cfg, "eval_sample_packing", False, "follows sample_packing, which is off", changes)


def _adapt_cpu_precision(cfg: dict, changes: list[Change], machine: Machine) -> None:
    """bf16 where the CPU computes it in hardware, fp32 everywhere else; never fp16.

    `bf16: auto` means "bf16 where it is fast": on an AMX or AVX512-BF16 CPU that is bf16
    autocast (2-2.5x the fp32 matmul rate, measured), on an AVX2-only CPU it is fp32, because
    emulated bf16 runs ~80x slower. Axolotl's own `auto` would pick fp16 on any CPU.
    """
    if cfg.get("fp16") not in (None, False):
        _set(cfg, "fp16", False, "fp16 is emulated on CPU (many times slower)", changes)
    wants_bf16 = cfg.get("bf16") in (True, "auto")
    if wants_bf16 and machine.cpu_bf16:
        _set(cfg, "bf16", True, f"this CPU has bf16 matmul in hardware ({machine.matmul_class}): bf16 autocast", changes)
    elif cfg.get("bf16") not in (None, False):
        why = ("this CPU has no bf16 hardware (no AMX/AVX512-BF16): emulated bf16 is ~80x slower than fp32"
               if wants_bf16 else "fp32 as the recipe asks")
        _set(cfg, "bf16", False, why, changes)


def engine_env(machine: Machine, online: bool = False, nproc: int = 1,
               allocator: bool = True) -> tuple[dict[str, str], list[Change]]:
    """Environment for the engine process: offline hubs, every core we were given, and
    OpenMP threads that sleep rather than spin while they wait.

    Spinning threads fight any other process for the same cores: with one busy process
    beside it on 2 cores a LoRA step ran 2.7x slower with the default wait policy and 1.4x
    with OMP_WAIT_POLICY=PASSIVE (README, Performance). A value already in the environment
    wins, so the lever stays measurable.
    """
    env = {} if online else dict(OFFLINE_ENV)
    # TUNEBOOK_THREADS: fewer threads than cores, to measure the lever (`make bench-levers`)
    # several processes on this node (NPROC) share its cores
    threads = os.environ.get("TUNEBOOK_THREADS") or str(max(1, machine.cpu_count // max(1, nproc)))
    # `accelerate launch` (what `axolotl train` uses) sets OMP_NUM_THREADS=1 when it is
    # unset, which runs a CPU step single-threaded.
    env["OMP_NUM_THREADS"] = threads
    env["MKL_NUM_THREADS"] = threads
    env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    # libgomp (torch's OpenMP): an explicit spin count wins over the policy's (PASSIVE: 0)
    env["GOMP_SPINCOUNT"] = os.environ.get("GOMP_SPINCOUNT", "10000")
    # oneDNN keeps a compiled kernel per matmul shape, up to 1024 of them: batches of every length
    # (Unsloth's QLoRA) fill it and the RSS with it; packed runs repeat a few shapes
    env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
    cores = ("every core" if threads == str(machine.cpu_count) else
             f"the cores shared by {nproc} processes" if nproc > 1 and not os.environ.get("TUNEBOOK_THREADS")
             else "TUNEBOOK_THREADS")
    why = {"OMP_NUM_THREADS": cores, "MKL_NUM_THREADS": cores,
           "OMP_WAIT_POLICY": "waiting threads sleep (OpenMP runtimes other than libgomp)",
           "GOMP_SPINCOUNT": "spin ~0.1 ms, then sleep: 1.4x faster when idle; the engine gives up a thread "
                             "while another process keeps a core busy (engines/threads.py)",
           "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "256 matmul kernels kept, not 1024: QLoRA's batches of every length "
                                              "peaked 1876 -> 1685 MiB over 150 steps at the same speed"}
    if allocator:  # training engines (engines/allocator.py); `allocator=False` keeps glibc's malloc
        from tunebook.engines.allocator import preload_env

        preload, reason = preload_env()
        env.update(preload)
        why.update({k: reason for k in preload})
    changes = [Change(f"env.{k}", _UNSET, v, why.get(k, "offline run")) for k, v in env.items()]
    return env, changes
