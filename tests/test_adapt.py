"""Machine adaptation: what a CPU run changes, and that it says so."""

from __future__ import annotations

import copy

from tunebook.adapt import LORA_KERNEL_KEYS, adapt_config, engine_env
from tunebook.machine import Machine

CPU = Machine(cpu_count=2, ram_gib=24, cpu_model="test cpu")
GPU = Machine(cpu_count=8, ram_gib=64, cpu_model="test cpu", cuda_devices=("NVIDIA A100",), cuda_bf16=True)
OLD_GPU = Machine(cpu_count=8, ram_gib=64, cpu_model="test cpu", cuda_devices=("Tesla T4",), cuda_bf16=False)

GPU_RECIPE = {
    "adapter": "qlora", "load_in_4bit": True, "bf16": "auto", "tf32": True,
    "attn_implementation": "flash_attention_2", "optimizer": "paged_adamw_8bit",
    "deepspeed": "deepspeed_configs/zero2.json", "use_wandb": True, "wandb_project": "x",
}


def test_cpu_adapts_every_gpu_only_setting_and_records_why():
    before = copy.deepcopy(GPU_RECIPE)
    cfg, changes = adapt_config(GPU_RECIPE, CPU)
    assert GPU_RECIPE == before, "adapt must not edit the recipe it was given"
    assert all(cfg[k] is False for k in LORA_KERNEL_KEYS)
    assert cfg["attn_implementation"] == "sdpa"
    assert cfg["bf16"] is False and cfg["tf32"] is False
    assert cfg["optimizer"] == "adamw_torch"
    assert "deepspeed" not in cfg and "wandb_project" not in cfg and cfg["use_wandb"] is False
    assert cfg["dataloader_num_workers"] == 0
    changed = {c.key: c for c in changes}
    assert changed["bf16"].old == "auto" and changed["bf16"].new is False and changed["bf16"].why
    assert changed["optimizer"].old == "paged_adamw_8bit"
    assert set(LORA_KERNEL_KEYS) <= set(changed)


def test_cpu_leaves_a_cpu_ready_recipe_alone_except_pinning():
    ready = {"adapter": "lora", **{k: False for k in LORA_KERNEL_KEYS}, "attn_implementation": "sdpa",
             "bf16": False, "fp16": False, "optimizer": "adamw_torch", "use_wandb": False,
             "dataloader_num_workers": 0, "dataloader_pin_memory": False}
    cfg, changes = adapt_config(ready, CPU)
    assert cfg == ready and changes == []


def test_gpu_keeps_gpu_features():
    cfg, changes = adapt_config(GPU_RECIPE, GPU)
    assert cfg["attn_implementation"] == "flash_attention_2"
    assert cfg["optimizer"] == "paged_adamw_8bit" and cfg["bf16"] == "auto"
    assert not any(k in cfg for k in LORA_KERNEL_KEYS)
    assert {c.key for c in changes} == {"wandb_project", "use_wandb"}


def test_gpu_without_bf16_falls_back_to_fp16():
    cfg, changes = adapt_config(GPU_RECIPE, OLD_GPU)
    assert cfg["bf16"] is False and cfg["fp16"] is True


def test_engine_env_is_offline_and_uses_every_core():
    env, changes = engine_env(CPU)
    assert env["HF_HUB_OFFLINE"] == "1" and env["OMP_NUM_THREADS"] == "2"
    assert {c.key for c in changes} >= {"env.HF_HUB_OFFLINE", "env.OMP_NUM_THREADS"}
    env, _ = engine_env(CPU, online=True)
    assert "HF_HUB_OFFLINE" not in env and env["OMP_NUM_THREADS"] == "2"
