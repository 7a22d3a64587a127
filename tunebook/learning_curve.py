"""Task score against training tokens, from the checkpoints a run saved.

One number per checkpoint tells a user what the final score alone cannot: whether the model
was still improving when training stopped (train longer) or had flattened (train differently).
Each checkpoint is loaded exactly as `evaluate` loads the final model (an adapter on the base
it was trained on, 4-bit NF4 for QLoRA; a full checkpoint as is), and scored with the same
lm-eval task and limit. The last point is the run's own eval.json, the first the base model's.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from tunebook.runs import RunDir, atomic_write_json

TASK = "nba_mc"
METRIC = "acc,none"
FILE = "learning_curve.json"


@dataclass(frozen=True)
class Point:
    step: int
    tokens: int  # real training tokens seen by this step (the run's tokens per step, pro rata)
    score: float
    stderr: float | None
    source: str  # "base", "checkpoint-N" or "final"


def checkpoints(run: RunDir) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint the trainer saved, in step order."""
    found = []
    for p in run.output.glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _tokens_at(record: dict, step: int) -> int:
    steps = record.get("steps") or 0
    total = (record.get("tokens") or {}).get("total") or 0
    return round(total * step / steps) if steps else 0


def _score_checkpoint(run: RunDir, folder: Path, limit: int | None) -> dict:
    from tunebook.engines.unsloth import axolotl_template
    from tunebook.evaluate import build_model, run_lm_eval
    from tunebook.loading import run_config

    cfg = run_config(run)
    template = cfg.get("chat_template")
    text = axolotl_template(template) if template and template != "tokenizer_default" else None
    if (folder / "adapter_config.json").exists():
        model, tok = build_model(cfg["base_model"], folder, four_bit=bool(cfg.get("load_in_4bit")), chat_template=text)
    else:
        model, tok = build_model(str(folder), chat_template=text)
    return run_lm_eval(model, tok, [TASK], limit)[TASK]


def compute(run: RunDir, limit: int | None) -> list[Point]:
    """Score every checkpoint but the last (the final model is already in eval.json)."""
    record = run.read_record()
    ev = json.loads((run.path / "eval.json").read_text())
    stderr = METRIC.replace(",", "_stderr,")
    base = ev["base"]["results"][TASK]
    points = [Point(0, 0, base[METRIC], base.get(stderr), "base")]
    final_step = record.get("steps") or 0
    for step, folder in checkpoints(run):
        if step >= final_step:
            continue
        res = _score_checkpoint(run, folder, limit)
        points.append(Point(step, _tokens_at(record, step), res[METRIC], res.get(stderr), folder.name))
    final = ev["results"][TASK]
    points.append(Point(final_step, _tokens_at(record, final_step), final[METRIC], final.get(stderr), "final"))
    return points


def ensure(run: RunDir, limit: int | None) -> list[Point]:
    """The run's learning curve, computed once per eval limit and kept in the run directory."""
    path = run.path / FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("limit") == limit and saved.get("task") == TASK:
            return [Point(**p) for p in saved["points"]]
    points = compute(run, limit)
    atomic_write_json(path, {"task": TASK, "metric": METRIC, "limit": limit, "points": [asdict(p) for p in points]})
    return points
