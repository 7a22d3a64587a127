"""The per-kind split of a task reads each document's kind off the task's own data file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunebook import by_kind


@pytest.fixture
def tasks_dir(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    docs = [{"question": f"q{i}", "choices": ["a", "b"] if i % 2 else ["a", "b", "c", "d"], "label": 0,
             "task": "facts" if i < 4 else "maths"} for i in range(6)]
    (tmp_path / "data" / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    tasks = tmp_path / "eval" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "mc.yaml").write_text("task: mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                   "    test: data/mc.jsonl\ntest_split: test\noutput_type: multiple_choice\n")
    return tasks


def test_each_kind_averages_its_own_documents(tasks_dir):
    rows = by_kind.split("mc", {"base": [0, 0, 1, 0, 0, 1], "lora": [1, 1, 1, 0, 1, 1]}, tasks_dir)
    facts, maths = rows  # sorted by kind
    assert (facts["kind"], facts["n"], facts["base"], facts["lora"]) == ("facts", 4, 0.25, 0.75)
    assert (maths["kind"], maths["n"], maths["base"], maths["lora"]) == ("maths", 2, 0.5, 1.0)
    # chance is one over the number of choices, averaged over the kind's documents
    assert facts["chance"] == pytest.approx((0.25 + 0.5 + 0.25 + 0.5) / 4) and maths["chance"] == pytest.approx(0.375)
    table = "\n".join(by_kind.markdown(rows, ["base", "lora"]))
    assert "| facts | 4 | 38% | 25% | **75%** |" in table


def test_a_limited_eval_counts_only_the_documents_it_scored(tasks_dir):
    rows = by_kind.split("mc", {"base": [1, 0, 1], "lora": [1, 1, 1]}, tasks_dir)
    assert [(r["kind"], r["n"], r["base"]) for r in rows] == [("facts", 3, pytest.approx(2 / 3))]


def test_documents_without_a_kind_give_no_split(tasks_dir):
    path = tasks_dir.parents[1] / "data" / "mc.jsonl"
    path.write_text("".join(json.dumps({"question": "q", "choices": ["a"], "label": 0}) + "\n" for _ in range(3)))
    assert by_kind.split("mc", {"base": [1, 0, 1]}, tasks_dir) is None


def test_the_control_sets_topic_names_the_kind_when_there_is_no_task(tasks_dir):
    path = tasks_dir.parents[1] / "data" / "mc.jsonl"
    docs = [{"question": "q", "choices": ["a", "b"], "label": 0, "topic": t} for t in ("maths", "maps", "maths")]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    rows = by_kind.split("mc", {"base": [1, 0, 0]}, tasks_dir)
    assert [(r["kind"], r["n"], r["base"]) for r in rows] == [("maps", 1, 0.0), ("maths", 2, 0.5)]
