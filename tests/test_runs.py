"""Run directory semantics: incomplete until finish() says otherwise."""

from __future__ import annotations

import json

from tunebook.runs import MARKER, RunDir, atomic_write_json, finished_runs


def test_new_run_is_incomplete_until_finished(tmp_path):
    run = RunDir.create("demo", tmp_path)
    assert (run.path / MARKER).exists() and not run.is_complete
    run.write_record({"status": "running"})
    assert not run.is_complete and finished_runs("demo", tmp_path) == []
    run.finish({"status": "running", "x": 1})
    assert run.is_complete and not (run.path / MARKER).exists()
    assert json.loads(run.record_path.read_text())["status"] == "finished"
    assert (tmp_path / "demo" / "latest").resolve() == run.path.resolve()
    assert finished_runs("demo", tmp_path) == [run]


def test_record_with_marker_is_not_complete_even_if_it_says_finished(tmp_path):
    run = RunDir.create("demo", tmp_path)
    run.write_record({"status": "finished"})  # e.g. killed between record and marker removal
    assert not run.is_complete


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"k": 1})
    atomic_write_json(tmp_path / "a.json", {"k": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
