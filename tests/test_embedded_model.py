"""The embedded SmolLM2 converted by `make setup` is a plain, unquantized HF folder."""

from __future__ import annotations

import json


def test_converted_folder_is_plain_hf(smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer

    files = {p.name for p in smollm2_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".gguf", ".pt")) for f in files)
    raw = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in raw
    cfg = AutoConfig.from_pretrained(smollm2_dir)
    assert cfg.model_type == "llama" and cfg.num_hidden_layers == 30 and cfg.hidden_size == 576
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nhi<|im_end|>" in text


def test_convert_is_idempotent(smollm2_dir):
    from tunebook.embedded_model import convert

    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert convert(smollm2_dir) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before
