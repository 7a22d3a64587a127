"""Project hidden states to the vocabulary only where a label is trained.

A chat row trains on its assistant turns only: on the NBA set 13% of the positions carry a
label. A causal LM still computes logits (49k-wide on SmolLM2) for every position and a
log-softmax over all of them, which on a CPU was ~20% of a LoRA step. The model's own
forward already takes `logits_to_keep` as a tensor of positions, so this wrapper only
chooses those positions and computes the same loss transformers' `ForCausalLMLoss` would:
sum of token cross-entropies over trained positions, divided by `num_items_in_batch` when
the trainer gives it (gradient accumulation), else their mean. Positions left out all have
label -100, which that loss ignores, so the value is the same up to float rounding; the
test checks it against the unwrapped model.
"""

from __future__ import annotations

import functools

IGNORE = -100
_LOSS_KWARGS = ("num_items_in_batch", "ignore_index", "shift_labels")


def install(model) -> bool:
    """Wrap the causal LM inside `model` (a PeftModel or the model itself). False if it
    cannot be (no lm_head, or already wrapped)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(base, "lm_head") or getattr(base.forward, "_tunebook_labelled", False):
        return False
    original = base.forward

    @functools.wraps(original)
    def forward(*args, labels=None, **kwargs):
        if labels is None or not base.training or kwargs.get("logits_to_keep") not in (None, 0):
            return original(*args, labels=labels, **kwargs)
        import torch
        import torch.nn.functional as F

        loss_kw = {k: kwargs.pop(k) for k in _LOSS_KWARGS if k in kwargs}
        ignore = loss_kw.get("ignore_index", IGNORE)
        shift = loss_kw.get("shift_labels")
        if shift is None:
            shift = F.pad(labels, (0, 1), value=ignore)[..., 1:]
        # One index set for the whole batch: the union of trained positions over its rows.
        keep = (shift != ignore).any(dim=0).nonzero().flatten()
        if keep.numel() == 0:  # nothing trained in this batch: the ordinary path says so
            return original(*args, labels=labels, **kwargs)
        out = original(*args, labels=None, logits_to_keep=keep, **kwargs)
        logits = out.logits.float()
        target = shift[:, keep].to(logits.device)
        n = loss_kw.get("num_items_in_batch")
        reduction = "sum" if n is not None else "mean"
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                               ignore_index=ignore, reduction=reduction)
        if n is not None:
            loss = loss / (n.to(loss.device) if torch.is_tensor(n) else n)
        out.loss = loss
        return out

    forward._tunebook_labelled = True
    base.forward = forward
    return True
