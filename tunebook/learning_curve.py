"""Task score against training tokens, from the checkpoints a run saved.

One number per checkpoint tells a user what the final score alone cannot: whether the model
was still improving when training stopped (train longer) or had flattened (train differently).
Each checkpoint is loaded exactly as `evaluate` loads the final model (an adapter on the base
it was trained on, 4-bit NF4 for QLoRA; a full checkpoint as is), and scored with the same
lm-eval task. Every point of a curve, base (0 tokens) and final model included, is scored on
the same first `CAP` documents: ~2 minutes a point on 2 cores, where the whole 400 would be
4; at 200 documents a point's stderr is ~3.5 accuracy points.
"""

from __future__ import annotations

import json
import time
import math
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from tunebook.evaluate import main_metric
from tunebook.records import RunRecord
from tunebook.runs import RunDir, atomic_write_json

TASK = "nba_mc"
METRIC = main_metric(TASK)
FILE = "learning_curve.json"
CAP = 200


def curve_limit(limit: int | None) -> int:
    return min(limit, CAP) if limit else CAP


@dataclass(frozen=True)
class Point:
    step: int
    tokens: int  # real training tokens seen by this step (the run's tokens per step, pro rata)
    score: float
    stderr: float | None
    source: str  # "base", "checkpoint-N" or "final"


def verdict(points: list[dict]) -> str:
    """What the curve's second half says, in the words a user acts on.

    The change from the point nearest half the training tokens to the final one, set against
    the final point's stderr: inside it the curve is flat and more of the same training would
    not help; above it, it would."""
    trained = [p for p in points if p["tokens"] > 0]
    if len(trained) < 2:
        return "too few checkpoints to tell"
    final = trained[-1]
    mid = min(trained[:-1], key=lambda p: abs(p["tokens"] - final["tokens"] / 2))
    delta, se = final["score"] - mid["score"], final.get("stderr") or 0.0
    trend = f"{delta * 100:+.1f} points over the second half (stderr {se * 100:.1f})"
    if abs(delta) <= se:
        return f"flat: {trend}; more of the same training would not help"
    return f"{'still rising' if delta > 0 else 'falling'}: {trend}" + (
        "; more training would help" if delta > 0 else "; stop earlier or lower the learning rate")


def checkpoints(run: RunDir) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint the trainer saved, in step order."""
    found = []
    for p in run.output.glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _tokens_at(record: RunRecord, step: int) -> int:
    steps = record.steps or 0
    total = record.tokens.total or 0
    return round(total * step / steps) if steps else 0


def _score(run: RunDir, folder: Path, limit: int | None) -> dict:
    from tunebook.evaluate import run_lm_eval
    from tunebook.loading import load, run_config

    loaded = load(run_config(run), folder)
    return run_lm_eval(loaded.model, loaded.tokenizer, [TASK], limit)[TASK]


def _first(values: list[float] | None, n: int) -> tuple[float, float] | None:
    """(mean, stderr) of the first n documents' scores, as lm-eval computes them for `limit=n`
    (sample standard deviation over sqrt(n)); None when fewer than n were scored."""
    if not values or len(values) < n:
        return None
    head = values[:n]
    return statistics.fmean(head), (statistics.stdev(head) / math.sqrt(n) if n > 1 else 0.0)


def compute(run: RunDir, limit: int | None) -> list[Point]:
    """Score the base, every checkpoint and the final model on the curve's documents.

    The base and final points come from the run's eval (its per-document scores, first `n`
    documents) when that eval covered them: those two models were just scored on the whole
    test set, and scoring them again cost ~2 minutes a point (4 of a report's ~13 points)."""
    from tunebook.evaluate import current_eval, evaluate_base
    from tunebook.loading import run_config

    record, cfg = run.read_record(), run_config(run)
    n = curve_limit(limit)
    stderr = METRIC.replace(",", "_stderr,")
    ev = current_eval(run)
    base = _first(ev.base.per_doc.get(TASK) if ev else None, n)
    if base is None:
        res = evaluate_base(cfg, [TASK], n)["results"][TASK]
        base = res[METRIC], res.get(stderr)
    points = [Point(0, 0, *base, "base")]
    final_step = record.steps or 0
    for step, folder in [*[c for c in checkpoints(run) if c[0] < final_step], (final_step, run.output)]:
        known = _first(ev.per_doc.get(TASK) if ev else None, n) if folder == run.output else None
        if known is None:
            res = _score(run, folder, n)
            known = res[METRIC], res.get(stderr)
        points.append(Point(step, _tokens_at(record, step), *known, folder.name if folder != run.output else "final"))
    return points


def ensure(run: RunDir, limit: int | None) -> list[Point]:
    """The run's learning curve, computed once per eval limit and kept in the run directory."""
    path = run.path / FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("limit") == curve_limit(limit) and saved.get("task") == TASK:
            return [Point(**p) for p in saved["points"]]
    t0 = time.time()
    points = compute(run, limit)
    atomic_write_json(path, {"task": TASK, "metric": METRIC, "limit": curve_limit(limit),
                             "points": [asdict(p) for p in points], "seconds": round(time.time() - t0, 1)})
    return points
