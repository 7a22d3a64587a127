"""Attention for one generated token at a time on a CPU, without copying the cache.

transformers' sdpa path lets torch handle grouped-query attention (`enable_gqa`) only without
an attention mask; a padded batch has one, so every layer repeats the key/value cache per query
head at every generated token (SmolLM2: 3 KV heads for 9 query heads, the whole cache copied 3x,
30 times a token), and torch's bf16 CPU kernel for a single query row is slow besides. Its fp32
flash kernel with `enable_gqa` (this module's first version: 272 -> 155 ms a token, nba_qa's
prompts 32 at a time under bf16 autocast) still spent 2.5 ms a layer on one query row, 45% of
a token. For decoding (one query position) each key/value head's query heads are stacked as the
rows of one small fp32 matmul against the cache as stored: 159 -> 96-114 ms a token, nba_qa
(400 questions) 131 -> 100 s, the same tokens as sdpa in fp32. Prefill and training keep
transformers' sdpa untouched.

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
    return _grouped_decode(query, key, value, attention_mask, scaling), None


def _grouped_decode(query, key, value, mask, scaling):
    """One query row per sequence: each key/value head's query heads stacked as rows of one
    small matmul against the cache as stored, in fp32 (scores, softmax and mix)."""
    import torch

    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    q = query.float().reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(q, key.float().transpose(-1, -2))
    scores.mul_(dim ** -0.5 if scaling is None else scaling)
    if mask is not None:
        mask = mask[..., -length:]
        if mask.shape[1] == heads and heads != kv_heads:
            mask = mask.reshape(batch, kv_heads, heads // kv_heads, length)
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
        else:
            scores.add_(mask.float())
    out = torch.matmul(torch.softmax(scores, dim=-1), value.float())
    return out.reshape(batch, 1, heads, dim).to(query.dtype)


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
