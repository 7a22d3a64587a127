"""Run directory semantics: incomplete until finish() says otherwise."""

from __future__ import annotations

import json

from pathlib import Path

import pytest

from tunebook.records import SCHEMA_VERSION, EvalRecord, RunRecord, load
from tunebook.runs import MARKER, RunDir, atomic_write_json, finished_runs

OLD = Path("tests/data/records")  # written by tunebook before records had a schema_version


def _record(**kw) -> RunRecord:
    return RunRecord.model_validate({"schema_version": SCHEMA_VERSION, "status": "running", "run_id": "r",
                                     "run_dir": "d", "engine": "axolotl", "machine": {"kind": "cpu-2c-avx2"},
                                     "recipe": {"name": "demo", "version": 1, "method": "lora"}, **kw})


def test_new_run_is_incomplete_until_finished(tmp_path):
    run = RunDir.create("demo", tmp_path)
    assert (run.path / MARKER).exists() and not run.is_complete
    run.write_record(_record())
    assert not run.is_complete and finished_runs("demo", tmp_path) == []
    run.finish(_record(x=1))
    assert run.is_complete and not (run.path / MARKER).exists()
    assert json.loads(run.record_path.read_text())["status"] == "finished"
    assert (tmp_path / "demo" / "latest").resolve() == run.path.resolve()
    assert finished_runs("demo", tmp_path) == [run]


def test_record_with_marker_is_not_complete_even_if_it_says_finished(tmp_path):
    run = RunDir.create("demo", tmp_path)
    run.write_record(_record(status="finished"))  # e.g. killed between record and marker removal
    assert not run.is_complete


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"k": 1})
    atomic_write_json(tmp_path / "a.json", {"k": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_records_written_before_the_schema_version_still_load():
    run = load(OLD / "run-v1.json", RunRecord)
    assert run.schema_version == 1 and run.status == "finished" and run.recipe.name == "smollm2-lora"
    assert run.tokens.per_second and run.loss_curve[0].step >= 1 and run.machine.kind.startswith("cpu-")
    ev = load(OLD / "eval-v1.json", EvalRecord)
    assert ev.schema_version == 1 and ev.key is None and ev.score("nba_mc", "acc,none") is not None


def test_a_record_missing_what_readers_need_is_refused(tmp_path):
    from pydantic import ValidationError

    (tmp_path / "run.json").write_text('{"status": "finished"}')
    with pytest.raises(ValidationError):
        load(tmp_path / "run.json", RunRecord)
    run = RunDir.create("demo", tmp_path)
    atomic_write_json(run.record_path, {"status": "finished"})
    (run.path / MARKER).unlink()
    assert not run.is_complete  # unreadable: never taken for a finished run


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path):
    from tunebook.atomic import atomic_path

    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path  # writers read the format off the name
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    with atomic_path(tmp_path / "model", directory=True) as tmp:
        (tmp / "w.safetensors").write_bytes(b"x")
    assert (tmp_path / "model" / "w.safetensors").read_bytes() == b"x"


def test_every_default_location_comes_from_paths():
    """One definition of "runs", "recipes", the eval cache...: no module spells its own."""
    import re

    from tunebook.paths import Paths

    p = Paths(Path("/repo"))
    assert (p.runs, p.eval_cache, p.tasks, p.bench_db) == (
        Path("/repo/runs"), Path("/repo/runs/.eval-cache"), Path("/repo/eval/tasks"), Path("/repo/bench/history.sqlite"))
    spelled = [f"{f}: {m.group(0)}" for f in Path("tunebook").rglob("*.py") if f.name != "paths.py"
               for m in re.finditer(r'Path\("(runs|recipes|eval/tasks|bench/history|reports)[^"]*"\)', f.read_text())]
    assert spelled == []
