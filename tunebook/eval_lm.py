"""lm-eval's HF model, with the vocabulary projection only where a score is read.

For a loglikelihood request lm-eval runs the whole (context + continuation) through the model
and log-softmaxes logits at every position, then keeps the continuation's. With SmolLM2's
49,152-token vocabulary the projection and the fp32 log-softmax over the context positions are
~30% of scoring nba_mc, and thrown away. `logits_to_keep` (every transformers causal LM takes
it) asks the model for the last K positions only; lm-eval's own slicing already handles logits
shorter than the input (its "virtual tokens" arithmetic: ctx_len = inplen + (K - padded length)),
so nothing else changes: the same numbers come out of fewer FLOPs.
"""

from __future__ import annotations

from lm_eval.models.huggingface import HFLM


class TrimmedHFLM(HFLM):
    _shortest_context: int | None = None

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """K for every batch of this call: the padded length minus the shortest context plus one
        keeps every row's continuation. Off when lm-eval will cut an input from the left (its
        positions no longer follow from the context length) or for encoder-decoder models."""
        fits = all(len(ctx) + len(cont) <= self.max_length + 1 for _, ctx, cont in requests)
        self._shortest_context = (min(len(ctx) for _, ctx, _ in requests)
                                  if requests and fits and self.backend == "causal" else None)
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        finally:
            self._shortest_context = None

    def _model_call(self, inps, attn_mask=None, labels=None):
        keep = None if self._shortest_context is None else inps.shape[1] - self._shortest_context + 1
        if keep is None or keep >= inps.shape[1] or attn_mask is not None or labels is not None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        import torch

        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            return self.model(inps, logits_to_keep=keep).logits
