"""The control task (eval/data/control.jsonl) measures forgetting, so its gold answers must be
right: every arithmetic answer is recomputed here from the question text, not from the
generator, and the shipped file must be exactly what the seeded generator writes."""

from __future__ import annotations

import collections
import json
import operator
import re
import subprocess
import sys
from pathlib import Path

CONTROL = Path("eval/data/control.jsonl")
ROWS = [json.loads(line) for line in CONTROL.read_text(encoding="utf-8").splitlines()]


def test_shipped_file_is_what_the_seeded_generator_writes(tmp_path):
    out = tmp_path / "control.jsonl"
    subprocess.run([sys.executable, "scripts/make_control_task.py", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == CONTROL.read_bytes(), "eval/data/control.jsonl is stale: run `make control`"


def test_two_hundred_well_formed_four_way_questions():
    assert len(ROWS) == 200
    assert len({r["question"] for r in ROWS}) == 200, "a question is repeated"
    for r in ROWS:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4, r
        assert r["label"] in range(4), r
    # the gold answer is not parked in one position (a model that always picks "A" must not score)
    counts = collections.Counter(r["label"] for r in ROWS)
    assert all(counts[i] >= 30 for i in range(4)), counts
    topics = collections.Counter(r["topic"] for r in ROWS)
    assert set(topics) == {"arithmetic", "geography", "chemistry", "general"} and min(topics.values()) >= 20


def test_every_arithmetic_answer_is_right_and_the_only_right_choice():
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    arithmetic = [r for r in ROWS if r["topic"] == "arithmetic"]
    assert len(arithmetic) >= 50
    for r in arithmetic:
        a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", r["question"]).groups()
        right = str(ops[op](int(a), int(b)))
        assert [c for c in r["choices"] if c == right] == [right], r
        assert r["choices"][r["label"]] == right, r


def test_table_questions_point_at_their_known_answer():
    """Spot checks of the hand-written tables, so a shuffled label would show."""
    known = {"What is the capital of Australia?": "Canberra", "What is the capital of Canada?": "Ottawa",
             "What is the chemical symbol for gold?": "Au", "What is the chemical symbol for potassium?": "K",
             "Which planet is closest to the Sun?": "Mercury", "How many days are in a leap year?": "366"}
    by_q = {r["question"]: r for r in ROWS}
    for q, answer in known.items():
        assert by_q[q]["choices"][by_q[q]["label"]] == answer
