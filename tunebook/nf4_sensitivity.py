"""Which linear layers a 4-bit load should keep 16-bit: each projection's NF4 rounding, alone,
scored by how far it moves the model's next-token distribution on the recipe's own rows.

On SmolLM2-135M two down projections (layers 11 and 29) carry half of the whole model's NF4
error; keeping the top 8 of 210 in 16 bit (+10 MiB) took the 4-bit base's control_mc from
-9 to -2.5 points. The list goes into a recipe as Axolotl's
`bnb_config_kwargs.llm_int8_skip_modules`, which both engines and every 4-bit load here honour.

    .venv/bin/python -m tunebook.nf4_sensitivity models/smollm2-135m-instruct data/nba/val.jsonl --top 8
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ranked:
    kl_all: float  # every projection quantized at once
    per_module: list[tuple[str, float]]  # (name, KL with that projection alone quantized), worst first


def rank(model_dir: Path, data: Path, rows: int = 8) -> Ranked:
    """KL(fp32 || one projection NF4-rounded) averaged over the tokens of `rows` chat rows, with
    the same NF4 + double quantization and block size bitsandbytes' Linear4bit applies."""
    import bitsandbytes.functional as bnbf
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
    lines = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()][:rows]
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in lines]
    enc = tok(texts, return_tensors="pt", padding=True)
    mask = enc["attention_mask"].bool()

    @torch.no_grad()
    def logp():
        return F.log_softmax(model(**enc).logits.float(), -1)[mask]

    ref = logp()

    def kl() -> float:
        return float((ref.exp() * (ref - logp())).sum(-1).mean())

    def nf4(w):
        q, state = bnbf.quantize_4bit(w.contiguous(), quant_type="nf4", compress_statistics=True, blocksize=64)
        return bnbf.dequantize_4bit(q, state, quant_type="nf4").to(w.dtype)

    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    orig = {n: m.weight.data for n, m in mods}
    rounded = {n: nf4(m.weight.data) for n, m in mods}
    scores = []
    for n, m in mods:
        m.weight.data = rounded[n]
        scores.append((n, kl()))
        m.weight.data = orig[n]
    for n, m in mods:
        m.weight.data = rounded[n]
    return Ranked(kl(), sorted(scores, key=lambda s: -s[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tunebook.nf4_sensitivity", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("data", type=Path, help="chat `messages` JSONL (a validation split, not the test set)")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--top", type=int, default=8)
    a = p.parse_args(argv)
    r = rank(a.model, a.data, a.rows)
    print(f"KL to fp32, every projection NF4: {r.kl_all:.4f}")
    for name, k in r.per_module[: max(a.top, 10)]:
        print(f"{k:.4f}  {name}")
    print("bnb_config_kwargs:\n  llm_int8_skip_modules: [lm_head, "
          + ", ".join(n for n, _ in r.per_module[: a.top]) + "]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
