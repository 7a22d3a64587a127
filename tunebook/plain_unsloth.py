"""Unsloth's own CPU path for `make bench-engines`: LoRA as Unsloth's notebooks write it.

The target "tunebook >= 1.2x Unsloth's own CPU path" needs Unsloth as a user runs it, not
tunebook's Unsloth engine: that one inherits tunebook's levers (tcmalloc, the bounded oneDNN
cache, OpenMP spinning, eager attention, gradient checkpointing only when asked), so the two
rows had drifted together (2026-12-07: 310.5 vs tunebook's padded Axolotl 325.5 tokens/s) and
no longer measured Unsloth. This is the conversational notebook (FastLanguageModel,
get_peft_model with its "unsloth" checkpointing, SFTTrainer, train_on_responses_only,
adamw_8bit) with the bench's shapes: padded batches of MICRO_BATCH, no accumulation, the
smollm2 recipes' rank 16 / alpha 32 on every linear layer, Unsloth's own dtype choice. It runs
in the environment the bench hands every contender, without tunebook's engine environment.

    python -m tunebook.plain_unsloth MODEL DATA STEPS MICRO_BATCH OUT.json

writes the real (non-pad) tokens of the steps it trained and the dtype Unsloth chose to OUT.json;
the bench times it by its per-step log lines like every other contender.
"""

from __future__ import annotations

import json
import sys


def main(model_dir: str, data: str, steps: int, batch: int, out: str) -> None:
    import unsloth  # noqa: F401  (first: it patches transformers, trl and peft)
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import train_on_responses_only

    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = FastLanguageModel.from_pretrained(model_name=model_dir, max_seq_length=512, dtype=None,
                                                         load_in_4bit=False)
    model = FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=32, lora_dropout=0, bias="none", use_gradient_checkpointing="unsloth",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        random_state=3407)
    ds = load_dataset("json", data_files=data, split="train")
    ds = ds.map(lambda row: {"text": tokenizer.apply_chat_template(row["messages"], tokenize=False)},
                remove_columns=ds.column_names)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=ds, args=SFTConfig(
        output_dir=out + ".d", dataset_text_field="text", max_length=512, per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, max_steps=steps, warmup_steps=2, learning_rate=2e-4, logging_steps=1,
        optim="adamw_8bit", weight_decay=0.01, lr_scheduler_type="linear", seed=3407, report_to="none",
        save_strategy="no", dataloader_num_workers=0))
    # SmolLM2 speaks ChatML: the markers the Qwen notebooks pass
    trainer = train_on_responses_only(trainer, instruction_part="<|im_start|>user\n",
                                      response_part="<|im_start|>assistant\n")
    collate, counted = trainer.data_collator, []

    def counting(rows):
        b = collate(rows)
        mask = b.get("attention_mask")
        real = int(mask.sum()) if mask is not None else int((b["input_ids"] != tokenizer.pad_token_id).sum())
        counted.append(real)
        return b

    trainer.data_collator = counting
    trainer.train()
    used = counted[:steps]  # the dataloader may have fetched one batch ahead
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"tokens_real": sum(used), "steps": steps, "compute_dtype": str(model.dtype).removeprefix("torch."),
                   "engine": "unsloth " + getattr(unsloth, "__version__", "?")}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
