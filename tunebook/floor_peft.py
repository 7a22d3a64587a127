"""The floor for `make bench-engines`: LoRA as any user could write it with transformers + peft.

No engine, no tunebook: the chat template, loss on the assistant turn only, padded batches,
fp32 (transformers needs `use_cpu` for bf16 on a CPU, which a first script rarely sets), the
recipe's LoRA shape and learning rate. Run as a child process:

    python -m tunebook.floor_peft MODEL DATA STEPS MICRO_BATCH OUT.json

and it writes the real (non-pad) tokens of the steps it trained to OUT.json; the bench reads
its speed from the per-step log lines like every other contender's.
"""

from __future__ import annotations

import json
import sys


def main(model_dir: str, data: str, steps: int, batch: int, out: str) -> None:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments)

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))

    def encode(row):
        prompt = tok.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(row["messages"], tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"][:512]
        return {"input_ids": ids, "attention_mask": [1] * len(ids),
                "labels": ([-100] * len(p_ids) + ids[len(p_ids):])[: len(ids)]}

    ds = load_dataset("json", data_files=data, split="train")
    ds = ds.map(encode, remove_columns=ds.column_names)
    pad = DataCollatorForSeq2Seq(tok, padding=True)
    counted: list[tuple[int, int]] = []

    def collate(rows):
        batch_ = pad(rows)
        counted.append((int(batch_["attention_mask"].sum()), batch_["input_ids"].numel()))
        return batch_

    args = TrainingArguments(output_dir=out + ".d", per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=2, logging_steps=1,
                             save_strategy="no", report_to=[], seed=42, dataloader_num_workers=0,
                             remove_unused_columns=False)
    Trainer(model=model, args=args, train_dataset=ds, data_collator=collate).train()
    used = counted[:steps]  # the dataloader may have fetched one batch ahead
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"tokens_real": sum(r for r, _ in used), "tokens_slots": sum(s for _, s in used), "steps": steps,
                   "compute_dtype": "float32"}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
