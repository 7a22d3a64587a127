"""versions.lock: a recipe whose content changes must change its version."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunebook.errors import TunebookError
from tunebook.lock import check, update
from tunebook.recipe import load_recipe

RECIPES = Path("recipes")


def test_shipped_recipes_match_the_lock():
    problems = check(RECIPES)
    assert problems == [], "\n".join(map(str, problems))


@pytest.fixture
def book(tmp_path) -> Path:
    root = tmp_path / "recipes"
    shutil.copytree(RECIPES, root)
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _version(path: Path) -> int:
    return load_recipe(path).meta.version


def _bump(path: Path) -> int:
    v = _version(path)
    _edit(path, f"  version: {v}", f"  version: {v + 1}")
    return v + 1


def test_edit_without_bump_names_the_recipe_to_bump(book):
    v = _version(book / "smollm2/lora.yaml")
    _edit(book / "smollm2/lora.yaml", "lora_r: 16", "lora_r: 8")
    (p,) = check(book)
    assert p.source == str(book / "smollm2/lora.yaml")
    assert f"bump recipe.version to {v + 1}" in p.message
    with pytest.raises(TunebookError, match="bump it first"):
        update(book)


def test_comment_only_edit_needs_no_bump(book):
    _edit(book / "smollm2/lora.yaml", "# Hardware:", "# Hardware (edited comment):")
    assert check(book) == []


def test_bump_then_lock_then_changelog(book):
    _edit(book / "smollm2/lora.yaml", "lora_r: 16", "lora_r: 8")
    v = _bump(book / "smollm2/lora.yaml")
    messages = [p.message for p in check(book)]
    assert any("lock is stale" in m for m in messages)
    assert update(book, "rank 8") == ["smollm2/lora.yaml"]
    assert check(book) == []
    assert f"## smollm2-lora v{v}" in (book / "CHANGELOG.md").read_text()


def test_changelog_entry_required_for_bumped_versions(book):
    _edit(book / "smollm2/lora.yaml", "lora_r: 16", "lora_r: 8")
    v = _bump(book / "smollm2/lora.yaml")
    update(book)
    text = (book / "CHANGELOG.md").read_text()
    (book / "CHANGELOG.md").write_text(text.replace(f"smollm2-lora v{v}", "smollm2-lora vX"))
    (p,) = check(book)
    assert f"no entry for smollm2-lora v{v}" in p.message


def test_new_recipe_must_be_locked(book):
    shutil.copy(book / "smollm2/lora.yaml", book / "smollm2/lora-copy.yaml")
    _edit(book / "smollm2/lora-copy.yaml", "name: smollm2-lora", "name: smollm2-lora-copy")
    problems = check(book)
    assert any(p.source.endswith("lora-copy.yaml") and "not in recipes/versions.lock" in p.message for p in problems)
