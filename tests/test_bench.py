"""The nightly bench: SQLite history, regression checks, concurrent writers, the CLI."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
import yaml

from tunebook.bench import Thresholds, append, connect, plot_history, previous, regressions


def _row(**kw) -> dict:
    row = {"bench_id": "b", "at": "2026-11-22T00:00:00", "recipe": "r", "version": 1, "machine_kind": "cpu-2c",
           "status": "finished", "tokens_per_s": 100.0, "peak_rss_mib": 1000.0, "quality": {"nba_mc": 0.5, "nba_ppl": 10.0}}
    row.update(kw)
    return row


def test_rows_are_stored_and_compared_with_the_previous_comparable(tmp_path):
    con = connect(tmp_path / "h.sqlite")
    first = _row()
    first["id"] = append(con, first)
    other_machine = _row(machine_kind="cuda-1xA100", tokens_per_s=5000.0)
    other_machine["id"] = append(con, other_machine)
    new = _row(tokens_per_s=99.0)
    new["id"] = append(con, new)
    prev = previous(con, new)
    assert prev["id"] == first["id"]  # same recipe, version and machine kind only
    assert regressions(new, prev, Thresholds()) == []
    assert previous(con, first) is None
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3


@pytest.mark.parametrize("change,expected", [
    ({"quality": {"nba_mc": 0.40, "nba_ppl": 10.0}}, "nba_mc 0.500 -> 0.400"),
    ({"quality": {"nba_mc": 0.5, "nba_ppl": 12.0}}, "nba_ppl perplexity"),
    ({"tokens_per_s": 60.0}, "tokens/s 100.0 -> 60.0"),
    ({"peak_rss_mib": 1400.0}, "peak RSS 1000 -> 1400"),
])
def test_planted_regressions_are_flagged(change, expected):
    (msg,) = regressions(_row(**change), _row(), Thresholds())
    assert expected in msg


def _writer(db: str, n: int, tag: str) -> None:
    con = connect(Path(db))
    for i in range(n):
        append(con, _row(bench_id=f"{tag}-{i}"))


def test_two_processes_appending_at_once_leave_a_consistent_database(tmp_path):
    db = str(tmp_path / "h.sqlite")
    connect(Path(db)).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, 60, tag)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = [r[0] for r in con.execute("SELECT bench_id FROM results")]
    assert len(ids) == 120 and len(set(ids)) == 120


def test_bench_cli_writes_history_and_exits_nonzero_on_a_planted_regression(tmp_path, tiny_llama, memorise_data, capsys,
                                                                           monkeypatch):
    import tunebook.evaluate as ev
    from conftest import write_tiny_recipe
    from tunebook.cli import main

    monkeypatch.setattr(ev, "CACHE", tmp_path / "cache")  # the tiny model's base scores stay out of runs/
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("TRACKER", "mlflow")  # each nightly row is an MLflow run too
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)

    recipe = write_tiny_recipe(Path("recipes/smollm2/lora.yaml"), tmp_path / "recipe.yaml", tiny_llama, memorise_data)
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({"recipes": [str(recipe)], "args": "max_steps=2",
                                      "eval": {"tasks": ["nba_mc"], "limit": 2}}))
    db = tmp_path / "bench" / "h.sqlite"
    # plant a previous run 1000x faster: the bench must flag a slowdown however busy this
    # machine is (one engine launch, not two: a busy machine only makes this run slower still)
    from tunebook.bench import append, connect
    from tunebook.machine import detect
    from tunebook.recipe import load_recipe

    append(connect(db), {"bench_id": "planted", "at": "then", "recipe": "smollm2-lora", "status": "finished",
                         "version": load_recipe(recipe).meta.version, "machine_kind": detect().kind,
                         "tokens_per_s": 1e9, "quality": {}})
    assert main(["bench", "--matrix", str(matrix), "--db", str(db), "--runs", str(tmp_path / "runs")]) == 1
    out = capsys.readouterr().out
    assert "vs #1 (" in out and "tok/s -" in out and "REGRESSIONS" in out
    con = sqlite3.connect(db)
    (row,) = con.execute("SELECT recipe, version, tokens_per_s, peak_rss_mib, frac_bf16_peak, frac_fp32_peak, "
                         "time_to_first_step_s, quality, git_commit, packages, achieved_flops, metrics "
                         "FROM results WHERE bench_id != 'planted'").fetchall()
    # tokens/s and peak RSS were recorded (non-zero), never compared with a threshold: a busy
    # machine changes their values, not whether they are there
    assert row[0] == "smollm2-lora" and row[2] > 0 and row[3] > 0
    # fractions of the matmul peaks measured in the same run: checked as arithmetic, not as
    # values (a busy CI machine measures a low peak, and the fraction can pass 1)
    peaks = json.loads(row[11])["peaks"]
    assert row[5] == pytest.approx(row[10] / peaks["fp32"])
    assert (row[4] is None) == (peaks["bf16"] is None)
    if peaks["bf16"] is not None:
        assert row[4] == pytest.approx(row[10] / peaks["bf16"])
    assert row[6] > 0 and "nba_mc" in json.loads(row[7]) and "axolotl" in json.loads(row[9])
    assert (db.parent / "plots" / "history.png").is_file()
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["smollm2-lora"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    (nightly,) = client.search_runs([client.get_experiment_by_name("tunebook/nightly").experiment_id])
    assert nightly.info.run_name == "smollm2-lora" and nightly.data.metrics["tokens_per_s"] == row[2]
    assert nightly.data.metrics["quality.nba_mc"] == json.loads(row[7])["nba_mc"]


def test_history_plot_draws_one_line_per_recipe_version_and_a_panel_per_task(tmp_path):
    """A version bump and a task that only some nights ran must not break the plot."""
    import matplotlib.image

    con = connect(tmp_path / "h.sqlite")
    for night, version, quality in [("20261120-0100", 1, {"nba_mc": 0.3}), ("20261121-0100", 1, {"nba_mc": 0.4}),
                                    ("20261122-0100", 2, {"nba_mc": 0.4, "control_mc": 0.9})]:
        append(con, _row(bench_id=night, version=version, quality=quality, time_to_first_step_s=5.0, frac_fp32_peak=0.5))
    (path,) = plot_history(con, tmp_path / "plots")
    height, width, _ = matplotlib.image.imread(path).shape
    assert 2.0 < width / height < 2.5  # 2 rows x 4 columns of panels (the old 1 x 3 strip was 3.5)
    assert not list((tmp_path / "plots").glob("*.tmp.png"))


def test_no_bf16_peak_is_measured_where_bf16_is_emulated():
    from tunebook.bench import matmul_peaks

    peaks = matmul_peaks(n=64, seconds=0.01, bf16=False)
    assert peaks["bf16"] is None and peaks["fp32"] > 0


def test_the_nightly_entry_point_runs_the_slow_suite():
    """Nothing else runs `-m slow`; left out of the nightly it rotted (it expected a version
    the recipe had left behind)."""
    steps = [line.split("#")[0].strip() for line in Path("scripts/nightly.sh").read_text().splitlines()]
    assert "make test-slow" in steps and steps.index("make test-slow") < next(
        i for i, s in enumerate(steps) if s.startswith("make bench"))
    assert "v1 (lora" not in Path("tests/test_slow.py").read_text()


def test_a_matrix_row_can_ask_for_several_processes():
    from tunebook.bench import Matrix

    m = Matrix.load("bench/nightly.yaml")
    assert list(zip(m.recipes, m.nproc))[-1] == ("recipes/smollm2/lora.yaml", 2)
    assert set(m.nproc[:-1]) == {1} and len(m.nproc) == len(m.recipes)
