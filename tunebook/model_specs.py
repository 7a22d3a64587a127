"""Shapes of the base models the shipped recipes name, for estimates without a download.

A local folder or the HF cache is read first; this table only answers for hub ids that
are not on this machine (which, with no hub here, is all of them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int | None = None

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection in one decoder layer."""
        q, kv = self.heads * self.hd, self.kv_heads * self.hd
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + (self.layers * 2 + 1) * self.hidden  # + the final norm


KNOWN = {
    "meta-llama/Llama-3.2-1B-Instruct": ModelSpec(2048, 16, 8192, 32, 8, 128256, True, 64),
    "meta-llama/Llama-3.1-8B-Instruct": ModelSpec(4096, 32, 14336, 32, 8, 128256, False, 128),
    "meta-llama/Llama-3.1-70B-Instruct": ModelSpec(8192, 80, 28672, 64, 8, 128256, False, 128),
    "Qwen/Qwen3-0.6B": ModelSpec(1024, 28, 3072, 16, 8, 151936, True, 128),
    "Qwen/Qwen3-8B": ModelSpec(4096, 36, 12288, 32, 8, 151936, False, 128),
    "google/gemma-3-1b-it": ModelSpec(1152, 26, 6912, 4, 1, 262144, True, 256),
    "google/gemma-3-4b-it": ModelSpec(2560, 34, 10240, 8, 4, 262208, True, 256),  # text tower only
    "mistralai/Mistral-7B-Instruct-v0.3": ModelSpec(4096, 32, 14336, 32, 8, 32768, False, 128),
}


def _from_config(cfg: dict) -> ModelSpec:
    cfg = cfg.get("text_config", cfg)
    return ModelSpec(
        hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"], intermediate=cfg["intermediate_size"],
        heads=cfg["num_attention_heads"], kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        vocab=cfg["vocab_size"], tied=bool(cfg.get("tie_word_embeddings", False)), head_dim=cfg.get("head_dim"),
    )


def spec_for(base_model: str) -> ModelSpec | None:
    path = Path(base_model) / "config.json"
    if path.is_file():
        return _from_config(json.loads(path.read_text(encoding="utf-8")))
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(base_model, "config.json")
        if isinstance(cached, str):
            return _from_config(json.loads(Path(cached).read_text(encoding="utf-8")))
    except Exception:  # noqa: BLE001 - an odd cache entry must not break `make list`
        pass
    return KNOWN.get(base_model)
