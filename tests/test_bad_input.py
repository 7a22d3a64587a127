"""A corpus of recipes wrong in ordinary ways: each is refused before any engine starts, with
exit code 2, no traceback, and a message that names the file and line (or ARGS) and the key.

In process through `tunebook.cli.main` (milliseconds after the first); one case runs the real
command line to prove the user sees no traceback there either.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunebook.cli import main

LORA = Path("recipes/smollm2/lora.yaml")
QLORA = Path("recipes/smollm2/qlora.yaml")


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (id, recipe, edit of the file as (old, new) or None, ARGS, what the message must contain)
CASES = [
    ("unknown key", LORA, ("lora_r: 16", "lora_rank: 16"), "", ["lora_rank", "did you mean 'lora_r'"]),
    ("unknown key in ARGS", LORA, None, "lora_rnak=8", ["ARGS", "lora_rnak"]),
    ("duplicate key", LORA, ("lora_r: 16", "lora_r: 16\nlora_r: 32"), "", ["lora_r", "set twice, on lines"]),
    ("duplicate nested key", LORA, ("    type: chat_template", "    type: chat_template\n    type: alpaca"), "",
     ["datasets.0.type", "set twice"]),
    ("micro batch -1", LORA, None, "micro_batch_size=-1", ["micro_batch_size", "integer >= 1"]),
    ("micro batch 0 in file", LORA, ("micro_batch_size: 1", "micro_batch_size: 0"), "",
     ["micro_batch_size", "integer >= 1", ".yaml:"]),
    ("micro batch not a whole number", LORA, None, "micro_batch_size=2.5", ["micro_batch_size"]),
    ("accumulation 0", LORA, None, "gradient_accumulation_steps=0", ["gradient_accumulation_steps"]),
    ("lora_r 0", LORA, None, "lora_r=0", ["lora_r", ">= 1"]),
    ("sequence_len 0", LORA, None, "sequence_len=0", ["sequence_len"]),
    ("negative learning rate", LORA, None, "learning_rate=-0.001", ["learning_rate", "> 0"]),
    ("zero epochs", LORA, None, "num_epochs=0", ["num_epochs"]),
    ("max_steps 0", LORA, None, "max_steps=0", ["max_steps"]),
    ("warmup ratio 1.5", LORA, None, "warmup_ratio=1.5 warmup_steps=null", ["warmup_ratio", "[0, 1)"]),
    ("dropout 1", LORA, None, "lora_dropout=1", ["lora_dropout"]),
    ("val_set_size 2", LORA, None, "val_set_size=2", ["val_set_size"]),
    ("weight decay negative", LORA, None, "weight_decay=-1", ["weight_decay"]),
    ("batch size a word", LORA, None, "micro_batch_size=four", ["micro_batch_size"]),
    ("optimizer typo", LORA, None, "optimizer=adamw_torh", ["optimizer", "did you mean 'adamw_torch'"]),
    ("scheduler typo", LORA, ("lr_scheduler: cosine", "lr_scheduler: cosin"), "", ["lr_scheduler", "'cosine'"]),
    ("chat template typo", LORA, None, "chat_template=chatml2", ["chat_template", "did you mean 'chatml'"]),
    ("dataset type typo", LORA, ("    type: chat_template", "    type: chat_templat"), "",
     ["datasets.0.type", "did you mean 'chat_template'"]),
    ("dataset type unknown", LORA, None, "datasets.0.type=sharegtp", ["datasets.0.type", "unknown dataset type"]),
    ("base model folder missing", LORA, None, "base_model=models/nope", ["base_model", "no such folder"]),
    ("base model hub id offline", LORA, None, "base_model=someone/some-model", ["base_model", "offline"]),
    ("data file missing", LORA, None, "datasets.0.path=data/nope.jsonl", ["datasets.0.path", "no such data file"]),
    ("list index out of range", LORA, None, "datasets.3.path=x.jsonl", ["datasets.3.path", "not an index"]),
    ("ARGS without =", LORA, None, "lora_r", ["ARGS", "expected key=value"]),
    ("recipe block missing version", LORA, ("  version: ", "  versio: "), "", ["recipe.versio", "unknown key"]),
    ("recipe method unknown", LORA, ("  method: lora", "  method: lorra"), "", ["recipe.method"]),
    ("engine unknown", LORA, None, "recipe.engine=deepspeed", ["recipe.engine"]),
    ("unsloth cannot honour DoRA", QLORA, None, "peft_use_dora=true", ["peft_use_dora", "ENGINE=axolotl"]),
    ("qlora without 4-bit", QLORA, None, "load_in_4bit=false", ["load_in_4bit"]),
    ("16-bit module typo", QLORA, ("model.layers.11.mlp.down_proj", "model.layers.11.mlp.down_prj"), "",
     ["bnb_config_kwargs.llm_int8_skip_modules.1", "names no layer", "did you mean 'model.layers.11.mlp.down_proj'"]),
    ("16-bit module past the last layer", QLORA, ("model.layers.29.mlp.down_proj", "model.layers.30.mlp.down_proj"),
     "", ["bnb_config_kwargs.llm_int8_skip_modules.2", "(30 layers)"]),
    ("16-bit modules not a list", QLORA, None, "bnb_config_kwargs.llm_int8_skip_modules=lm_head",
     ["bnb_config_kwargs.llm_int8_skip_modules", "a list of module names"]),
    ("unsloth 4-bit other than NF4", QLORA, ("bnb_4bit_quant_type: nf4", "bnb_4bit_quant_type: fp4"), "",
     ["bnb_config_kwargs.bnb_4bit_quant_type", "NF4 with double quantization"]),
    ("not YAML", LORA, ("lora_r: 16", "lora_r: [16"), "", ["not valid YAML"]),
]


def _recipe(tmp_path: Path, src: Path, edit) -> Path:
    text = src.read_text(encoding="utf-8")
    if edit:
        text = _edit(text, *edit)
    path = tmp_path / src.name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name,src,edit,args,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_recipe_is_refused_before_the_engine(name, src, edit, args, expect, tmp_path, capsys):
    path = _recipe(tmp_path, src, edit)
    runs = tmp_path / "runs"
    code = main(["train", str(path), "--args", args, "--runs", str(runs)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ")
    for piece in expect:
        assert piece in err, f"{piece!r} not in: {err}"
    assert not runs.exists(), "a run directory was made for a recipe that cannot run"
    if edit and "ARGS" not in expect:  # an error in the file points at a line of it
        assert f"{path}:" in err


@pytest.mark.parametrize("name,content", [
    ("not UTF-8", b"recipe:\n  name: x\n  description: caf\xe9\n"),
    ("not a mapping", b"- just\n- a list\n"),
    ("empty", b""),
])
def test_a_recipe_file_that_is_not_a_recipe_is_one_clean_line(name, content, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    code = main(["show", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and str(path) in err
    assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1


def test_base_model_folder_without_weights(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert main(["show", str(LORA), "--args", f"base_model={model}"]) == 2
    assert "no weights" in capsys.readouterr().err
    (model / "config.json").unlink()
    assert main(["show", str(LORA), "--args", f"base_model={model}"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_the_command_line_shows_no_traceback(tmp_path):
    """The real command line (one process start: ~9 s of imports), two problems in one pass."""
    proc = subprocess.run([sys.executable, "-m", "tunebook", "train", str(LORA), "--args",
                           "lora_rnk=4 micro_batch_size=-1", "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert "error: ARGS: lora_rnk: unknown key (did you mean 'lora_r'?)" in lines
    assert "error: ARGS: micro_batch_size: must be an integer >= 1, got -1" in lines
    assert not (tmp_path / "runs").exists()  # no run directory for a recipe that cannot run


def _chat(user="Who won?", answer="The Celtics.", role="assistant") -> str:
    import json

    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": role, "content": answer}]})


GOOD = _chat()
DATA_CASES = [
    ("one broken JSON line", [GOOD, "{not json", GOOD], [":2:"]),
    ("rows without the messages field", [GOOD, '{"conversation": []}'], [":2:", "no 'messages' field"]),
    ("content not a string", [GOOD, '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}'],
     [":2:", "content must be a string"]),
    ("a role the template does not know", [_chat(role="bot")], [":1:", "'bot'"]),
    ("last turn not the assistant's", ['{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}'],
     [":1:", "nothing to learn"]),
    ("a row that is a list", [GOOD, "[1, 2]"], [":2:", "JSON object"]),
    ("empty assistant answer", [_chat(answer=" ")], [":1:", "empty"]),
]


@pytest.mark.parametrize("name,lines,expect", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_training_data_is_refused_before_the_engine(name, lines, expect, tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    runs = tmp_path / "runs"
    code = main(["train", str(LORA), "--args", f"datasets.0.path={data}", "--runs", str(runs)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert all(f"{data}{piece}" in err if piece.startswith(":") else piece in err for piece in expect), err
    assert f"make data IN={data} TO=messages" in err and not runs.exists()


def test_data_problems_past_ten_are_counted_and_bytes_that_are_not_utf8_are_a_row(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_bytes(("\n".join([GOOD] + ["{broken"] * 14) + "\n").encode() + b'{"messages": "caf\xe9"}\n')
    assert main(["show", str(LORA), "--args", f"datasets.0.path={data}"]) == 2
    err = capsys.readouterr().err
    assert err.count(f"error: {data}:") == 11 and "... and 5 more rows like these" in err


def test_empty_data_file_and_rows_all_longer_than_sequence_len(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text("")
    assert main(["show", str(LORA), "--args", f"datasets.0.path={data}"]) == 2
    assert "the file is empty" in capsys.readouterr().err
    data.write_text(_chat(user="word " * 200) + "\n")
    assert main(["show", str(LORA), "--args", f"datasets.0.path={data} sequence_len=64"]) == 2
    assert "longer than sequence_len (64)" in capsys.readouterr().err


def test_a_checked_file_is_not_checked_again(tmp_path, monkeypatch):
    from tunebook.data import preflight
    from tunebook.resolve import resolve

    data = tmp_path / "train.jsonl"
    data.write_text("\n".join([GOOD] * 5) + "\n")
    monkeypatch.setattr("tunebook.resolve.PATHS", type("P", (), {"data_checks": tmp_path / "cache"})())
    first = resolve(LORA, f"datasets.0.path={data}").data[0]
    assert first.rows == 5 and first.trained_tokens > 0 and first.too_long == 0
    monkeypatch.setattr(preflight, "_strategy", lambda *a: pytest.fail("tokenized again"))
    assert resolve(LORA, f"datasets.0.path={data}").data[0] == first
    data.write_text("\n".join([GOOD] * 6) + "\n")  # another file content: checked afresh
    with pytest.raises(BaseException, match="tokenized again"):
        resolve(LORA, f"datasets.0.path={data}")


def test_trust_remote_code_is_off_unless_asked_and_loud_when_on(capsys):
    from tunebook.resolve import resolve

    assert not resolve(LORA, check_inputs=False).adapted.get("trust_remote_code")
    assert "trust_remote_code" not in capsys.readouterr().err
    assert main(["show", str(LORA), "--args", "trust_remote_code=true"]) == 0
    assert "warning: ARGS: trust_remote_code: trust_remote_code is on" in capsys.readouterr().err


def test_run_outputs_load_only_as_safetensors(tmp_path):
    from tunebook.errors import TunebookError
    from tunebook.loading import load

    adapter = tmp_path / "output"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(TunebookError, match="only as safetensors"):
        load({"base_model": "models/smollm2-135m-instruct"}, adapter)
