"""Task metadata lives in the task YAMLs: what is reported and which way is better."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from tunebook import evaluate as ev
from tunebook.errors import TunebookError

TASKS = sorted(p.stem for p in Path("eval/tasks").glob("*.yaml"))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_names_a_main_metric_it_computes(task):
    meta = ev.task_meta(task)
    assert meta.main_metric.endswith(",none")
    assert ev.lower_is_better(task) == (task == "nba_ppl")  # only perplexity falls as the model improves


def test_a_main_metric_that_is_not_computed_is_an_error_at_its_key(tmp_path):
    shutil.copy("eval/tasks/nba_mc.yaml", tmp_path / "nba_mc.yaml")
    path = tmp_path / "nba_mc.yaml"
    path.write_text(path.read_text().replace("main_metric: acc ", "main_metric: accuracy "))
    with pytest.raises(TunebookError, match=r"metadata.main_metric: must name one of metric_list \(acc, acc_norm\)"):
        ev.task_meta("nba_mc", tmp_path)


def test_the_system_prompt_is_defined_once():
    from tunebook.data import nba

    assert ev.SYSTEM is nba.SYSTEM
    assert sum(p.read_text().count("NBA analytics assistant") for p in Path("tunebook").rglob("*.py")) == 1


def test_autocast_keeps_one_bf16_copy_of_frozen_weights_for_a_whole_generate():
    """An adapter's base weights are frozen, and torch's autocast caches casts only of weights
    that require grad: without `autocast_cacheable` each generated token re-casts every weight.
    Counted as the bf16 copies made, not timed; the tokens generated are the same."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import LlamaConfig, LlamaForCausalLM

    class Casts(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if (func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16
                    and args[0].data_ptr() in weights):  # a weight cast, not an activation's
                Casts.n += 1
            return func(*args, **kwargs)

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval().requires_grad_(False)
    ids = torch.tensor([[1, 5, 9, 3]])
    weights = {p.data_ptr() for p in model.parameters()}

    def generate(cacheable: bool):
        Casts.n = 0
        ctx = ev.autocast_cacheable(model) if cacheable else contextlib.nullcontext()
        with ctx, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), Casts():
            out = model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
        return out, Casts.n

    plain, plain_casts = generate(False)
    cached, cached_casts = generate(True)
    assert torch.equal(plain, cached)
    linear = sum(1 for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert plain_casts >= 8 * linear and cached_casts <= linear, (plain_casts, cached_casts)
    assert not any(p.requires_grad for p in model.parameters())  # put back as it came
