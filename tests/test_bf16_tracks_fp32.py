"""bf16 autocast on CPU trains the same model as fp32, through Axolotl's own train path.

Two runs each of the shipped LoRA and full recipes on a tiny Llama and memorisable data (all 8 rows in every
step, so the two runs see the same batches whatever the shuffle), one in fp32 and
one in bf16 (a machine with AVX512-BF16 stands in for this one, so the check runs on every
CPU; on one without bf16 hardware torch emulates it, which for a 64-wide model is quick).

Tolerance: bf16 keeps 8 significant bits, so each matmul input is rounded by up to 2^-9
(0.2%); the loss itself is computed in fp32 from those logits. Measured here the two
curves differ by at most 0.3% of the loss over 8 steps at lr 3e-3, about as much as two
fp32 runs differ from each other (multi-threaded reductions: 0.25%). 2% per step leaves
room for other CPUs' kernels; a wrong dtype path (fp16 overflow, updates lost in a bf16
copy, no autocast at all) shows up as a different or flat curve. The learning rate is
kept where training is smooth: at 1e-2 the loss spikes chaotically, and even two fp32
runs part by 3%. Full fine-tuning must keep fp32 master weights under bf16 autocast (the
plugin upcasts what Axolotl loaded in bf16), or small Adam updates vanish in rounding.
"""

from __future__ import annotations

import json

import dataclasses

import pytest

from conftest import write_tiny_recipe
from tunebook.machine import detect
from tunebook.train import train

STEPS = 8
# learning rates where each method's curve is smooth on this data
METHODS = {"lora": {"learning_rate": 3e-3, "lora_dropout": 0.0}, "full": {"learning_rate": 1e-3}}


# full fine-tuning's pair runs nightly (`matrix`): make test keeps LoRA's, the shipped recipes' path
@pytest.fixture(scope="module", params=[pytest.param("full", marks=pytest.mark.matrix), "lora"])
def curves(request, tmp_path_factory, tiny_llama, memorise_data):
    method = request.param
    bf16_cpu = dataclasses.replace(detect(), cpu_flags=("avx512f", "avx512_bf16", "avx2"))
    out = {"method": method}
    for name, bf16 in (("fp32", False), ("bf16", "auto")):
        work = tmp_path_factory.mktemp(f"{method}-{name}")
        recipe = write_tiny_recipe(f"recipes/smollm2/{method}.yaml", work / "recipe.yaml", tiny_llama, memorise_data,
                                   max_steps=STEPS, micro_batch_size=8, bf16=bf16, **METHODS[method])
        run = train(recipe, runs_root=work / "runs", echo=False, machine=bf16_cpu)
        out[name] = json.loads(run.record_path.read_text())
    return out


def test_run_records_the_compute_dtype_actually_used(curves):
    assert curves["fp32"]["precision"]["compute_dtype"] == "float32"
    assert curves["fp32"]["precision"]["autocast"] is None
    assert curves["fp32"]["precision"]["master_dtype"] == "float32"
    # LoRA: frozen base in bf16, fp32 adapters; full: every weight fp32, matmuls in bf16
    weights = "bfloat16" if curves["method"] == "lora" else "float32"
    assert curves["bf16"]["precision"] == {"compute_dtype": "bfloat16", "autocast": "bfloat16",
                                           "weights_dtype": weights, "master_dtype": "float32", "device": "cpu"}
    assert any(c["key"] == "bf16" and c["new"] is True for c in curves["bf16"]["adaptations"])


def test_bf16_loss_curve_tracks_fp32(curves):
    fp32 = [p["loss"] for p in curves["fp32"]["loss_curve"]]
    bf16 = [p["loss"] for p in curves["bf16"]["loss_curve"]]
    assert len(fp32) == len(bf16) == STEPS
    for step, (a, b) in enumerate(zip(fp32, bf16), 1):
        assert abs(a - b) <= 0.02 * a, f"step {step}: fp32 {a:.4f} vs bf16 {b:.4f}"
    assert fp32[-1] < fp32[0] - 0.25 and bf16[-1] < bf16[0] - 0.25, "both must learn"
    assert fp32 != bf16, "identical curves: bf16 did not run"

