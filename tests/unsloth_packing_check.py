"""Run in its own process by test_unsloth_packing.py (Unsloth patches transformers on import).

Prints one JSON line: what Unsloth's CPU backend did to packing, what the trainer's collator
hands the model after tunebook restores it, and how far a packed row's per-token loss is from
the same row alone (and, as a control, from the row when positions do not restart).
"""
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from tunebook.quiet import quiet_imports  # noqa: E402

quiet_imports()
import unsloth  # noqa: E402,F401  (first)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402
from unsloth import FastLanguageModel  # noqa: E402
from unsloth.chat_templates import train_on_responses_only  # noqa: E402

from tiny_models import build_tiny_model  # noqa: E402
from tunebook.engines.unsloth import restore_packing, sft_kwargs, template_parts  # noqa: E402

four_bit = "4bit" in sys.argv[1:]
tmp = Path(tempfile.mkdtemp())
tiny = build_tiny_model("llama", Path(sys.argv[1]), tmp)
attention = sys.argv[3] if len(sys.argv) > 3 else "eager"  # eager: what tunebook picks on a CPU
model, tok = FastLanguageModel.from_pretrained(str(tiny), load_in_4bit=four_bit, dtype=torch.float32,
                                               max_seq_length=256, attn_implementation=attention)
model = FastLanguageModel.get_peft_model(model, r=8, lora_alpha=16, lora_dropout=0.0, random_state=0,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
rows = [[{"role": "user", "content": f"Question {i}: who won, team {i} or team {i + 1}?"},
         {"role": "assistant", "content": f"Team {i} won by {i + 3}." * (i + 1)}] for i in range(3)]

cfg = {"sample_packing": True, "micro_batch_size": 1, "sequence_len": 256, "output_dir": str(tmp / "out"),
       "max_steps": 1, "learning_rate": 1e-4, "optimizer": "adamw_torch"}
args = SFTConfig(**sft_kwargs(cfg))
cleared = not args.packing
restored = restore_packing(args, cfg)
texts = Dataset.from_dict({"text": [tok.apply_chat_template(r, tokenize=False) for r in rows]})
trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=texts, args=args)
trainer = train_on_responses_only(trainer, *template_parts(tok))
batch = next(iter(trainer.get_train_dataloader()))
pos = batch["position_ids"][0].tolist()
starts = [i for i, p in enumerate(pos) if p == 0]

model.eval()
ids = [tok.apply_chat_template(r, tokenize=True, return_dict=False) for r in rows]


def losses(input_ids, position_ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([input_ids]), position_ids=torch.tensor([position_ids]))
    return F.cross_entropy(out.logits.float()[0, :-1], torch.tensor(input_ids[1:]), reduction="none")


alone = [losses(x, list(range(len(x)))) for x in ids]
packed_ids = sum(ids, [])
packed = losses(packed_ids, sum([list(range(len(x))) for x in ids], []))
worst, off = 0.0, 0
for x, a in zip(ids, alone):
    worst = max(worst, (packed[off: off + len(x) - 1] - a).abs().max().item())
    off += len(x)
leak = losses(packed_ids, list(range(len(packed_ids))))
n0 = len(ids[0])
print(json.dumps({
    "attention": model.config._attn_implementation, "cleared_by_unsloth": cleared, "restored": restored,
    "packing": args.packing,
    "padding_free": args.padding_free, "batch_keys": sorted(batch), "rows_in_batch": len(starts),
    "batch_tokens": len(pos), "row_tokens": sorted(len(x) for x in ids),
    "labels_masked": int((batch["labels"] == -100).sum()), "max_diff": worst,
    "leak_diff": (leak[n0: n0 + len(ids[1]) - 1] - alone[1]).abs().max().item(),
}))
