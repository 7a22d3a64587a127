"""Tiny random models per family, built offline from transformers config classes.

Same architecture code paths as the real models (GQA, per-family norms and rope), a few
MB each, so a recipe's engine run costs seconds of compute and the rest is start-up.
"""

from __future__ import annotations

from pathlib import Path

import torch

ARCH = {"smollm2": "llama", "llama3": "llama", "qwen3": "qwen3", "gemma3": "gemma3", "mistral": "mistral"}
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)


def _config(family: str, vocab_size: int, bos: int, eos: int, pad: int):
    import transformers as T

    ids = dict(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    if family in ("llama", "smollm2", "llama3"):
        return T.LlamaConfig(**COMMON, **ids)
    if family == "qwen3":
        return T.Qwen3Config(**COMMON, head_dim=16, **ids)
    if family == "gemma3":
        return T.Gemma3TextConfig(**COMMON, head_dim=16, sliding_window=64, **ids)
    if family == "mistral":
        return T.MistralConfig(**COMMON, **ids)
    raise ValueError(f"no tiny model for family {family!r}")


# The real tokenizers have their chat markers as single special tokens; the SmolLM2
# tokenizer borrowed here must too, or marker-based masking (Unsloth) sees different ids.
SPECIAL_TOKENS = {
    "llama": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "gemma3": ["<start_of_turn>", "<end_of_turn>"],
    "mistral": ["[INST]", "[/INST]"],
}


def build_tiny_model(family: str, tokenizer_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    extra = SPECIAL_TOKENS.get("llama" if family in ("smollm2", "llama3") else family, [])
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    cfg = _config(family, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def fold_skip_list(cfg: dict, layers: int = 2) -> list[str]:
    """A recipe's 16-bit modules (`bnb_config_kwargs.llm_int8_skip_modules`) renamed onto a tiny
    model's layers (layer i -> i % layers), so its copy still keeps modules 16-bit and is valid.
    Returns the distinct projections kept."""
    import re

    kw = cfg.get("bnb_config_kwargs") or {}
    if not kw.get("llm_int8_skip_modules"):
        return []
    folded = [re.sub(r"layers\.(\d+)\.", lambda m: f"layers.{int(m.group(1)) % layers}.", n)
              for n in kw["llm_int8_skip_modules"]]
    kw["llm_int8_skip_modules"] = list(dict.fromkeys(folded))
    return [n for n in kw["llm_int8_skip_modules"] if n != "lm_head"]
