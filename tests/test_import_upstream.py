"""Axolotl's own examples (tests/data/upstream, copied byte for byte with their SOURCE) become
tunebook recipes in one command, or are refused for a reason named here.

Importing validates against the installed Axolotl in milliseconds per file; training an
imported example is one engine launch (the llama-3 one here, the other families nightly).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunebook.catalog import import_recipe, rows
from tunebook.errors import TunebookError
from tunebook.lock import check, read_lock, update
from tunebook.recipe import load_recipe

UPSTREAM = Path("tests/data/upstream")
EXAMPLES = sorted(p.relative_to(UPSTREAM).as_posix() for p in (UPSTREAM / "examples").rglob("*.y*ml"))

# refused, and why: Axolotl 0.19 has no such key (it would drop it silently), or tunebook has
# no recipe method for that kind of training yet
REFUSED = {
    "examples/llama-3/instruct-dpo-lora-8b.yml": "datasets.0.message_property_mappings: unknown key",
    "examples/llama-3/lora-1b-deduplicate-dpo.yml": "datasets.0.roles: unknown key",
    "examples/mistral/dpo/mistral-dpo-qlora.yml": "datasets.0.message_property_mappings: unknown key",
    "examples/qwen2/dpo.yaml": "datasets.0.roles: unknown key",
    "examples/llama-3/lora-1b-sample-packing-sequentially.yml": "test_value: unknown key",
    "examples/phi/phi3-ft.yml": "debug: unknown key",
    "examples/llama-3/qlora-1b-kto.yaml": "rl: kto has no tunebook recipe method yet",
    "examples/mistral/orpo/mistral-qlora-orpo.yml": "rl: orpo has no tunebook recipe method yet",
}
INFERRED = {  # (family, method) for a few, across the inference rules
    "examples/llama-3/lora-1b.yml": ("llama3", "lora"),
    "examples/llama-3/qlora-1b.yml": ("llama3", "qlora"),
    "examples/llama-3/fft-8b.yaml": ("llama3", "full"),
    "examples/qwen3/32b-qlora.yaml": ("qwen3", "qlora"),
    "examples/gemma3/gemma-3-270m-qlora.yml": ("gemma3", "qlora"),
    "examples/mistral/lora.yml": ("mistral", "lora"),
    "examples/mistral/mixtral/mixtral.yml": ("mixtral", "qlora"),
}


def test_the_upstream_set_is_big_and_varied():
    assert len(EXAMPLES) >= 30
    assert (UPSTREAM / "SOURCE").read_text().startswith("axolotl: axolotl-ai-cloud/axolotl main@")
    assert any("liger" in (UPSTREAM / e).read_text() for e in EXAMPLES)  # a plugin
    assert any("rl: dpo" in (UPSTREAM / e).read_text() for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_upstream_example_imports_or_is_refused_for_its_reason(example, tmp_path):
    root = tmp_path / "recipes"
    root.mkdir()
    dest = root / "mine" / "recipe.yaml"
    if example in REFUSED:
        with pytest.raises(TunebookError) as info:
            import_recipe(UPSTREAM / example, dest, root)
        assert REFUSED[example] in str(info.value)
        assert not dest.exists() and not read_lock(root)
        return
    imported = import_recipe(UPSTREAM / example, dest, root)
    recipe = load_recipe(dest)
    meta = recipe.meta
    assert (meta.name, meta.version, meta.engine) == ("mine-recipe", 1, "axolotl")
    if example in INFERRED:
        assert (meta.family, meta.method) == INFERRED[example]
    text = dest.read_text()
    assert text.startswith(f"# Imported from {UPSTREAM / example} (written for axolotl-ai-cloud/axolotl main@")
    # the file itself, as upstream wrote it (but for Axolotl's own deepspeed path: the shipped copy)
    assert text.endswith((UPSTREAM / example).read_text().replace("deepspeed: deepspeed_configs/",
                                                                  "deepspeed: recipes/deepspeed/"))
    assert read_lock(root)["mine/recipe.yaml"]["name"] == "mine-recipe" and check(root) == []
    assert any("hub id" in item for item in imported.to_decide)  # every example names a hub model


def test_plugin_keys_are_known_with_their_plugin_and_named_without_it(tmp_path):
    from tunebook.validation import validate

    src = yaml.safe_load((UPSTREAM / "examples/llama-3/fft-8b-liger-fsdp.yaml").read_text())
    where = lambda key: ("f.yaml", None)  # noqa: E731
    validate({**src, "recipe": {"name": "x", "version": 1, "family": "llama3", "method": "full"}}, where)
    without = {k: v for k, v in src.items() if k != "plugins"}
    with pytest.raises(TunebookError) as info:
        validate({**without, "recipe": {"name": "x", "version": 1, "family": "llama3", "method": "full"}}, where)
    msgs = [p.message for p in info.value.problems if p.key == "liger_rope"]
    assert msgs == ["belongs to the plugin axolotl.integrations.liger.LigerPlugin, which `plugins:` does not list: "
                    "add `- axolotl.integrations.liger.LigerPlugin` under plugins:"]
    # a plugin key's type is the plugin's schema's to check, as Axolotl merges it
    with pytest.raises(TunebookError) as info:
        validate({**src, "liger_rope": "sometimes", "recipe": {"name": "x", "version": 1, "family": "llama3",
                                                              "method": "full"}}, where)
    assert [p.key for p in info.value.problems] == ["liger_rope"]


def test_every_problem_of_a_file_in_one_pass(tmp_path, capsys):
    from tunebook.cli import main

    path = tmp_path / "r.yaml"
    text = Path("recipes/smollm2/lora.yaml").read_text()
    path.write_text(text.replace("lora_r: 16", "lora_rank: 16").replace("lora_alpha: 32", "lora_alpha: lots"))
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "lora_rank: unknown key (did you mean 'lora_r'?)" in err  # the typo
    assert "lora_alpha:" in err  # and the type error behind it, in the same run


def test_a_plain_axolotl_config_in_the_book_is_one_line_never_a_traceback_or_a_null_lock(tmp_path):
    import shutil

    root = tmp_path / "recipes"
    (root / "smollm2").mkdir(parents=True)
    shutil.copy("recipes/smollm2/lora.yaml", root / "smollm2/lora.yaml")
    (root / "upstream").mkdir()
    shutil.copy(UPSTREAM / "examples/llama-3/lora-1b.yml", root / "upstream/lora-1b.yaml")
    update(root)
    assert list(read_lock(root)) == ["smollm2/lora.yaml"]  # locked what is a recipe, nothing null
    assert [r["recipe"] for r in rows(root)] == [(root / "smollm2/lora.yaml").as_posix()]
    (problem,) = [p for p in check(root) if "upstream" in p.source]
    assert "no `recipe:` block" in problem.message and "make new FROM=" in problem.message


def test_make_new_from_an_axolotl_config_prints_what_is_left_to_decide(tmp_path, capsys):
    from tunebook.cli import main

    root = tmp_path / "recipes"
    root.mkdir()
    dest = root / "mine" / "lora.yaml"
    assert main(["new", str(UPSTREAM / "examples/llama-3/lora-1b.yml"), str(dest), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"as {dest}: recipe mine-lora v1 (llama3, lora, engine axolotl), validated and locked" in out
    assert "base_model NousResearch/Llama-3.2-1B is a hub id" in out
    assert "datasets.0.path teknium/GPT4-LLM-Cleaned is not a local file" in out


FAMILY_EXAMPLES = {
    "llama3": "examples/llama-3/lora-1b.yml",
    "qwen3": "examples/qwen3/8b-lora-fused-attn.yaml",
    "gemma3": "examples/gemma3/gemma-3-270m-qlora.yml",
    "mistral": "examples/mistral/lora.yml",
}


@pytest.mark.parametrize("family", [f if f == "llama3" else pytest.param(f, marks=pytest.mark.matrix)
                                    for f in FAMILY_EXAMPLES])
def test_an_imported_example_trains_two_steps_on_a_tiny_model_of_its_family(family, tiny_models, tmp_path):
    from tunebook.train import train

    root = tmp_path / "recipes"
    root.mkdir()
    dest = import_recipe(UPSTREAM / FAMILY_EXAMPLES[family], root / "mine" / "recipe.yaml", root).path
    cfg = load_recipe(dest).config
    data = tmp_path / "train.jsonl"
    kind = cfg["datasets"][0].get("type")
    if kind == "alpaca":
        rows_ = [{"instruction": f"Add {i} and {i}.", "input": "", "output": f"{2 * i}"} for i in range(16)]
    else:  # chat_template: the example's own field names
        ds = cfg["datasets"][0]
        field, mapping = ds.get("field_messages", "messages"), ds.get("message_property_mappings") or {}
        role, content = mapping.get("role", "role"), mapping.get("content", "content")
        rows_ = [{field: [{role: "user", content: f"Add {i} and {i}."}, {role: "assistant", content: f"{2 * i}"}]}
                 for i in range(16)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    args = (f"base_model={tiny_models(family)} datasets.0.path={data} datasets.0.split=null max_steps=2 "
            f"sequence_len=128 micro_batch_size=2 gradient_accumulation_steps=1 val_set_size=0 "
            f"output_dir={tmp_path / 'direct'} dataset_prepared_path={tmp_path / 'prepared'}")
    run = train(dest, args, runs_root=tmp_path / "runs", echo=False)
    record = run.read_record()
    assert record.status == "finished" and record.steps == 2 and record.recipe.name == "mine-recipe"
    if family == "llama3":  # its pad token is not in the (SmolLM2) tokenizer: said and recorded
        assert any(n["key"] == "special_tokens" and "<|end_of_text|>" in n["message"] for n in record.notices)


def test_copied_settings_that_change_what_is_trained_are_said(smollm2_dir, tmp_path, capsys):
    from tunebook.cli import main

    root = tmp_path / "recipes"
    root.mkdir()
    dest = import_recipe(UPSTREAM / FAMILY_EXAMPLES["llama3"], root / "mine" / "lora.yaml", root).path
    args = (f"base_model={smollm2_dir} datasets.0.path=data/nba/train.jsonl datasets.0.type=chat_template "
            "max_steps=2 sample_packing=false train_on_inputs=true")
    assert main(["show", str(dest), "--args", args]) == 0
    out, err = capsys.readouterr()
    assert "eval_sample_packing: True -> False  (follows sample_packing, which is off)" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert any(f"{dest}:" in w and "special_tokens: adds 1 token(s) the tokenizer lacks (<|end_of_text|>)" in w
               for w in warnings)
    assert any("val_set_size: 2 evaluation pass(es) on this CPU over" in w for w in warnings)  # 2 steps, 4/epoch
    assert any("train_on_inputs: loss on the prompt tokens too" in w for w in warnings)


def test_an_upstream_deepspeed_path_points_at_the_shipped_copy(tmp_path):
    root = tmp_path / "recipes"
    root.mkdir()
    imported = import_recipe(UPSTREAM / "examples/mistral/mixtral/mixtral.yml", root / "mine" / "moe.yaml", root)
    assert load_recipe(imported.path).config["deepspeed"] == "recipes/deepspeed/zero2.json"
    assert any("deepspeed deepspeed_configs/zero2.json" in item for item in imported.to_decide)
