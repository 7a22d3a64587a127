"""lm-eval's HF model, computing each prompt once and the vocabulary projection only where a
score is read.

For a loglikelihood request lm-eval runs the whole (context + continuation) through the model
and log-softmaxes logits at every position, then keeps the continuation's. Two kinds of work are
thrown away on a multiple-choice task:
- every choice repeats the question (chat template, system prompt and all): nba_mc's 4 choices
  run the same prompt 4 times. Requests that share a context are scored here from one pass over
  the context (its key/value cache, repeated per choice) and one pass over the choices;
- with SmolLM2's 49,152-token vocabulary the projection and the fp32 log-softmax over context
  positions are ~30% of scoring, for nothing. `logits_to_keep` (every transformers causal LM
  takes it) asks for the last K positions only; lm-eval's own slicing already handles logits
  shorter than the input (its "virtual tokens" arithmetic), so its path needs nothing else.
The same numbers come out (to float rounding: other matmul shapes) of fewer FLOPs.
"""

from __future__ import annotations

from lm_eval.models.huggingface import HFLM


class TrimmedHFLM(HFLM):
    _shortest_context: int | None = None
    # Rows decoded together on a CPU. A decode step reads every weight for a handful of rows,
    # so twice the rows cost less than twice the time once attention no longer copies the cache
    # per row (decode_attention.py; before it, 64 gained nothing): nba_qa (400 questions, base
    # model, bf16 autocast) 119.2 s at 16, 87.5-100.1 s at 32 (3 runs), 81.4-86.3 s at 64 (4),
    # 86.8 s at 128 (the longest answer holds the whole batch). Scoring choices gained nothing
    # from 64 (95.8 vs 97.8 s), so the constructor's batch size stays theirs, logits smaller.
    # The price: the eval's peak RSS on nba_qa 2320 -> 3305 MiB (base model, 111.6 -> 98.8 s).
    generate_batch: int = 64

    def generate_until(self, requests, disable_tqdm: bool = False):
        wider = (isinstance(self.batch_size_per_gpu, int) and self.device.type == "cpu"
                 and self.batch_size_per_gpu < self.generate_batch)
        kept = self.batch_size_per_gpu
        if wider:
            self.batch_size_per_gpu = self.generate_batch
        try:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        finally:
            self.batch_size_per_gpu = kept

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """Shared prompts when requests repeat a context; otherwise lm-eval's loop, asking for K
        positions per batch: the padded length minus the shortest context plus one keeps every
        row's continuation. Both are off when lm-eval would cut an input from the left (its
        positions no longer follow from the context length) or for encoder-decoder models."""
        fits = all(len(ctx) + len(cont) <= self.max_length + 1 for _, ctx, cont in requests)
        if fits and self._can_share(requests):
            return self._shared_prompt_loglikelihoods(requests, disable_tqdm)
        self._shortest_context = (min(len(ctx) for _, ctx, _ in requests)
                                  if requests and fits and self.backend == "causal" else None)
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        finally:
            self._shortest_context = None

    def _forward(self, inps, **kwargs):
        """One model call under lm-eval's own no-grad and autocast (its `mixed_precision_dtype`)."""
        import torch

        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            return self.model(inps, **kwargs)

    def _model_call(self, inps, attn_mask=None, labels=None):
        keep = None if self._shortest_context is None else inps.shape[1] - self._shortest_context + 1
        if keep is None or keep >= inps.shape[1] or attn_mask is not None or labels is not None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        return self._forward(inps, logits_to_keep=keep).logits

    def _can_share(self, requests) -> bool:
        """Worth it when contexts repeat; safe for a causal decoder whose attention sees the
        whole input: a sliding window counts cache slots, and a batch's padding would shift it."""
        if not requests or self.backend != "causal" or not isinstance(self.batch_size, int):
            return False
        if any(len(ctx) < 2 for _, ctx, _ in requests):
            return False
        if len({tuple(ctx) for _, ctx, _ in requests}) > 0.75 * len(requests):
            return False
        cfg = self.model.config
        cfg = getattr(cfg, "get_text_config", lambda: cfg)()
        window = getattr(cfg, "sliding_window", None)
        longest = max(len(ctx) for _, ctx, _ in requests) + max(len(cont) for _, _, cont in requests)
        return not (isinstance(window, int) and longest >= window)

    def _shared_prompt_loglikelihoods(self, requests, disable_tqdm: bool):
        """Groups of requests with one context, a batch of groups at a time (as many choices as
        lm-eval's batch size): the context but its last token goes through the model once with
        a cache; the cache is repeated per choice, and [last context token] + continuation[:-1]
        goes through it, so the logits line up with the continuation as in lm-eval's own loop.
        Contexts are right-padded: the pads sit in the middle of each choice's keys, masked out,
        with positions given explicitly so rotary embeddings see no gap."""
        import torch
        import torch.nn.functional as F
        from tqdm import tqdm

        groups: dict[tuple, list[int]] = {}
        for i, (_, ctx, _) in enumerate(requests):
            groups.setdefault(tuple(ctx), []).append(i)
        ordered = sorted(groups.items(), key=lambda g: -len(g[0]))
        batches, batch, rows = [], [], 0
        for ctx, members in ordered:
            if batch and rows + len(members) > self.batch_size:
                batches.append(batch)
                batch, rows = [], 0
            batch.append((ctx, members))
            rows += len(members)
        if batch:
            batches.append(batch)

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        dev = self.device

        def padded(seqs: list[list[int]]):
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long, device=dev)
            mask = torch.zeros((len(seqs), width), dtype=torch.long, device=dev)
            for r, s in enumerate(seqs):
                ids[r, :len(s)] = torch.tensor(s, dtype=torch.long)
                mask[r, :len(s)] = 1
            return ids, mask

        res: list[tuple[float, bool] | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=(disable_tqdm or self.rank != 0),
                    desc="Running loglikelihood requests (shared prompts)")
        for batch in batches:
            ids, mask = padded([list(ctx[:-1]) for ctx, _ in batch])
            positions = torch.arange(ids.shape[1], device=dev).expand_as(ids)
            cache = self._forward(ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                  logits_to_keep=1).past_key_values
            owner = [g for g, (_, members) in enumerate(batch) for _ in members]
            index = [i for _, members in batch for i in members]
            cache.reorder_cache(torch.tensor(owner, dtype=torch.long, device=dev))
            tails = [[batch[g][0][-1], *requests[i][2][:-1]] for g, i in zip(owner, index)]
            tail_ids, tail_mask = padded(tails)
            starts = torch.tensor([len(batch[g][0]) - 1 for g in owner], device=dev)
            tail_positions = starts[:, None] + torch.arange(tail_ids.shape[1], device=dev)
            logits = self._forward(tail_ids, attention_mask=torch.cat([mask[owner], tail_mask], dim=1),
                                   position_ids=tail_positions, past_key_values=cache).logits
            logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            for r, i in enumerate(index):
                (request_str, _, cont) = requests[i]
                target = torch.tensor(cont, dtype=torch.long, device=dev)
                lp = logprobs[r, :len(cont)]
                answer = (float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
                res[i] = answer
                if request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", request_str, answer)
                pbar.update(1)
        pbar.close()
        return res
