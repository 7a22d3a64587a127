"""Machine adaptation: what a CPU run changes, and that it says so."""

from __future__ import annotations

import copy

from tunebook.adapt import adapt_config, engine_env
from tunebook.engines.axolotl import CPU_PLUGIN, LORA_KERNEL_KEYS
from tunebook.machine import Machine

CPU = Machine(cpu_count=2, ram_gib=24, cpu_model="test cpu", cpu_flags=("avx2",))
AVX512_BF16 = Machine(cpu_count=2, ram_gib=24, cpu_model="test cpu", cpu_flags=("avx512f", "avx512_bf16", "avx2"))
AMX = Machine(cpu_count=2, ram_gib=24, cpu_model="test cpu", cpu_flags=("avx512f", "avx512_bf16", "amx_bf16", "avx2"))
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
    assert cfg["attn_implementation"] == "eager"
    assert cfg["bf16"] is False and cfg["tf32"] is False
    assert cfg["optimizer"] == "adamw_torch_fused"
    assert "deepspeed" not in cfg and "wandb_project" not in cfg and cfg["use_wandb"] is False
    assert cfg["dataloader_num_workers"] == 0
    changed = {c.key: c for c in changes}
    assert changed["bf16"].old == "auto" and changed["bf16"].new is False and changed["bf16"].why
    assert changed["optimizer"].old == "paged_adamw_8bit"
    assert set(LORA_KERNEL_KEYS) <= set(changed)


def test_cpu_leaves_a_cpu_ready_recipe_alone_except_pinning():
    ready = {"adapter": "lora", **{k: False for k in LORA_KERNEL_KEYS}, "attn_implementation": "eager",
             "bf16": False, "fp16": False, "optimizer": "adamw_torch", "use_wandb": False,
             "dataloader_num_workers": 0, "dataloader_pin_memory": False, "plugins": [CPU_PLUGIN]}
    cfg, changes = adapt_config(ready, CPU)
    assert cfg == ready and changes == []


def test_machine_class_names_the_matmul_capability():
    assert (CPU.kind, AVX512_BF16.kind, AMX.kind) == ("cpu-2c-avx2", "cpu-2c-avx512bf16", "cpu-2c-amx")
    assert not CPU.cpu_bf16 and AVX512_BF16.cpu_bf16 and AMX.cpu_bf16


def test_bf16_only_where_the_cpu_has_it_in_hardware():
    for bf16 in (True, "auto"):
        recipe = {"adapter": "lora", "bf16": bf16, "fp16": True}
        for machine in (AVX512_BF16, AMX):
            cfg, changes = adapt_config(recipe, machine)
            assert cfg["bf16"] is True and cfg["fp16"] is False
            assert CPU_PLUGIN in cfg["plugins"], "bf16 on CPU needs the plugin's use_cpu"
        cfg, changes = adapt_config(recipe, CPU)
        assert cfg["bf16"] is False and cfg["fp16"] is False
        assert "no bf16 hardware" in next(c.why for c in changes if c.key == "bf16")
    # a recipe that asks for fp32 keeps it, even where bf16 would be faster
    cfg, _ = adapt_config({"adapter": "lora", "bf16": False}, AMX)
    assert cfg["bf16"] is False


def test_unsloth_never_runs_emulated_bf16():
    cfg, _ = adapt_config({"adapter": "qlora", "load_in_4bit": True, "bf16": "auto"}, CPU, engine="unsloth")
    assert cfg["bf16"] is False
    cfg, _ = adapt_config({"adapter": "qlora", "load_in_4bit": True}, CPU, engine="unsloth")
    assert cfg["bf16"] is False, "unset bf16 lets Unsloth pick bf16 itself, emulated on AVX2"
    cfg, _ = adapt_config({"adapter": "qlora", "load_in_4bit": True, "bf16": "auto"}, AMX, engine="unsloth")
    assert cfg["bf16"] is True
    from tunebook.engines.unsloth import model_kwargs
    assert model_kwargs({"base_model": "m", **adapt_config({"bf16": "auto"}, CPU, engine="unsloth")[0]})["dtype"] == "float32"


def test_packing_stays_on_for_both_engines_on_cpu():
    cfg, changes = adapt_config({"adapter": "lora", "sample_packing": True}, CPU)
    assert cfg["sample_packing"] is True and "sample_packing" not in {c.key for c in changes}
    # Unsloth's CPU backend clears it; its worker restores it (tests/test_unsloth_packing.py)
    cfg, changes = adapt_config({"adapter": "qlora", "load_in_4bit": True, "sample_packing": True}, CPU, engine="unsloth")
    assert cfg["sample_packing"] is True and "sample_packing" not in {c.key for c in changes}


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
    assert env["OMP_WAIT_POLICY"] in ("PASSIVE", __import__("os").environ.get("OMP_WAIT_POLICY"))
    assert {c.key for c in changes} >= {"env.HF_HUB_OFFLINE", "env.OMP_NUM_THREADS"}
    env, _ = engine_env(CPU, online=True)
    assert "HF_HUB_OFFLINE" not in env and env["OMP_NUM_THREADS"] == "2"


def test_cpu_attention_is_eager_for_both_engines():
    for engine in ("axolotl", "unsloth"):
        cfg, changes = adapt_config({"adapter": "qlora", "load_in_4bit": True, "attn_implementation": "sdpa"}, CPU,
                                    engine=engine)
        assert cfg["attn_implementation"] == "eager", engine
        assert any(c.key == "attn_implementation" and "faster" in c.why for c in changes), engine
        cfg, _ = adapt_config({"adapter": "qlora", "load_in_4bit": True, "attn_implementation": "flash_attention_2"},
                              CPU, engine=engine)
        assert cfg["attn_implementation"] == "eager", engine


def test_cpu_attention_can_be_kept_sdpa_to_measure_it(monkeypatch):
    monkeypatch.setenv("TUNEBOOK_CPU_ATTENTION", "sdpa")
    cfg, changes = adapt_config({"adapter": "lora", "attn_implementation": "sdpa"}, CPU)
    assert cfg["attn_implementation"] == "sdpa" and "attn_implementation" not in {c.key for c in changes}


def test_wandb_keys_are_kept_online_and_removed_offline_with_the_reason():
    cfg = {"use_wandb": True, "wandb_project": "nba", "wandb_entity": "team", "bf16": False}
    online, said = adapt_config(cfg, CPU, online=True)
    assert online["wandb_project"] == "nba" and online["use_wandb"] is True
    assert not any(c.key.startswith(("wandb", "use_wandb")) for c in said)
    offline, said = adapt_config(cfg, CPU)
    assert "wandb_project" not in offline and offline["use_wandb"] is False
    assert all("TUNEBOOK_ONLINE=1" in c.why for c in said if "wandb" in c.key)


def test_tensorboard_by_default_and_mlflow_on_request(monkeypatch, tmp_path):
    from tunebook import trackers

    said = {}
    cfg = {"recipe": {"name": "smollm2-lora"}}
    trackers.configure(cfg, lambda k, v, why: (cfg.__setitem__(k, v), said.__setitem__(k, why)))
    assert cfg["use_tensorboard"] is True and "use_mlflow" not in cfg and "opts out" in said["use_tensorboard"]
    off = {"use_tensorboard": False}
    trackers.configure(off, lambda k, v, why: off.__setitem__(k, v))
    assert off == {"use_tensorboard": False}  # a recipe's "no" stays no
    monkeypatch.setenv("TRACKER", "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = {"recipe": {"name": "smollm2-lora"}}
    trackers.configure(cfg, lambda k, v, why: cfg.__setitem__(k, v))
    assert cfg["use_mlflow"] is True and cfg["mlflow_tracking_uri"].startswith("sqlite:///")
    assert cfg["mlflow_tracking_uri"].endswith("runs/mlflow.db") and cfg["mlflow_experiment_name"] == "tunebook/smollm2-lora"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    cfg = {"recipe": {"name": "x"}}
    trackers.configure(cfg, lambda k, v, why: cfg.__setitem__(k, v))
    assert cfg["mlflow_tracking_uri"] == "http://mlflow.internal:5000"


def test_onednn_kernel_cache_is_bounded_and_an_environment_value_wins(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    env, changes = engine_env(CPU)
    assert env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"
    assert any(c.key == "env.ONEDNN_PRIMITIVE_CACHE_CAPACITY" and "QLoRA" in c.why for c in changes)
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024")  # the bench-levers row
    assert engine_env(CPU)[0]["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "1024"
