"""Every shipped recipe: valid under tunebook and Axolotl, self-describing, uniquely named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunebook.lock import discover
from tunebook.recipe import load_recipe
from tunebook.validation import validate_recipe

RECIPES = discover(Path("recipes"))


def test_recipes_exist():
    assert {p.as_posix() for p in RECIPES} >= {
        "recipes/smollm2/full.yaml", "recipes/smollm2/lora.yaml", "recipes/smollm2/qlora.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.as_posix())
def test_recipe_validates(path):
    validate_recipe(load_recipe(path))  # raises TunebookError listing every problem


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.as_posix())
def test_recipe_opens_with_its_run_commands(path):
    head = path.read_text(encoding="utf-8").split("recipe:", 1)[0]
    assert all(line.startswith("#") or not line.strip() for line in head.splitlines())
    assert f"make train RECIPE={path.as_posix()}" in head
    assert "Hardware:" in head


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.as_posix())
def test_recipe_block_matches_its_place(path):
    meta = load_recipe(path).meta
    assert meta.name == f"{path.parent.name}-{path.stem}"  # runs/<name>/ is predictable from the path
    if path.parent.name == meta.family:  # the shipped layout: recipes/<family>/<method>.yaml
        assert path.stem.split("-")[0] == meta.method


def test_recipe_names_are_unique():
    names = [load_recipe(p).meta.name for p in RECIPES]
    assert len(names) == len(set(names))


def test_axolotl_validate_config_accepts_recipes_unchanged():
    """The file as a user would hand it to `axolotl train`: Axolotl's loader, untouched."""
    import yaml
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    for path in RECIPES:
        cfg = validate_config(DictDefault(yaml.safe_load(path.read_text(encoding="utf-8"))))
        assert cfg.base_model and "recipe" not in cfg  # Axolotl ignores the recipe: block


@pytest.mark.parametrize("block,key", [
    ("recipe:\n  name: x\n", "recipe.version"),                       # missing field
    ("recipe:\n  name: x\n  version: one\n  family: f\n  method: lora\n", "recipe.version"),  # wrong type
    ("recipe:\n  name: x\n  version: 1\n  family: f\n  method: lora\n  colour: red\n", "recipe.colour"),  # unknown
    ("base_model: m\n", "recipe"),                                   # no block at all
])
def test_broken_recipe_block_is_the_projects_error(tmp_path, block, key):
    """`Recipe.meta` (read by list, chat, merge, eval, compare) names file, line and key, no traceback."""
    from tunebook.errors import TunebookError

    path = tmp_path / "r.yaml"
    path.write_text(block + "adapter: lora\n", encoding="utf-8")
    with pytest.raises(TunebookError) as exc:
        load_recipe(path).meta
    problem = exc.value.problems[0]
    assert problem.source == str(path) and problem.key == key
    assert key == "recipe" or problem.line is not None


def test_make_list_with_a_broken_recipe_is_one_clean_error(tmp_path):
    """`make list` lists the rest and names the broken one at its line (tunebook.lock.recipes)."""
    from tunebook.catalog import rows
    from tunebook.lock import recipes

    (tmp_path / "fam").mkdir()
    (tmp_path / "fam" / "lora.yaml").write_text("recipe:\n  name: x\n  method: lora\n", encoding="utf-8")
    assert rows(tmp_path) == []
    assert any(str(p).startswith(f"{tmp_path / 'fam' / 'lora.yaml'}:1: recipe.version") for p in recipes(tmp_path)[1])
