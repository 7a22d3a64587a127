"""The Unsloth engine's key mapping, its refusals, and its masking markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunebook.engines import unsloth as U
from tunebook.errors import TunebookError
from tunebook.resolve import resolve

QLORA = Path("recipes/smollm2/qlora.yaml")

CFG = {
    "base_model": "m", "sequence_len": 256, "load_in_4bit": True, "adapter": "qlora", "lora_r": 8,
    "lora_alpha": 16, "lora_dropout": 0.05, "lora_target_modules": ["q_proj", "v_proj"], "peft_use_rslora": True,
    "gradient_checkpointing": True, "seed": 7, "micro_batch_size": 3, "gradient_accumulation_steps": 2,
    "num_epochs": 2, "max_steps": 5, "learning_rate": 1e-4, "lr_scheduler": "cosine", "warmup_ratio": 0.1,
    "weight_decay": 0.01, "max_grad_norm": 0.3, "optimizer": "adamw_torch", "logging_steps": 2,
    "saves_per_epoch": 1, "output_dir": "out", "sample_packing": True, "trust_remote_code": False,
    "datasets": [{"path": "d.jsonl", "type": "chat_template", "field_messages": "messages"}],
}


def test_model_and_peft_mapping():
    assert U.model_kwargs(CFG) == {"model_name": "m", "max_seq_length": 256, "load_in_4bit": True,
                                   "load_in_8bit": False, "full_finetuning": False, "trust_remote_code": False,
                                   "dtype": None, "attn_implementation": None, "use_gradient_checkpointing": True,
                                   "llm_int8_skip_modules": []}
    assert U.peft_kwargs(CFG) == {"r": 8, "target_modules": ["q_proj", "v_proj"], "lora_alpha": 16,
                                  "lora_dropout": 0.05, "bias": "none", "use_gradient_checkpointing": True,
                                  "random_state": 7, "use_rslora": True}
    assert U.peft_kwargs({**CFG, "lora_target_linear": True})["target_modules"] == U.ALL_LINEAR
    assert U.peft_kwargs({**CFG, "adapter": None}) is None
    assert U.model_kwargs({**CFG, "adapter": None, "load_in_4bit": False})["full_finetuning"] is True
    assert U.model_kwargs({**CFG, "fp16": True})["dtype"] == "float16"
    assert U.model_kwargs({**CFG, "attn_implementation": "eager"})["attn_implementation"] == "eager"
    # from_pretrained's own default is "unsloth": the recipe's false must reach it too
    assert U.model_kwargs({**CFG, "gradient_checkpointing": False})["use_gradient_checkpointing"] is False
    # 16-bit modules of a 4-bit load (the worker adds them to Unsloth's own list); lm_head is always kept
    keep = {**CFG, "bnb_config_kwargs": {"llm_int8_skip_modules": ["lm_head", "model.layers.1.mlp.down_proj"]}}
    assert U.model_kwargs(keep)["llm_int8_skip_modules"] == ["model.layers.1.mlp.down_proj"]
    assert U.check(keep) == []
    assert U.model_kwargs({**keep, "load_in_4bit": False})["llm_int8_skip_modules"] is None
    # Axolotl's "offload" (activations moved off the GPU) is Unsloth's own "unsloth" mode
    assert U.peft_kwargs({**CFG, "gradient_checkpointing": "offload"})["use_gradient_checkpointing"] == "unsloth"


def test_trainer_mapping():
    k = U.sft_kwargs(CFG)
    assert (k["per_device_train_batch_size"], k["gradient_accumulation_steps"], k["num_train_epochs"]) == (3, 2, 2.0)
    assert (k["max_steps"], k["learning_rate"], k["lr_scheduler_type"]) == (5, 1e-4, "cosine")
    assert (k["warmup_steps"], k["weight_decay"], k["max_grad_norm"]) == (0.1, 0.01, 0.3)
    assert (k["optim"], k["logging_steps"], k["save_strategy"], k["seed"]) == ("adamw_torch", 2, "epoch", 7)
    assert (k["max_length"], k["packing"], k["output_dir"], k["report_to"]) == (256, True, "out", [])
    assert U.sft_kwargs({**CFG, "warmup_steps": 4})["warmup_steps"] == 4
    assert U.sft_kwargs({**CFG, "max_steps": None})["max_steps"] == -1
    assert k["train_sampling_strategy"] == "random"
    # TRL's SFTConfig defaults gradient checkpointing on; the recipe's key decides either way
    assert k["gradient_checkpointing"] is True
    assert U.sft_kwargs({**CFG, "gradient_checkpointing": False})["gradient_checkpointing"] is False
    unset = {k: v for k, v in CFG.items() if k != "gradient_checkpointing"}
    assert U.sft_kwargs(unset)["gradient_checkpointing"] is False
    assert U.sft_kwargs({**CFG, "group_by_length": True})["train_sampling_strategy"] == "group_by_length"
    from trl import SFTConfig  # the names must be SFTConfig's own (transformers 5 renamed some)

    assert set(k) <= set(SFTConfig.__dataclass_fields__)


def test_every_honoured_key_is_mapped_somewhere():
    mapped = set(CFG) | {"load_in_8bit", "fp16", "bf16", "attn_implementation", "lora_target_linear", "warmup_steps", "save_strategy",
                         "save_steps", "group_by_length", "chat_template", "pad_to_sequence_len", "pad_to_multiple_of",
                         "bnb_config_kwargs", "val_set_size", "use_wandb",  # (padding: tests/test_allocator.py)
                         # trackers: report_to below; the MLflow store and run reach the engine as MLFLOW_* variables
                         "use_tensorboard", "use_mlflow", "mlflow_tracking_uri", "mlflow_experiment_name"}
    assert set(U.HONOURED) <= mapped
    assert U.check(CFG) == []
    assert U.sft_kwargs({**CFG, "use_tensorboard": True, "use_mlflow": True})["report_to"] == ["tensorboard", "mlflow"]
    assert U.sft_kwargs({**CFG, "use_tensorboard": False})["report_to"] == []


@pytest.mark.parametrize("key,value", [("peft_use_dora", True), ("loraplus_lr_ratio", 16), ("rl", "dpo"),
                                       ("neftune_noise_alpha", 5)])
def test_unhonoured_keys_fail_with_their_name(key, value):
    (p,) = [p for p in U.check({**CFG, key: value}) if p.key == key]
    assert "cannot honour" in p.message and "ENGINE=axolotl" in p.message


def test_unhonoured_dataset_settings():
    bad = {**CFG, "datasets": [{"path": "d.jsonl", "type": "alpaca"}, {"path": "e.jsonl"}],
           "bnb_config_kwargs": {"bnb_4bit_quant_type": "fp4"}}
    keys = {p.key for p in U.check(bad)}
    assert {"datasets", "datasets.0.type", "bnb_config_kwargs.bnb_4bit_quant_type"} <= keys


def test_resolve_names_the_unhonoured_key_from_args():
    with pytest.raises(TunebookError) as info:
        resolve(QLORA, "loraplus_lr_ratio=16")
    (p,) = info.value.problems
    assert (p.source, p.key) == ("ARGS", "loraplus_lr_ratio") and "ENGINE=axolotl" in info.value.hint
    cfg = resolve(QLORA, "loraplus_lr_ratio=16", engine="axolotl").adapted
    assert cfg["recipe"]["engine"] == "axolotl" and cfg["loraplus_lr_ratio"] == 16


@pytest.mark.parametrize("template,instruction,response", [
    ("tokenizer_default", "<|im_start|>user\n", "<|im_start|>assistant\n"),
    # Qwen3 renders the final assistant turn with an empty think block; the loss starts after it
    ("qwen3", "<|im_start|>user\n", "<|im_start|>assistant\n<think>\n\n"),
    ("llama3", "<|start_header_id|>user<|end_header_id|>\n\n", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("gemma3", "<start_of_turn>user\n", "<start_of_turn>model\n"),
    ("mistral_v2v3", "[INST] ", "[/INST]"),
])
def test_masking_markers_are_read_off_each_template(smollm2_dir, template, instruction, response):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    if template != "tokenizer_default":
        tok.chat_template = U.axolotl_template(template)
    assert U.template_parts(tok) == (instruction, response)
