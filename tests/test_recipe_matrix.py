"""Every shipped recipe trains 2 steps through its own engine on a tiny model of its own
architecture, with its own chat template. A recipe dropped into recipes/ is picked up here.

`make test` trains one recipe per engine and method (spread over the families that
tests/test_train.py does not train; sharded recipes excepted); the rest carry the `matrix` marker and run nightly
(`make test-matrix`, scripts/nightly.sh). tests/test_recipe_configs.py checks every recipe
on every `make test`, in seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tiny_models import fold_skip_list
from tunebook.lock import discover
from tunebook.recipe import load_recipe
from tunebook.train import train

RECIPES = discover(Path("recipes"))


def one_per_engine_and_method(paths: list[Path]) -> set[Path]:
    """For each (engine, method), the recipe of the family picked least so far (smollm2 last:
    test_train.py trains its full, lora and qlora already)."""
    metas = {p: load_recipe(p).meta for p in paths}
    picked: dict[tuple[str, str], Path] = {}
    count: Counter[str] = Counter()
    for p in paths:
        pair = (metas[p].engine, metas[p].method)
        if pair not in picked:
            same = [c for c in paths if (metas[c].engine, metas[c].method) == pair]
            best = min(same, key=lambda c: (metas[c].family == "smollm2", count[metas[c].family], str(c)))
            picked[pair] = best
            count[metas[best].family] += 1
    return set(picked.values())


def sharded(path: Path) -> bool:
    """FSDP/DeepSpeed recipes: on a CPU their sharding keys are dropped, and what is left trains
    the path of their engine and method, which an unsharded recipe covers; they run nightly."""
    cfg = load_recipe(path).config
    return bool(cfg.get("deepspeed") or cfg.get("fsdp") or cfg.get("fsdp_config"))


QUICK = one_per_engine_and_method([p for p in RECIPES if not sharded(p)])


def tiny_copy(path: Path, model: Path, work: Path) -> Path:
    """The recipe as shipped, but small: tiny model, 48 rows, 2 steps, no checkpoints.

    48 rows, not 8: packed recipes put several rows in each 256-token pack, and 2 steps of
    2 packs need more than 8 short rows."""
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    ds = cfg["datasets"][0]
    src = Path(ds["path"])
    data = work / src.name
    data.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:48]), encoding="utf-8")
    ds["path"] = str(data)
    fold_skip_list(cfg)  # its 16-bit modules, on the tiny model's 2 layers
    cfg.update(base_model=str(model), max_steps=2, micro_batch_size=2, gradient_accumulation_steps=1,
               sequence_len=256, logging_steps=1, save_strategy="no", dataset_prepared_path=str(work / "prepared"),
               output_dir=str(work / "direct"))
    for key in ("saves_per_epoch", "save_steps", "warmup_ratio"):
        cfg.pop(key, None)
    out = work / path.name
    out.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return out


@pytest.mark.parametrize("path", [p if p in QUICK else pytest.param(p, marks=pytest.mark.matrix) for p in RECIPES],
                         ids=lambda p: p.as_posix())
def test_recipe_trains_on_a_tiny_model_of_its_family(path, tiny_models, tmp_path):
    meta = load_recipe(path).meta
    recipe = tiny_copy(path, tiny_models(meta.family), tmp_path)
    run = train(recipe, runs_root=tmp_path / "runs", echo=False)
    record = json.loads((run.path / "run.json").read_text())
    assert record["status"] == "finished" and record["engine"] == meta.engine
    assert record["steps"] == 2 and len(record["loss_curve"]) == 2
    assert all(p["loss"] == p["loss"] for p in record["loss_curve"])  # no NaN
    out = run.output
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    if cfg.get("adapter"):
        adapter_cfg = json.loads((out / "adapter_config.json").read_text())
        assert (out / "adapter_model.safetensors").is_file()
        assert adapter_cfg["r"] == cfg["lora_r"]
        assert adapter_cfg.get("use_dora", False) == bool(cfg.get("peft_use_dora"))
        assert adapter_cfg.get("use_rslora", False) == bool(cfg.get("peft_use_rslora"))
        # 2 layers x 7 projections, less those the recipe keeps 16-bit
        expected4 = 14 - len(fold_skip_list(cfg)) if cfg.get("load_in_4bit") else 0
        assert record["params"]["linear4bit_modules"] == expected4
    else:
        assert (out / "model.safetensors").is_file()
    if cfg.get("rl") == "dpo":
        assert "rewards/margins" in record["last_log"], record["last_log"]


def test_make_test_trains_one_recipe_per_engine_and_method():
    quick = {(load_recipe(p).meta.engine, load_recipe(p).meta.method) for p in QUICK}
    every = {(load_recipe(p).meta.engine, load_recipe(p).meta.method) for p in RECIPES if not sharded(p)}
    assert quick == every and len(QUICK) == len(every)
    # a pair only sharded recipes have is trained in make test elsewhere: QLoRA through Axolotl
    # (test_train.py's ENGINE=axolotl override of the smollm2 qlora recipe)
    only_sharded = {(load_recipe(p).meta.engine, load_recipe(p).meta.method) for p in RECIPES if sharded(p)} - every
    assert only_sharded <= {("axolotl", "qlora")}, only_sharded
