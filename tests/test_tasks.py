"""Task metadata lives in the task YAMLs: what is reported and which way is better."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunebook import evaluate as ev
from tunebook.errors import TunebookError

TASKS = sorted(p.stem for p in Path("eval/tasks").glob("*.yaml"))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_names_a_main_metric_it_computes(task):
    meta = ev.task_meta(task)
    assert meta.main_metric.endswith(",none")
    assert ev.lower_is_better(task) == (task == "nba_ppl")  # only perplexity falls as the model improves


def test_a_main_metric_that_is_not_computed_is_an_error_at_its_key(tmp_path):
    shutil.copy("eval/tasks/nba_mc.yaml", tmp_path / "nba_mc.yaml")
    path = tmp_path / "nba_mc.yaml"
    path.write_text(path.read_text().replace("main_metric: acc ", "main_metric: accuracy "))
    with pytest.raises(TunebookError, match=r"metadata.main_metric: must name one of metric_list \(acc, acc_norm\)"):
        ev.task_meta("nba_mc", tmp_path)


def test_the_system_prompt_is_defined_once():
    from tunebook.data import nba

    assert ev.SYSTEM is nba.SYSTEM
    assert sum(p.read_text().count("NBA analytics assistant") for p in Path("tunebook").rglob("*.py")) == 1
