"""Time to the first optimizer step, the tokens really processed and the precision used,
measured inside the engine process (both workers share it).

Both engines train through transformers' Trainer; wrapping `Trainer.training_step` once in
the worker (our own process) catches every step whatever subclass the engine builds, and
sees each batch exactly as the model gets it, padding and packing included.
"""

from __future__ import annotations

import time

FIRST_STEP: dict[str, float] = {}
TOKENS = {"real": 0, "slots": 0}


def real_tokens(inputs, pad_token_id: int | None = None) -> tuple[int, int]:
    """(real tokens, token slots) of one batch.

    Padded batches carry an attention mask (0 = padding). Packed batches drop it (Axolotl's
    block-diagonal path reads rows off `position_ids` restarting at 0), and Axolotl pads a
    packed row with one more such segment, 0, 1, 2, ... of pad tokens: a row's last segment
    made only of pad tokens is padding. (A real row never is: it opens with a chat marker.)
    """
    ids = inputs.get("input_ids")
    if ids is None:
        return 0, 0
    slots = int(ids.numel())
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        return int((mask != 0).sum()), slots
    pos = inputs.get("position_ids")
    if pos is None or pos.dim() != 2 or pad_token_id is None:
        return slots, slots
    real = 0
    for row_ids, row_pos in zip(ids, pos.expand_as(ids)):
        starts = (row_pos == 0).nonzero().flatten()
        last = int(starts[-1]) if starts.numel() else 0
        real += last if last > 0 and bool((row_ids[last:] == pad_token_id).all()) else row_ids.numel()
    return real, slots


def install() -> None:
    import transformers

    original = transformers.Trainer.training_step
    if getattr(original, "_tunebook_timed", False):
        return

    def training_step(self, model, inputs, *args, **kwargs):
        tok = getattr(self, "processing_class", None)
        real, slots = real_tokens(inputs, getattr(tok, "pad_token_id", None))
        TOKENS["real"] += real
        TOKENS["slots"] += slots
        out = original(self, model, inputs, *args, **kwargs)
        FIRST_STEP.setdefault("at", time.time())
        return out

    training_step._tunebook_timed = True
    transformers.Trainer.training_step = training_step


def time_to_first_step(since: float) -> float | None:
    """Seconds from `since` (the worker's start) to the end of the first training step."""
    return round(FIRST_STEP["at"] - since, 2) if "at" in FIRST_STEP else None


def token_counts() -> dict:
    """Real tokens, slots, and packing efficiency (real / slots) over every step so far."""
    real, slots = TOKENS["real"], TOKENS["slots"]
    return {"tokens_real": real, "tokens_slots": slots,
            "packing_efficiency": round(real / slots, 4) if slots else None}


def precision(args, model) -> dict:
    """What the matmuls really ran in (the trainer's autocast dtype if any, else the weights'),
    and what the optimizer updates (`master_dtype`): bf16 there would lose small updates."""
    import torch

    weights = str(getattr(model, "dtype", "")).replace("torch.", "")
    trained = {str(p.dtype).replace("torch.", "") for p in model.parameters() if p.requires_grad}
    autocast = "bfloat16" if args.bf16 else "float16" if args.fp16 else None
    on_cpu = args.use_cpu or not torch.cuda.is_available()
    return {"compute_dtype": autocast or weights, "autocast": autocast, "weights_dtype": weights,
            "master_dtype": "+".join(sorted(trained)) or None, "device": "cpu" if on_cpu else "cuda"}
