"""`TrimmedHFLM` scores what lm-eval's own HF model scores, from fewer FLOPs, in every family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FAMILIES = ["llama3", "qwen3", "gemma3", "mistral"]


def _requests(tok, n: int):
    """nba_mc's first documents as lm-eval asks them: the chat-templated question, each choice."""
    from lm_eval.api.instance import Instance

    from tunebook.evaluate import SYSTEM

    docs = [json.loads(line) for line in Path("data/nba/test_mc.jsonl").read_text().splitlines()[:n]]
    out = []
    for doc in docs:
        ctx = tok.apply_chat_template([{"role": "system", "content": SYSTEM},
                                       {"role": "user", "content": f"Question: {doc['question']}\nAnswer:"}],
                                      tokenize=False, add_generation_prompt=True)
        out += [Instance("loglikelihood", doc, (ctx, " " + c), len(out)) for c in doc["choices"]]
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prompts_score_what_lm_eval_scores(family, tiny_models):
    """Multiple choice from one pass over each question and one over its choices (a cache,
    right-padded contexts, explicit positions) gives every loglikelihood and greedy flag that
    lm-eval's loop gives (fp32: rounding only), and the shared path really ran. Gemma 3's tiny
    model has a 64-token sliding window, shorter than these prompts: there the shared path must
    stay off (a padded cache would shift the window); with the window widened it runs and agrees."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebook.eval_lm import TrimmedHFLM

    path = tiny_models(family)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():  # random init attends almost uniformly, blind to positions: sharpen it
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(8.0)
    requests = _requests(tok, 6)
    calls: list[tuple[bool, int]] = []
    forward = model.forward

    def spy(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append((kwargs.get("past_key_values") is not None, ids.numel()))
        return forward(*args, **kwargs)

    model.forward = spy
    for window in ([64, 4096] if family == "gemma3" else [None]):
        if window is not None:
            model.config.sliding_window = window
        scores = {}
        for cls in (HFLM, TrimmedHFLM):
            calls.clear()
            lm = cls(pretrained=model, tokenizer=tok, batch_size=8, max_length=1024, softmax_dtype=torch.float32)
            scores[cls.__name__] = lm.loglikelihood(requests, disable_tqdm=True), list(calls)
        (plain, plain_calls), (trimmed, trimmed_calls) = scores["HFLM"], scores["TrimmedHFLM"]
        assert [g for _, g in trimmed] == [g for _, g in plain]
        assert [ll for ll, _ in trimmed] == pytest.approx([ll for ll, _ in plain], rel=1e-5, abs=1e-4), (family, window)
        shared = any(cached for cached, _ in trimmed_calls)
        assert shared == (window != 64), (family, window)
        if shared:  # each question once instead of once per choice: fewer tokens through the model
            assert sum(n for _, n in trimmed_calls) < 0.8 * sum(n for _, n in plain_calls)


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_attention_generates_what_sdpa_generates(family, tiny_models, monkeypatch):
    """Generating through the CPU decode attention (grouped-query heads as rows of one fp32
    matmul, no cache copies) gives the tokens and scores transformers' sdpa gives, on a
    left-padded batch (a mask in play), with attention sharp enough that positions and masks
    matter; the model is back on sdpa afterwards, and every decode step of every layer really
    went through the grouped path (and prefill did not)."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebook.decode_attention import NAME, cpu_decode_attention

    path = tiny_models(family)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(8.0)
    batch = tok(["Who scored the most points?", "Is he active?", "A longer question about rebounds and assists"],
                return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=8, do_sample=False, output_scores=True, return_dict_in_generate=True,
              pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        plain = model.generate(**batch, **kw)
    import tunebook.decode_attention as decode

    grouped, gqa_calls = decode._grouped_decode, []

    def spy(q, k, v, *args, **kwargs):
        gqa_calls.append(q.shape[2] == 1 and k.shape[1] <= q.shape[1])
        return grouped(q, k, v, *args, **kwargs)

    monkeypatch.setattr(decode, "_grouped_decode", spy)
    with torch.no_grad(), cpu_decode_attention(model):
        assert model.config._attn_implementation == NAME
        ours = model.generate(**batch, **kw)
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(ours.sequences, plain.sequences)
    for a, b in zip(ours.scores, plain.scores):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert all(gqa_calls) and len(gqa_calls) == 7 * model.config.num_hidden_layers  # 7 decode steps, every layer


def test_generation_decodes_wider_batches_on_cpu(tiny_models):
    """Generated answers go to the model `generate_batch` rows at a time on a CPU (a decode step
    costs little more for more rows), whatever batch the scorer was built with, and the scorer's
    own batch size (what multiple choice uses) is back afterwards; the answers are lm-eval's."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebook.eval_lm import TrimmedHFLM

    path = tiny_models("llama3")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    gen = {"until": ["\n"], "max_gen_toks": 4, "do_sample": False}
    requests = [Instance("generate_until", {}, (f"Question {i}: who scored {i * 7} points?", gen), i)
                for i in range(20)]
    rows: list[int] = []
    generate = model.generate

    def spy(*args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    model.generate = spy
    lm = TrimmedHFLM(pretrained=model, tokenizer=tok, batch_size=4, max_length=256)
    lm.generate_batch = 8
    ours = lm.generate_until(requests, disable_tqdm=True)
    assert rows == [8, 8, 4] and lm.batch_size == 4
    rows.clear()
    plain = HFLM(pretrained=model, tokenizer=tok, batch_size=4, max_length=256).generate_until(requests, disable_tqdm=True)
    assert rows == [4] * 5
    assert ours == plain
