"""The promised errors: file, line, key, a did-you-mean; exit code 2 and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunebook.errors import TunebookError
from tunebook.recipe import apply_overrides, load_recipe, parse_overrides
from tunebook.validation import validate

LORA = Path("recipes/smollm2/lora.yaml")


def edited(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """Copy the LoRA recipe with one edit; return the path and the 1-based line edited."""
    text = LORA.read_text(encoding="utf-8")
    assert old in text
    line = text[: text.index(old)].count("\n") + 1
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path, line


def problems_of(path: Path, args: str = "") -> list:
    with pytest.raises(TunebookError) as info:
        recipe, overrides = load_recipe(path), parse_overrides(args)
        validate(apply_overrides(recipe.config, overrides), recipe.where(overrides))
    assert info.value.exit_code == 2
    return info.value.problems


def test_unknown_key_in_file_names_file_line_and_closest_key(tmp_path):
    path, line = edited(tmp_path, "lora_r: 16", "lora_rank: 16")
    (p,) = problems_of(path)
    assert (p.source, p.line, p.key) == (str(path), line, "lora_rank")
    assert "did you mean 'lora_r'" in str(p)
    assert str(p).startswith(f"{path}:{line}: lora_rank:")


def test_unknown_key_in_args_is_attributed_to_args():
    (p,) = problems_of(LORA, "lora_rnk=4")
    assert p.source == "ARGS" and p.key == "lora_rnk" and "did you mean 'lora_r'" in p.message


def test_unknown_key_inside_a_dataset_entry(tmp_path):
    path, line = edited(tmp_path, "    field_messages: messages", "    field_mesages: messages")
    (p,) = problems_of(path)
    assert p.key == "datasets.0.field_mesages" and p.line == line
    assert "did you mean 'field_messages'" in p.message


def test_unknown_key_in_recipe_block(tmp_path):
    path, line = edited(tmp_path, "  family: smollm2", "  famly: smollm2")
    ps = problems_of(path)
    keys = {p.key: p for p in ps}
    assert "recipe.famly" in keys and keys["recipe.famly"].line == line
    assert "did you mean 'family'" in keys["recipe.famly"].message
    assert "recipe.family" in keys  # and the required key is reported missing


def test_wrong_type_names_the_key_and_line(tmp_path):
    path, line = edited(tmp_path, "micro_batch_size: 1", "micro_batch_size: four")
    (p,) = problems_of(path)
    assert (p.key, p.line) == ("micro_batch_size", line)
    assert "integer" in p.message


def test_wrong_value_in_recipe_block(tmp_path):
    path, line = edited(tmp_path, "  method: lora", "  method: lorra")
    (p,) = problems_of(path)
    assert (p.key, p.line) == ("recipe.method", line)
    assert "'qlora'" in p.message


def test_impossible_combination_qlora_without_4bit(tmp_path):
    path, _ = edited(tmp_path, "adapter: lora", "adapter: qlora")
    (p,) = problems_of(path)
    assert p.key == "load_in_4bit"
    assert "load_in_4bit" in p.message and "qlora" in p.message


def test_invalid_yaml_reports_the_line(tmp_path):
    path, line = edited(tmp_path, "lora_alpha: 32", "lora_alpha: [32")
    with pytest.raises(TunebookError) as info:
        load_recipe(path)
    (p,) = info.value.problems
    assert "not valid YAML" in p.message and p.line is not None and p.line >= line


def test_missing_recipe_block(tmp_path):
    text = LORA.read_text(encoding="utf-8")
    start = text.index("recipe:\n")
    end = text.index("base_model:")
    path = tmp_path / "r.yaml"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    (p,) = problems_of(path)
    assert p.key == "recipe" and "missing" in p.message


def test_overrides_parse_yaml_values_and_reject_garbage():
    assert parse_overrides("lora_r=8 bf16=true learning_rate=1e-4 x.0.y=a") == {
        "lora_r": 8, "bf16": True, "learning_rate": 1e-4, "x.0.y": "a"}
    # YAML 1.2 booleans only: `no` is Axolotl's save_strategy value, not False
    assert parse_overrides("save_strategy=no bf16=False load_in_4bit=yes") == {
        "save_strategy": "no", "bf16": False, "load_in_4bit": "yes"}
    with pytest.raises(TunebookError, match="expected key=value"):
        parse_overrides("lora_r")


