"""versions.lock: a recipe whose content changes must change its version."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tunebook.errors import TunebookError
from tunebook.lock import check, update

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


def test_edit_without_bump_names_the_recipe_to_bump(book):
    _edit(book / "smollm2/lora.yaml", "lora_r: 16", "lora_r: 8")
    (p,) = check(book)
    assert p.source == str(book / "smollm2/lora.yaml")
    assert "bump recipe.version to 2" in p.message
    with pytest.raises(TunebookError, match="bump it first"):
        update(book)


def test_comment_only_edit_needs_no_bump(book):
    _edit(book / "smollm2/lora.yaml", "# Hardware:", "# Hardware (edited comment):")
    assert check(book) == []


def test_bump_then_lock_then_changelog(book):
    _edit(book / "smollm2/lora.yaml", "lora_r: 16", "lora_r: 8")
    _edit(book / "smollm2/lora.yaml", "  version: 1", "  version: 2")
    messages = [p.message for p in check(book)]
    assert any("lock is stale" in m for m in messages)
    assert update(book, "rank 8") == ["smollm2/lora.yaml"]
    assert check(book) == []
    assert "## smollm2-lora v2" in (book / "CHANGELOG.md").read_text()


def test_changelog_entry_required_for_bumped_versions(book):
    _edit(book / "smollm2/lora.yaml", "lora_r: 16", "lora_r: 8")
    _edit(book / "smollm2/lora.yaml", "  version: 1", "  version: 2")
    update(book)
    text = (book / "CHANGELOG.md").read_text()
    (book / "CHANGELOG.md").write_text(text.replace("smollm2-lora v2", "smollm2-lora vX"))
    (p,) = check(book)
    assert "no entry for smollm2-lora v2" in p.message


def test_new_recipe_must_be_locked(book):
    shutil.copy(book / "smollm2/lora.yaml", book / "smollm2/lora-copy.yaml")
    _edit(book / "smollm2/lora-copy.yaml", "name: smollm2-lora", "name: smollm2-lora-copy")
    (p,) = check(book)
    assert "not in recipes/versions.lock" in p.message
