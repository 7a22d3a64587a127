"""Attention for one generated token at a time on a CPU, without copying the cache.

transformers' sdpa path lets torch handle grouped-query attention (`enable_gqa`) only without
an attention mask; a padded batch has one, so every layer repeats the key/value cache per query
head at every generated token (SmolLM2: 3 KV heads for 9 query heads, the whole cache copied 3x,
30 times a token), and torch's bf16 CPU kernel for a single query row is slow besides. For
decoding (one query position) this runs torch's own sdpa in fp32 with `enable_gqa` over the
cache as it is: measured on nba_qa's prompts, 32 at a time, 272 -> 155 ms a token under bf16
autocast, the same tokens out. Prefill and training keep transformers' sdpa untouched.

Registered as an attention implementation of its own (transformers' AttentionInterface, with
sdpa's masks), so a model opts in by name and goes back the same way.
"""

from __future__ import annotations

import contextlib

NAME = "tunebook_decode_sdpa"


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (query.shape[2] != 1 or query.device.type != "cpu" or dropout
            or kwargs.get("position_bias") is not None or kwargs.get("s_aux") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    import torch.nn.functional as F

    groups = getattr(module, "num_key_value_groups", 1)
    out = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=attention_mask,
                                         scale=scaling, enable_gqa=groups > 1)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def register() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


@contextlib.contextmanager
def cpu_decode_attention(model):
    """Swap a CPU model that runs transformers' sdpa to this attention for the block, then back.
    Anything else (eager, flash, a GPU, no model) is left alone."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa" or model.device.type != "cpu":
        yield
        return
    model.set_attn_implementation(register())
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")
