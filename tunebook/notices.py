"""Settings that change what is trained or shipped, said before the run: a copied upstream
example carries them silently (a pad token that resized the embeddings made a 2-step LoRA
adapter 514 MiB). Printed by `make show` and `make train`, recorded in run.json `notices`.
Not errors: each can be what the user wants.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunebook.data.preflight import DataCheck


@dataclass(frozen=True)
class Notice:
    key: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def notices(config: dict[str, Any], data: list[DataCheck], on_cpu: bool) -> list[Notice]:
    return (_added_tokens(config) + _whole_modules(config) + _loss_on_prompts(config)
            + _training_time_eval(config, data, on_cpu) + _remote_code(config))


def _added_tokens(config: dict[str, Any]) -> list[Notice]:
    wanted = [str(v) for v in (config.get("special_tokens") or {}).values() if v] + [
        str(t) for t in config.get("tokens") or []]
    base = Path(str(config.get("base_model") or ""))
    if not wanted or not (base / "config.json").is_file():
        return []
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(base, trust_remote_code=bool(config.get("trust_remote_code")))
    except (OSError, ValueError):
        return []
    vocab = tok.get_vocab()
    new = sorted({t for t in wanted if t not in vocab})
    if not new:
        return []
    model = json.loads((base / "config.json").read_text(encoding="utf-8"))
    hidden = model.get("hidden_size") or (model.get("text_config") or {}).get("hidden_size") or 0
    size = model.get("vocab_size", 0) * hidden * 4 * (1 if model.get("tie_word_embeddings") else 2)
    adapter = " and the adapter then saves embed_tokens and lm_head whole" if config.get("adapter") else ""
    return [Notice("special_tokens" if config.get("special_tokens") else "tokens",
                   f"adds {len(new)} token(s) the tokenizer lacks ({', '.join(new)}): the embeddings are resized"
                   f"{adapter} (~{size / 2**20:.0f} MiB in fp32); use a token the tokenizer has (its eos) to avoid it")]


def _whole_modules(config: dict[str, Any]) -> list[Notice]:
    modules = config.get("lora_modules_to_save")
    if config.get("adapter") and modules:
        return [Notice("lora_modules_to_save", f"trains and saves {', '.join(map(str, modules))} whole beside the "
                       "adapter: far more trainable weights and a larger adapter than LoRA alone")]
    return []


def _loss_on_prompts(config: dict[str, Any]) -> list[Notice]:
    out = []
    if config.get("train_on_inputs"):
        out.append(Notice("train_on_inputs", "loss on the prompt tokens too, not only the answers"))
    for i, ds in enumerate(config.get("datasets") or []):
        if not isinstance(ds, dict):
            continue
        kind = str(ds.get("type") or "").split(":")[0]
        roles = ds.get("roles_to_train")
        if kind in ("completion", "pretrain", "input_output") and not config.get("rl"):
            out.append(Notice(f"datasets.{i}.type", f"type {kind}: loss on every token (no turns to mask)"))
        elif roles and any(r != "assistant" for r in roles):
            out.append(Notice(f"datasets.{i}.roles_to_train", f"loss on {', '.join(roles)} turns, not only the "
                              "assistant's"))
    return out


def _training_time_eval(config: dict[str, Any], data: list[DataCheck], on_cpu: bool) -> list[Notice]:
    """How many evaluation passes the run will make, and what they cost next to training."""
    val = float(config.get("val_set_size") or 0)
    if not val and not config.get("test_datasets"):
        return []
    rows = sum(d.rows for d in data)
    batch = int(config.get("micro_batch_size") or 1) * int(config.get("gradient_accumulation_steps") or 1)
    steps_per_epoch = max(1, int(rows * (1 - val)) // batch) if rows else None
    steps = config.get("max_steps") if (config.get("max_steps") or 0) > 0 else (
        steps_per_epoch * float(config.get("num_epochs") or 1) if steps_per_epoch else None)
    interval = config.get("eval_steps")
    if not interval and config.get("evals_per_epoch"):
        # as Axolotl turns it into a share of all steps (utils/config normalize_config), max_steps included
        interval = 1.0 / (int(config["evals_per_epoch"]) * float(config.get("num_epochs") or 1))
    if isinstance(interval, float) and interval < 1 and steps:
        interval = max(1, math.ceil(interval * steps))  # what transformers makes of a fractional eval_steps
    if not (steps and interval):
        return [Notice("val_set_size", "evaluates during training (val_set_size/test_datasets); "
                       "ARGS=\"val_set_size=0\" skips it")]
    passes = int(steps // interval)
    held_out = int(rows * val) if val < 1 else int(val)
    share = passes * held_out / max(1, steps * batch) / 3  # a forward pass is ~1/3 of a training step
    where = "on this CPU " if on_cpu else ""
    return [Notice("val_set_size", f"{passes} evaluation pass(es) {where}over {held_out} held-out rows during "
                   f"{int(steps)} steps (every {interval}): about {_share(share)} the training compute on top; "
                   "ARGS=\"val_set_size=0\" skips it")]


def _remote_code(config: dict[str, Any]) -> list[Notice]:
    if config.get("trust_remote_code"):
        return [Notice("trust_remote_code", "trust_remote_code is on: the model folder's own Python code will run in "
                       "this process; only for models whose code you have read")]
    return []


def _share(x: float) -> str:
    return f"{x:.1f}x" if x >= 1 else f"{x:.0%} of"
