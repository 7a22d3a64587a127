"""Scoring for nba_qa: exact sentence, the numbers that matter, and ROUGE-L."""

from __future__ import annotations

import re

_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().lower()).rstrip(".")


def numbers_match(pred: str, gold: str, rel_tol: float = 0.01) -> bool:
    """Every number of the gold answer appears in the prediction, within 1% (stats round)."""
    want = [float(x) for x in _NUM.findall(gold)]
    have = [float(x) for x in _NUM.findall(pred)]
    if not want:
        return _norm(gold).split(",")[0] in _norm(pred)  # yes/no and team facts: the lead clause
    return all(any(abs(h - w) <= rel_tol * max(1.0, abs(w)) for h in have) for w in want)


def process_qa(doc: dict, results: list[str]) -> dict:
    from rouge_score import rouge_scorer

    pred, gold = results[0], doc["answer"]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return {
        "exact_match": float(_norm(pred) == _norm(gold)),
        "numeric_match": float(numbers_match(pred, gold)),
        "rougeL": scorer.score(gold, pred)["rougeL"].fmeasure,
    }
