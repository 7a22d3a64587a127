"""`make inspect`: each family's template yields trainable assistant tokens; empty rows are named."""

from __future__ import annotations

import json

import pytest

from tunebook.data.inspect import inspect, tokenize
from tunebook.errors import TunebookError

ROWS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Points for 5-9 FG?"},
                  {"role": "assistant", "content": "He scored 10 points."}]},
    {"messages": [{"role": "user", "content": "Is 12 and 11 a double-double?"},
                  {"role": "assistant", "content": "Yes, a double-double."}]},
]


@pytest.mark.parametrize("family", ["smollm2", "llama3", "qwen3", "gemma3", "mistral"])
def test_each_family_template_trains_only_the_assistant_answer(family, tiny_models, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    args = f"base_model={tiny_models(family)} datasets.0.path={data}"
    tok, rows, _ = tokenize(f"recipes/{family}/lora.yaml", args)
    assert len(rows) == 2
    for row, src in zip(rows, ROWS):
        trained = tok.decode([t for t, l in zip(row.input_ids, row.labels) if l != -100])
        assert src["messages"][-1]["content"] in trained
        assert src["messages"][-2]["content"] not in trained  # the question carries no loss
        assert 0 < row.trained < len(row.input_ids)


def test_a_row_with_no_trainable_token_is_named(tiny_models, tmp_path):
    data = tmp_path / "d.jsonl"
    bad = {"messages": [{"role": "user", "content": "a question with no answer"}]}
    data.write_text("".join(json.dumps(r) + "\n" for r in [ROWS[0], bad, ROWS[1]]))
    with pytest.raises(TunebookError) as info:
        inspect("recipes/smollm2/lora.yaml", n=1, args=f"base_model={tiny_models('smollm2')} datasets.0.path={data}")
    (p,) = info.value.problems  # the data preflight (shared with train) names it before tokenizing
    assert (p.source, p.line) == (str(data), 2) and "nothing to learn" in p.message


def test_inspect_marks_trained_spans(tmp_path, smollm2_dir):
    text = inspect("recipes/smollm2/lora.yaml", n=2)
    assert "[[" in text and "<|im_start|>assistant\n[[" in text
    assert "rows," in text and "trained on" in text
