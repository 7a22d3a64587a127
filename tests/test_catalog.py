"""`make list` and `make new` (copy-and-tweak), including training the copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunebook.catalog import new_recipe, render_table, rows
from tunebook.errors import TunebookError
from tunebook.lock import check
from tunebook.recipe import load_recipe
from tunebook.train import train


def test_list_covers_five_families_and_every_method():
    items = rows()
    assert len(items) >= 15
    assert {r["family"] for r in items} >= {"smollm2", "llama3", "qwen3", "gemma3", "mistral"}
    for family in ("smollm2", "llama3", "qwen3", "gemma3", "mistral"):
        assert {"full", "lora", "qlora"} <= {r["method"] for r in items if r["family"] == family}, family
    assert all(r["memory"] != "?" and r["trainable"] != "?" for r in items)
    # single-process QLoRA goes through Unsloth; sharded QLoRA (FSDP) is Axolotl's multi-process path
    assert all(r["engine"] == "unsloth" for r in items if r["method"] == "qlora" and "fsdp" not in r["recipe"])
    table = render_table(items)
    assert "recipes/smollm2/lora.yaml" in table and f"{len(items)} recipes, " in table


def test_list_cli_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "tunebook", "list"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "recipes/mistral/qlora.yaml" in out.stdout


@pytest.fixture
def book(tmp_path) -> Path:
    root = tmp_path / "recipes"
    shutil.copytree("recipes", root)
    return root


def test_new_copies_with_new_name_version_1_provenance_and_lock(book):
    dest = new_recipe(book / "smollm2/qlora.yaml", book / "my-team/qlora.yaml", root=book)
    recipe = load_recipe(dest)
    assert recipe.meta.name == "my-team-qlora" and recipe.meta.version == 1
    version = load_recipe(book / "smollm2/qlora.yaml").meta.version
    assert dest.read_text().startswith(f"# Copied from {(book / 'smollm2/qlora.yaml').as_posix()} (smollm2-qlora v{version}, sha256:")
    assert "make train RECIPE=recipes/my-team/qlora.yaml" in dest.read_text()
    assert "smollm2/qlora.yaml" not in dest.read_text().split("\n", 1)[1]
    assert load_recipe(dest).config["output_dir"] == "runs/my-team-qlora/axolotl-direct"
    assert check(book) == []
    locked = yaml.safe_load((book / "versions.lock").read_text())
    assert locked["my-team/qlora.yaml"]["version"] == 1
    assert "my-team-qlora v1" in (book / "CHANGELOG.md").read_text()


def test_new_refuses_to_overwrite_or_reuse_a_name(book):
    with pytest.raises(TunebookError, match="already exists"):
        new_recipe(book / "smollm2/lora.yaml", book / "smollm2/full.yaml", root=book)
    new_recipe(book / "smollm2/lora.yaml", book / "a-b/c.yaml", root=book)  # name a-b-c
    with pytest.raises(TunebookError, match="already used"):
        new_recipe(book / "smollm2/lora.yaml", book / "a/b-c.yaml", root=book)  # also a-b-c
    assert not (book / "a/b-c.yaml").exists()


def test_new_gives_a_copy_train_accepts(book, tiny_llama, memorise_data):
    """What `make train` checks before launching, in milliseconds (the launch itself: below, nightly)."""
    from tunebook.resolve import resolve

    dest = new_recipe(book / "smollm2/lora.yaml", book / "my-team/lora.yaml", root=book)
    resolved = resolve(dest, f"base_model={tiny_llama} datasets.0.path={memorise_data} max_steps=2 sequence_len=128")
    assert resolved.meta.name == "my-team-lora" and resolved.meta.version == 1
    assert resolved.adapted["max_steps"] == 2 and resolved.data and resolved.data[0].rows > 0


@pytest.mark.matrix
def test_new_then_train_the_copy(book, tiny_llama, memorise_data, tmp_path):
    dest = new_recipe(book / "smollm2/lora.yaml", book / "my-team/lora.yaml", root=book)
    args = f"base_model={tiny_llama} datasets.0.path={memorise_data} max_steps=2 sequence_len=128"
    run = train(dest, args, runs_root=tmp_path / "runs", echo=False)
    record = json.loads((run.path / "run.json").read_text())
    assert record["status"] == "finished" and record["recipe"]["name"] == "my-team-lora"
    assert run.path.parent.name == "my-team-lora"
