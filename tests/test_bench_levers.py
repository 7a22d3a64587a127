"""`make bench-levers`: every lever is a change tunebook accepts, and each is set against its shipped recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunebook import bench_levers as bl
from tunebook.adapt import engine_env
from tunebook.bench_engines import Result
from tunebook.machine import detect

RECIPES = {"lora": Path("recipes/smollm2/lora.yaml"), "qlora": Path("recipes/smollm2/qlora.yaml"),
           "full": Path("recipes/smollm2/full.yaml")}


@pytest.mark.parametrize("lever", bl.LEVERS, ids=lambda lv: lv.name[:40])
def test_each_lever_resolves_and_changes_what_it_names(lever):
    from tunebook.resolve import resolve

    base = resolve(RECIPES[lever.recipe], "max_steps=3 save_strategy=no save_steps=null").adapted
    cfg = resolve(RECIPES[lever.recipe], f"max_steps=3 save_strategy=no save_steps=null {lever.args}",
                  engine=lever.engine).adapted
    changed = {k for k in set(cfg) | set(base) if cfg.get(k) != base.get(k)} - {"recipe"}
    if lever.engine:
        assert cfg["recipe"]["engine"] == lever.engine
    elif lever.args:
        assert {a.split("=")[0] for a in lever.args.split()} <= changed
    else:
        assert not changed and (lever.env or lever.neighbour or "as shipped" in lever.name)


@pytest.mark.parametrize("lever", [lv for lv in bl.LEVERS if "TUNEBOOK_CPU_ATTENTION" in lv.env],
                         ids=lambda lv: lv.recipe)
def test_attention_levers_reach_each_engine(lever, monkeypatch):
    from tunebook.resolve import resolve

    shipped = resolve(RECIPES[lever.recipe], "max_steps=3").adapted["attn_implementation"]
    for key, value in lever.env.items():
        monkeypatch.setenv(key, value)
    cfg = resolve(RECIPES[lever.recipe], "max_steps=3").adapted
    assert cfg["attn_implementation"] == lever.env["TUNEBOOK_CPU_ATTENTION"] != shipped


def test_thread_lever_reaches_the_engine_environment(monkeypatch):
    machine = detect()
    monkeypatch.setenv("TUNEBOOK_THREADS", "1")
    env, changes = engine_env(machine)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert any(c.key == "env.OMP_NUM_THREADS" and c.why == "TUNEBOOK_THREADS" for c in changes)
    monkeypatch.delenv("TUNEBOOK_THREADS")
    assert engine_env(machine)[0]["OMP_NUM_THREADS"] == str(machine.cpu_count)


def test_levers_are_set_against_their_own_recipes_shipped_rate():
    lora, qlora = bl.LEVERS[0].name, next(lv.name for lv in bl.LEVERS if lv.recipe == "qlora" and "as shipped" in lv.name)
    batch = next(lv.name for lv in bl.LEVERS if lv.args == "micro_batch_size=2")
    grouped = next(lv.name for lv in bl.LEVERS if "group_by_length" in lv.args)  # a QLoRA lever
    rs = [Result(lora, "-", True, tokens_per_s=200.0), Result(batch, "m", True, tokens_per_s=250.0),
          Result(qlora, "-", True, tokens_per_s=100.0), Result(grouped, "g", True, tokens_per_s=120.0),
          Result("failed", "x", False)]
    assert sum("as shipped" in lv.name for lv in bl.LEVERS) == len(RECIPES)  # one baseline per recipe
    assert {lv.recipe for lv in bl.LEVERS} == set(RECIPES)
    bl.versus_shipped(rs)
    assert [r.vs_plain_axolotl for r in rs] == [1.0, 1.25, 1.0, 1.2, None]
    report = {"steps": 5, "machine_kind": "cpu-2c-test", "git_commit": "abc", "peaks_flops": {"bf16": 4e11, "fp32": 2e11},
              "results": [{**r.__dict__, "frac_bf16_peak": 0.2, "frac_fp32_peak": 0.4, "peak_rss_mib": 1.0} for r in rs]}
    text = bl.table(report)
    assert "| 20% |" in text and "1.25" in text and "failed" in text


def test_a_partial_run_replaces_its_rows_and_keeps_the_others():
    a, b, c = (lv.name for lv in bl.LEVERS[:3])
    old = [Result(a, "-", True, tokens_per_s=200.0), Result(b, "x", True, tokens_per_s=100.0),
           Result("retired lever", "y", True, tokens_per_s=1.0)]
    new = [Result(c, "z", True, tokens_per_s=300.0), Result(b, "x", True, tokens_per_s=150.0)]
    rows = bl.merge(new, old)
    assert [r.name for r in rows] == [a, b, c]
    assert [r.tokens_per_s for r in rows] == [200.0, 150.0, 300.0]
    assert [r.vs_plain_axolotl for r in rows[:3]] == [1.0, 0.75, 1.5]


@pytest.mark.matrix  # a bench-harness training (~30 s): nightly with the plain-Unsloth one; make test was 637.5 s on a slow hour
def test_a_lever_is_trained_timed_and_written(tiny_llama, tmp_path):
    """The whole `make bench-levers` path for one lever on a tiny model: the child trains, its
    progress bar times it (every step drawn, however fast), run.json gives its tokens, the report and table are written. (The
    watcher's signature once changed under it and every lever failed before its first step.)"""
    from conftest import write_tiny_recipe

    data = Path("data/nba/train.jsonl").resolve()  # enough rows for four packed steps
    recipes = {k: write_tiny_recipe(p, tmp_path / f"{k}.yaml", tiny_llama, data) for k, p in RECIPES.items()}
    report = bl.run(recipes, 4, tmp_path / "out", only="^LoRA as shipped", echo=lambda *_: None)
    (row,) = report["results"]
    assert row["name"].startswith("LoRA as shipped") and row["ok"], row
    # (tiny steps can reach the pipe in one read, so the rate itself is not asserted)
    assert row["steps"] == 4 and row["tokens_real"] > 0 and row["steady_s"] is not None
    assert "LoRA as shipped" in (tmp_path / "out" / "latest.md").read_text()
