"""Probe (not yet a test): does Unsloth's CPU path keep packed rows apart (position ids restart, no mask)?

Run: .venv/bin/python tests/unsloth_packing_probe.py [4bit]. Measured 2026-11-23: max |packed - alone|
per-token loss 9.5e-7 (fp32 and 4-bit), leak control (positions not restarting) 0.19. Next: a test in a
subprocess and TRL's padding-free packing switched on for the Unsloth engine.
"""
import os
import sys
from pathlib import Path
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
ROOT = Path(__file__).resolve().parents[1]; sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
import tempfile
from unsloth import FastLanguageModel
import torch, torch.nn.functional as F
from tiny_models import build_tiny_model

tmp = Path(tempfile.mkdtemp())
tiny = build_tiny_model("llama", ROOT / "models/smollm2-135m-instruct", tmp)
model, tok = FastLanguageModel.from_pretrained(str(tiny), load_in_4bit=len(sys.argv) > 1, dtype=torch.float32, max_seq_length=256)
model = FastLanguageModel.get_peft_model(model, r=8, lora_alpha=16, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
model.train()
rows = [[{"role": "user", "content": f"Question {i}: who won, team {i} or team {i+1}?"}, {"role": "assistant", "content": f"Team {i} won by {i+3}."}] for i in range(3)]
ids = [tok.apply_chat_template(r, tokenize=True, return_dict=False) for r in rows]
def losses(input_ids, position_ids):
    out = model(input_ids=torch.tensor([input_ids]), position_ids=torch.tensor([position_ids]))
    lg = out.logits.float()
    return F.cross_entropy(lg[0, :-1], torch.tensor(input_ids[1:]), reduction="none")
alone = [losses(x, list(range(len(x)))) for x in ids]
packed_ids = sum(ids, []); pos = sum([list(range(len(x))) for x in ids], [])
packed = losses(packed_ids, pos)
off = 0; worst = 0.0
for x, a in zip(ids, alone):
    seg = packed[off: off + len(x) - 1]
    worst = max(worst, (seg - a).abs().max().item()); off += len(x)
# leak control: positions not restarting (one long row) must differ
leak = losses(packed_ids, list(range(len(packed_ids))))
print("max |packed - alone| per-token loss:", worst, " leak control diff:", (leak[len(ids[0]):len(ids[0])+len(ids[1])-1] - alone[1]).abs().max().item())
