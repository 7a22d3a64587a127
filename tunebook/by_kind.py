"""A task's score split by the kind of question each document asks (its data's `task` or
`topic` field).

One accuracy over the whole NBA test set hides what a small model can and cannot learn:
roster facts and classifications move with training, questions that need arithmetic on a
box score (a shooting percentage from made and attempted shots) may stay at chance however
long it trains. The split says which, from the per-document scores every eval already keeps,
so nothing is scored again.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import yaml

from tunebook.evaluate import TASKS_DIR, _Loader

KIND_FIELDS = ("task", "topic", "kind")  # data/nba rows name their kind in `task`, the control set in `topic`


def doc_rows(task: str, tasks_dir: Path = TASKS_DIR) -> list[dict] | None:
    """The task's test documents in lm-eval's document order (the file's), or None when the
    task reads no local JSONL file."""
    cfg = yaml.load((Path(tasks_dir) / f"{task}.yaml").read_text(encoding="utf-8"), Loader=_Loader)
    files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
    split = cfg.get("test_split") or "test"
    rel = files.get(split) if isinstance(files, dict) else None
    if not isinstance(rel, str):
        return None
    path = Path(tasks_dir).resolve().parents[1] / rel
    if path.suffix != ".jsonl" or not path.exists():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split(task: str, columns: dict[str, list[float]], tasks_dir: Path = TASKS_DIR) -> list[dict] | None:
    """One row per kind: n scored, chance (1 / choices, averaged) and each column's mean over the
    kind's documents. Columns are per-document scores in document order; an eval with a limit
    scored only the first documents, and only those count. None when the documents carry no
    kind."""
    docs = doc_rows(task, tasks_dir)
    field = next((f for f in KIND_FIELDS if docs and all(f in d for d in docs)), None)
    if field is None:
        return None
    scored = max((len(s) for s in columns.values()), default=0)
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(docs[:scored]):
        by_kind[str(d[field])].append(i)
    out = []
    for kind, idx in sorted(by_kind.items()):
        row = {"kind": kind, "n": len(idx),
               "chance": (sum(1 / len(docs[i]["choices"]) for i in idx) / len(idx)
                          if all(docs[i].get("choices") for i in idx) else None)}
        for name, scores in columns.items():
            seen = [scores[i] for i in idx if i < len(scores)]
            row[name] = sum(seen) / len(seen) if seen else None
        out.append(row)
    return out


def markdown(rows: list[dict], columns: list[str]) -> list[str]:
    """The split as a table, best column per kind in bold; the verdict per kind left to the reader."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.0f}%"

    lines = ["| kind | n | chance | " + " | ".join(columns) + " |", "|---|---:|---:|" + "---:|" * len(columns)]
    for r in rows:
        best = max((r[c] for c in columns if r[c] is not None), default=None)
        cells = [f"**{pct(r[c])}**" if r[c] is not None and r[c] == best and len(columns) > 1 else pct(r[c])
                 for c in columns]
        lines.append(f"| {r['kind']} | {r['n']} | {pct(r['chance'])} | " + " | ".join(cells) + " |")
    return lines
