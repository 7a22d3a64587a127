"""The Unsloth engine process. Unsloth must be imported before transformers/trl/peft (it
patches them), which is one more reason each run is its own process."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(config_path: str, metrics_path: str, resume_from: str | None = None) -> int:
    t0 = time.time()
    from tunebook.fast_start import process_start

    process_start()
    import yaml

    cfg = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    import unsloth  # noqa: F401  (first: it patches transformers, trl and peft)
    import torch
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import train_on_responses_only

    from tunebook.engines import worker

    worker.begin()
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from tunebook.engines.unsloth import (
        model_kwargs, peft_kwargs, restore_packing, sft_kwargs, template_parts,
    )
    from tunebook.loading import chat_template_text

    worker.freeze_imports()

    mk = model_kwargs(cfg)
    mk["dtype"] = getattr(torch, mk["dtype"]) if mk["dtype"] else None
    keep = mk.pop("llm_int8_skip_modules")
    if keep:
        # Every Unsloth loader (its CPU one drops a caller's BitsAndBytesConfig) builds its 4-bit
        # config from this list: the recipe's 16-bit modules join it, in this process only.
        from unsloth_zoo.peft_utils import SKIP_QUANTIZATION_MODULES

        SKIP_QUANTIZATION_MODULES.extend(n for n in keep if n not in SKIP_QUANTIZATION_MODULES)
    model, tokenizer = FastLanguageModel.from_pretrained(**mk)
    template = chat_template_text(cfg)  # the recipe's template, as eval and chat will use it
    if template:
        tokenizer.chat_template = template
    pk = peft_kwargs(cfg)
    if pk:
        model = FastLanguageModel.get_peft_model(model, **pk)

    ds_cfg = cfg["datasets"][0]
    field = ds_cfg.get("field_messages", "messages")
    dataset = load_dataset("json", data_files=ds_cfg["path"], split="train")
    dataset = dataset.map(
        lambda row: {"text": tokenizer.apply_chat_template(row[field], tokenize=False)},
        remove_columns=dataset.column_names,
    )
    args = SFTConfig(**sft_kwargs(cfg))
    restored = restore_packing(args, cfg)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset, args=args)
    instruction, response = template_parts(tokenizer)
    trainer = train_on_responses_only(trainer, instruction_part=instruction, response_part=response)
    labels = trainer.train_dataset["labels"]
    t_train = time.time()
    trainer.train(resume_from_checkpoint=resume_from)  # weights, optimizer, RNG and data position
    t_end = time.time()
    out = Path(cfg["output_dir"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    state = trainer.state
    steps = state.global_step
    rows_seen = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
    # Rows come in a seeded shuffle; rows of one dataset are alike, so count as many rows as seen.
    seen = [labels[i % len(labels)] for i in range(rows_seen)]
    metrics = {
        **worker.common_metrics(t0, args, model),
        "log_history": state.log_history,
        "global_step": steps,
        "tokens_total": int(sum(len(x) for x in seen)),
        "tokens_trainable": int(sum(sum(1 for t in x if t != -100) for x in seen)),
        "tokens_note": "counted over the rows the steps consumed (no padding)",
        "masking": {"instruction_part": instruction, "response_part": response},
        "packing": {"packed": bool(args.packing), "strategy": args.packing_strategy if args.packing else None,
                    "restored_after_unsloth_cpu": restored},
        "timing": {"startup_s": round(t_train - t0, 2), "train_s": round(t_end - t_train, 2)},
    }
    worker.write_metrics(metrics_path, metrics)
    return 0


if __name__ == "__main__":
    from tunebook.engines.worker import exit_now

    exit_now(main(*sys.argv[1:4]))
