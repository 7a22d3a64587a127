"""The CPU speed paths change how a step is computed, never what it computes.

- sample packing: a row packed with others gets the same per-token loss as alone (the
  block-diagonal attention that Axolotl's packed batches rely on really isolates rows);
- logits only at labelled positions: the same loss and gradients as the full logits;
- the real-token count behind tokens/s and packing efficiency.
Model-level, on a tiny random Llama in fp32: milliseconds, no engine start-up.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tunebook.engines import labelled_logits
from tunebook.engines.timing import real_tokens

ROWS = [
    [{"role": "user", "content": "Who won, Boston 112 or Miami 104?"}, {"role": "assistant", "content": "Boston won by 8."}],
    [{"role": "user", "content": "Points for 9 of 17 FG, 3 threes, 4 of 5 FT?"}, {"role": "assistant", "content": "25 points."}],
    [{"role": "user", "content": "Name the team in Denver."}, {"role": "assistant", "content": "The Denver Nuggets."}],
]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32, attn_implementation="sdpa")
    # as transformers' Trainer leaves it (`args.use_cache` is False): with a KV cache the model
    # would not read packed rows off the position ids
    model.config.use_cache = False
    return model.eval(), tok


def _features(tok) -> list[dict]:
    """Rows as Axolotl's chat_template strategy leaves them: ids, labels (prompt masked), positions."""
    out = []
    for msgs in ROWS:
        ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=False)
        prompt = tok.apply_chat_template(msgs[:1], tokenize=True, add_generation_prompt=True, return_dict=False)
        labels = [-100] * len(prompt) + ids[len(prompt):]
        out.append({"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids),
                    "position_ids": list(range(len(ids)))})
    return out


def _token_losses(model, batch) -> torch.Tensor:
    with torch.no_grad():
        logits = model(**batch).logits.float()
    return F.cross_entropy(logits[0, :-1], batch["input_ids"][0, 1:], reduction="none")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_has_the_loss_it_has_alone(tiny, attn):
    from axolotl.utils.collators import V2BatchSamplerDataCollatorForSeq2Seq

    model, tok = tiny
    model.set_attn_implementation(attn)
    feats = _features(tok)
    collator = V2BatchSamplerDataCollatorForSeq2Seq(tokenizer=tok, padding=True, pad_to_multiple_of=64,
                                                    return_tensors="pt")
    packed = collator([feats])
    # what Axolotl's trainer feeds the model with sdpa/eager packing: no attention mask,
    # rows told apart by position ids restarting at 0 (sample_packing_drop_attention_mask)
    packed = {k: v for k, v in packed.items() if k in ("input_ids", "position_ids")}
    assert packed["input_ids"].shape[1] % 64 == 0, "padded like pad_to_sequence_len"
    together = _token_losses(model, packed)
    start = 0
    for f in feats:
        n = len(f["input_ids"])
        alone = _token_losses(model, {"input_ids": torch.tensor([f["input_ids"]])})
        # the last token of a row predicts the next row's first token: not a loss position
        torch.testing.assert_close(together[start:start + n - 1], alone, atol=1e-4, rtol=0)
        start += n
    # the check can fail: without restarting positions the rows attend to each other
    leaky = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1])[None])
    n0 = len(feats[0]["input_ids"])
    assert (_token_losses(model, leaky)[n0:n0 + 5] - together[n0:n0 + 5]).abs().max() > 1e-3


def test_real_tokens_counts_padding_out(tiny):
    from axolotl.utils.collators import V2BatchSamplerDataCollatorForSeq2Seq

    _, tok = tiny
    feats = _features(tok)
    real = sum(len(f["input_ids"]) for f in feats)
    collator = V2BatchSamplerDataCollatorForSeq2Seq(tokenizer=tok, padding=True, pad_to_multiple_of=128,
                                                    return_tensors="pt")
    packed = collator([feats, feats[:1]])  # two packed rows, the second mostly padding
    packed.pop("attention_mask")
    assert packed["position_ids"][1, -1] > 0, "Axolotl pads a packed row with positions 0, 1, 2, ..."
    assert real_tokens(packed, tok.pad_token_id) == (real + len(feats[0]["input_ids"]), packed["input_ids"].numel())
    padded = tok.pad([{"input_ids": f["input_ids"]} for f in feats], return_tensors="pt")
    assert real_tokens(dict(padded)) == (real, padded["input_ids"].numel())


def test_labelled_logits_give_the_same_loss_and_gradients(tiny):
    model, tok = tiny
    feats = _features(tok)
    batch = tok.pad([{"input_ids": f["input_ids"]} for f in feats], return_tensors="pt")
    width = batch["input_ids"].shape[1]
    labels = torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in feats])
    wrapped = copy.deepcopy(model).train()
    plain = copy.deepcopy(model).train()
    assert labelled_logits.install(wrapped) and not labelled_logits.install(wrapped)
    for extra in ({}, {"num_items_in_batch": torch.tensor(37)}):
        outs = []
        for m in (plain, wrapped):
            m.zero_grad()
            out = m(**batch, labels=labels, **extra)
            out.loss.backward()
            outs.append((out, m.model.layers[0].mlp.down_proj.weight.grad.clone()))
        (p_out, p_grad), (w_out, w_grad) = outs
        torch.testing.assert_close(w_out.loss, p_out.loss, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(w_grad, p_grad, atol=1e-6, rtol=1e-4)
        assert w_out.logits.shape[1] < p_out.logits.shape[1], "the wrapper must skip unlabelled positions"
    # not training, or no labels: the model's own path, full logits
    wrapped.eval()
    assert wrapped(**batch, labels=labels).logits.shape[1] == width
