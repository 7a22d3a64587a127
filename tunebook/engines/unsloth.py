"""The Unsloth engine: fast LoRA / QLoRA / full fine-tuning through Unsloth's Python API.

A recipe stays an Axolotl config; this module maps the keys Unsloth can honour onto
`FastLanguageModel.from_pretrained`, `get_peft_model`, TRL's `SFTConfig` and
`train_on_responses_only`, and refuses, by name, every key it cannot honour, so a recipe
never silently means less under Unsloth than under Axolotl.
"""

from __future__ import annotations

import math

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunebook.engines import Setter, schema_capabilities
from tunebook.engines.process import run_worker
from tunebook.machine import Machine
from tunebook.loading import axolotl_template, skip_modules
from tunebook.errors import Problem
from tunebook.runs import RunDir

if TYPE_CHECKING:
    from tunebook.launch import Launch

NAME = "unsloth"
WORKER = "tunebook.engines.unsloth_worker"
# Unsloth's CPU backend is stock transformers underneath and takes `attn_implementation`:
# eager trains QLoRA 1.16x faster than sdpa here (30 steps of smollm2-qlora: 268.7 vs 232.6
# tokens/s, same losses), as it does LoRA through Axolotl
CPU_ATTENTION = "eager"
capabilities = schema_capabilities


def adapt_cpu(cfg: dict[str, Any], machine: Machine, set_: Setter) -> None:
    """Unsloth picks bf16 by itself when the recipe leaves it unset, emulated on an AVX2 CPU
    (~80x slower): say fp32 explicitly. Packing stays: its CPU backend clears it and the
    worker puts it back (restore_packing)."""
    if cfg.get("bf16") is None:
        set_("bf16", False, "fp32 as the recipe asks (left unset, Unsloth would pick bf16 itself)")

# Recipe key -> where it lands in Unsloth / TRL.
HONOURED = {
    "base_model": "from_pretrained(model_name)",
    "sequence_len": "from_pretrained(max_seq_length), SFTConfig(max_length)",
    "load_in_4bit": "from_pretrained(load_in_4bit)",
    "load_in_8bit": "from_pretrained(load_in_8bit)",
    "trust_remote_code": "from_pretrained(trust_remote_code)",
    "adapter": "lora/qlora -> get_peft_model; unset -> from_pretrained(full_finetuning=True)",
    "lora_r": "get_peft_model(r)",
    "lora_alpha": "get_peft_model(lora_alpha)",
    "lora_dropout": "get_peft_model(lora_dropout)",
    "lora_target_modules": "get_peft_model(target_modules)",
    "lora_target_linear": "get_peft_model(target_modules=all linear projections)",
    "peft_use_rslora": "get_peft_model(use_rslora)",
    "gradient_checkpointing": "from_pretrained/get_peft_model(use_gradient_checkpointing: true -> True, "
                              "offload -> 'unsloth'), SFTConfig(gradient_checkpointing)",
    "seed": "get_peft_model(random_state), SFTConfig(seed)",
    "chat_template": "tokenizer.chat_template (Axolotl's template of that name)",
    "datasets": "one chat_template JSONL dataset -> text via the chat template",
    "micro_batch_size": "SFTConfig(per_device_train_batch_size)",
    "gradient_accumulation_steps": "SFTConfig(gradient_accumulation_steps)",
    "num_epochs": "SFTConfig(num_train_epochs)",
    "max_steps": "SFTConfig(max_steps)",
    "learning_rate": "SFTConfig(learning_rate)",
    "lr_scheduler": "SFTConfig(lr_scheduler_type)",
    "warmup_steps": "SFTConfig(warmup_steps)",
    "warmup_ratio": "SFTConfig(warmup_steps=ratio): transformers 5 reads a float below 1 as a ratio",
    "weight_decay": "SFTConfig(weight_decay)",
    "max_grad_norm": "SFTConfig(max_grad_norm)",
    "optimizer": "SFTConfig(optim)",
    "logging_steps": "SFTConfig(logging_steps)",
    "save_strategy": "SFTConfig(save_strategy)",
    "save_steps": "SFTConfig(save_steps)",
    "saves_per_epoch": "SFTConfig(save_strategy='epoch') when 1",
    "output_dir": "SFTConfig(output_dir), save_pretrained",
    "bf16": "from_pretrained(dtype): Unsloth picks bf16 where the hardware has it",
    "attn_implementation": "from_pretrained(attn_implementation)",
    "fp16": "from_pretrained(dtype=float16)",
    "sample_packing": "SFTConfig(packing, BFD, padding-free; restored after its CPU backend clears it)",
    "pad_to_sequence_len": "SFTConfig(pad_to_multiple_of=sequence_len) for padded batches; unset: a multiple of 64 "
                           "(as Axolotl's collator); false: the longest row of the batch",
    "pad_to_multiple_of": "SFTConfig(pad_to_multiple_of) for padded batches, as Axolotl's collator",
    "group_by_length": "SFTConfig(train_sampling_strategy='group_by_length'): batches of like lengths, less padding",
    "bnb_config_kwargs": "NF4 + double quantization (Unsloth's 4-bit loading); llm_int8_skip_modules -> "
                         "from_pretrained(quantization_config=BitsAndBytesConfig(llm_int8_skip_modules=Unsloth's + these))",
    "val_set_size": "only 0: no evaluation split",
    "use_wandb": "only false: SFTConfig(report_to=[])",
    "use_tensorboard": "SFTConfig(report_to=['tensorboard']): event files in the run directory",
    "use_mlflow": "SFTConfig(report_to=['mlflow']): into the MLflow run tunebook opened (MLFLOW_RUN_ID)",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI for the engine",
    "mlflow_experiment_name": "MLFLOW_EXPERIMENT_NAME for the engine",
}
# Keys that steer only Axolotl internals; under Unsloth they have nothing to mean.
AXOLOTL_ONLY_OK = {
    "recipe", "model_type", "tokenizer_type", "dataset_prepared_path",
    "lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel", "tf32",
    "dataloader_num_workers", "dataloader_pin_memory",
}
DATASET_KEYS_OK = {"path", "ds_type", "type", "field_messages", "roles_to_train", "train_on_eos"}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def check(config: dict[str, Any]) -> list[Problem]:
    """Problems (source/line filled in by the caller) for keys Unsloth cannot honour."""
    bad: list[tuple[str, str]] = []
    for key, value in config.items():
        if key in HONOURED or key in AXOLOTL_ONLY_OK or value in (None, False, [], {}):
            continue
        bad.append((key, "the unsloth engine cannot honour this key; remove it or run with ENGINE=axolotl"))
    if config.get("adapter") not in (None, "lora", "qlora"):
        bad.append(("adapter", f"'{config['adapter']}' is not supported by the unsloth engine (lora, qlora or none)"))
    if config.get("adapter") == "qlora" and not config.get("load_in_4bit"):
        bad.append(("load_in_4bit", "qlora needs load_in_4bit: true"))
    if config.get("val_set_size"):
        bad.append(("val_set_size", "the unsloth engine trains without an evaluation split; set 0"))
    if config.get("use_wandb"):
        bad.append(("use_wandb", "the unsloth engine does not log to wandb"))
    kwargs = config.get("bnb_config_kwargs") or {}
    for k, v in kwargs.items():
        if k == "llm_int8_skip_modules":
            continue  # names checked with every engine's (value_checks.skip_module_problems)
        if (k, v) not in (("bnb_4bit_quant_type", "nf4"), ("bnb_4bit_use_double_quant", True)):
            bad.append((f"bnb_config_kwargs.{k}", "Unsloth's 4-bit loading is NF4 with double quantization only; "
                        "llm_int8_skip_modules is the one other key it takes"))
    template = config.get("chat_template")
    if template and template != "tokenizer_default" and axolotl_template(str(template)) is None:
        bad.append(("chat_template", f"no template named '{template}' (Axolotl's names, or tokenizer_default)"))
    datasets = config.get("datasets") or []
    if len(datasets) != 1:
        bad.append(("datasets", "the unsloth engine takes exactly one dataset"))
    for i, ds in enumerate(datasets[:1]):
        for k in ds:
            if k not in DATASET_KEYS_OK:
                bad.append((f"datasets.{i}.{k}", "the unsloth engine cannot honour this dataset key"))
        if ds.get("type") != "chat_template":
            bad.append((f"datasets.{i}.type", "the unsloth engine reads chat `messages` JSONL only (type: chat_template)"))
        roles = ds.get("roles_to_train")
        if roles not in (None, ["assistant"]):
            bad.append((f"datasets.{i}.roles_to_train", "the unsloth engine trains on assistant turns only"))
        if ds.get("train_on_eos") not in (None, "turn"):
            bad.append((f"datasets.{i}.train_on_eos", "the unsloth engine trains on each assistant turn's end (turn)"))
    if config.get("saves_per_epoch") not in (None, 1):
        bad.append(("saves_per_epoch", "only 1 (save each epoch) maps onto TRL"))
    return [Problem("", key, msg) for key, msg in bad]


def model_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Arguments of FastLanguageModel.from_pretrained (dtype is filled in by the worker)."""
    return {
        "model_name": cfg["base_model"],
        "max_seq_length": int(cfg.get("sequence_len") or 2048),
        "load_in_4bit": bool(cfg.get("load_in_4bit")),
        "load_in_8bit": bool(cfg.get("load_in_8bit")),
        "full_finetuning": cfg.get("adapter") is None,
        "trust_remote_code": bool(cfg.get("trust_remote_code")),
        # adapt sets bf16 true/false on CPU from the hardware; None lets Unsloth pick (GPU)
        "dtype": "float16" if cfg.get("fp16") is True else {True: "bfloat16", False: "float32"}.get(cfg.get("bf16")),
        "attn_implementation": cfg.get("attn_implementation"),
        # from_pretrained's own default is "unsloth" (offloaded checkpointing, a second forward
        # per step); get_peft_model's False alone does not undo it
        "use_gradient_checkpointing": checkpointing(cfg),
        # modules kept in 16 bit in a 4-bit load (the worker builds the BitsAndBytesConfig)
        "llm_int8_skip_modules": skip_modules(cfg) if cfg.get("load_in_4bit") else None,
    }


def checkpointing(cfg: dict[str, Any]) -> bool | str:
    """Axolotl's meaning in Unsloth's words: `true` recomputes each layer's forward (plain
    checkpointing), "offload" / "offload_disk" also move the saved activations off the GPU,
    which is what Unsloth's own "unsloth" mode does."""
    value = cfg.get("gradient_checkpointing")
    return "unsloth" if value in ("offload", "offload_disk") else bool(value)


def peft_kwargs(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """Arguments of FastLanguageModel.get_peft_model, or None for full fine-tuning."""
    if not cfg.get("adapter"):
        return None
    targets = ALL_LINEAR if cfg.get("lora_target_linear") else cfg.get("lora_target_modules") or ALL_LINEAR
    return {
        "r": int(cfg.get("lora_r") or 16),
        "target_modules": list(targets),
        "lora_alpha": int(cfg.get("lora_alpha") or 16),
        "lora_dropout": float(cfg.get("lora_dropout") or 0.0),
        "bias": "none",
        "use_gradient_checkpointing": checkpointing(cfg),
        "random_state": int(cfg.get("seed") or 42),
        "use_rslora": bool(cfg.get("peft_use_rslora")),
    }


def sft_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Arguments of TRL's SFTConfig."""
    out = {
        "output_dir": cfg["output_dir"],
        "per_device_train_batch_size": int(cfg.get("micro_batch_size") or 1),
        "gradient_accumulation_steps": int(cfg.get("gradient_accumulation_steps") or 1),
        "num_train_epochs": float(cfg.get("num_epochs") or 1),
        "max_steps": int(cfg.get("max_steps") or -1),
        "learning_rate": float(cfg.get("learning_rate") or 2e-4),
        "lr_scheduler_type": cfg.get("lr_scheduler") or "linear",
        # transformers 5 folds warmup_ratio into warmup_steps: a float below 1 is a ratio
        "warmup_steps": cfg.get("warmup_steps") or float(cfg.get("warmup_ratio") or 0),
        "weight_decay": float(cfg.get("weight_decay") or 0.0),
        "max_grad_norm": float(cfg.get("max_grad_norm") or 1.0),
        "optim": cfg.get("optimizer") or "adamw_torch",
        "logging_steps": int(cfg.get("logging_steps") or 1),
        "save_strategy": cfg.get("save_strategy") or ("epoch" if cfg.get("saves_per_epoch") else "no"),
        "seed": int(cfg.get("seed") or 42),
        "report_to": [name for key, name in (("use_tensorboard", "tensorboard"), ("use_mlflow", "mlflow"))
                      if cfg.get(key)],
        "dataset_text_field": "text",
        "max_length": int(cfg.get("sequence_len") or 2048),
        "packing": bool(cfg.get("sample_packing")),
        "packing_strategy": "bfd",  # padding-free rows, position ids restart per row
        # transformers 5 folded group_by_length into the sampling strategy (as Axolotl maps it)
        "train_sampling_strategy": "group_by_length" if cfg.get("group_by_length") else "random",
        "dataloader_num_workers": 0,
        # TRL's SFTConfig defaults to True (recomputing every forward in the backward: 1.5x the
        # matmuls of a step); the recipe's key decides, as it does for Axolotl
        "gradient_checkpointing": bool(cfg.get("gradient_checkpointing")),
    }
    if cfg.get("save_steps"):
        out["save_steps"] = cfg["save_steps"]
    multiple = pad_multiple(cfg)
    if multiple:
        out["pad_to_multiple_of"] = multiple
    return out


def pad_multiple(cfg: dict[str, Any]) -> int | None:
    """What Axolotl's collator pads a padded batch's length to a multiple of, for the same
    recipe keys (axolotl/core/builders/causal.py): `pad_to_sequence_len: true` the sequence
    length, unset `pad_to_multiple_of` (default 64), `false` nothing. Packed rows go padding-free.
    (Was ignored before: the same recipe padded differently under the two engines. Measured on
    smollm2-qlora, 150 steps with tcmalloc: a multiple of 16 left the peak RSS where it was,
    1,867 vs 1,876 MiB, so the shipped recipe keeps `false`.)"""
    if cfg.get("sample_packing"):
        return None
    multiple = int(cfg.get("pad_to_multiple_of") or 64)
    if cfg.get("pad_to_sequence_len"):
        return multiple * math.ceil(int(cfg.get("sequence_len") or 2048) / multiple)
    return multiple if cfg.get("pad_to_sequence_len") is None else None


def restore_packing(args, cfg: dict[str, Any]) -> bool:
    """Put back the packing Unsloth's CPU backend clears from an SFTConfig; True if it did.

    Its CPU backend (unsloth_zoo/cpu/trainer.py) turns packing off on the grounds that SDPA
    would attend across packed rows. With TRL's BFD packing the rows travel padding-free with
    position ids restarting at each row and no attention mask, and transformers builds a
    block-diagonal mask from those ids: a packed row's per-token loss equals the row alone
    (tests/test_unsloth_packing.py). Unsloth's own response masking keeps TRL's padding-free
    collator. So the recipe's `sample_packing` is honoured rather than silently dropped.
    """
    if not cfg.get("sample_packing") or args.packing:
        return False
    args.packing = True
    args.packing_strategy = "bfd"
    args.padding_free = True
    return True


def template_parts(tokenizer) -> tuple[str, str]:
    """The text that opens a user turn and an assistant turn, read off the chat template.

    train_on_responses_only masks by these markers; deriving them from the template (rather
    than a table per family) keeps a custom template working.
    """
    def render(msgs, gen=False):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    user = [{"role": "user", "content": "QQQ1"}]
    two = user + [{"role": "assistant", "content": "AAA1"}]
    lone, closed = render(user), render(two)
    generation_prompt = render(user, gen=True)[len(lone):]
    # What the template really writes before a past assistant turn: Qwen3's generation prompt
    # adds "<think>\n\n", which history turns don't carry.
    response = os.path.commonprefix([generation_prompt, closed[len(lone):]]) if closed.startswith(lone) else ""
    if not response.strip():  # no generation prompt (Mistral: "[INST] q [/INST] a")
        response = closed[closed.index("QQQ1") + len("QQQ1"): closed.index("AAA1")].strip()
    three = two + [{"role": "user", "content": "QQQ2"}]
    text, closed = render(three), render(two)
    between = text[text.index("AAA1") + len("AAA1"): text.index("QQQ2")]
    end_of_turn = closed[closed.index("AAA1") + len("AAA1"):]  # what closes an assistant turn
    instruction = between[len(end_of_turn):] if end_of_turn and between.startswith(end_of_turn) else between
    if not response.strip() or not instruction.strip():
        raise ValueError("the chat template has no assistant/user header to mask by; use ENGINE=axolotl")
    return instruction, response


def launch(run: RunDir, config_path: Path, env: dict[str, str], echo: bool = True,
           resume_from: Path | None = None, processes: "Launch | None" = None) -> dict:
    return run_worker(WORKER, run, config_path, env, echo, resume_from, processes)
