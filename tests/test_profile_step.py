"""`tunebook profile`: the step profiler rides the engine's real loop and folds op time into kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_tiny_recipe
from tunebook.profile_step import fold, kind_of, profile, table


def test_ops_fold_into_kinds_that_sum_to_one():
    ops = [{"name": "aten::mm", "self_cpu_s": 3.0}, {"name": "bitsandbytes::dequantize_4bit", "self_cpu_s": 1.0},
           {"name": "aten::_scaled_dot_product_flash_attention_for_cpu", "self_cpu_s": 1.0},
           {"name": "aten::_fused_adamw_", "self_cpu_s": 0.5}, {"name": "aten::gelu", "self_cpu_s": 0.5}]
    kinds = fold(ops)
    assert kinds == {"matmul": 0.5, "4-bit dequantise": 1 / 6, "attention": 1 / 6, "optimizer": 1 / 12,
                     "other": 1 / 12}
    assert list(kinds)[0] == "matmul" and abs(sum(kinds.values()) - 1) < 1e-9
    assert kind_of("aten::_log_softmax_backward_data") == "loss"


@pytest.mark.parametrize("method,dequant", [("lora", False), pytest.param("qlora", True, marks=pytest.mark.matrix)])
def test_profile_of_a_real_tiny_run(method, dequant, tiny_llama, memorise_data, tmp_path):
    recipe = write_tiny_recipe(Path(f"recipes/smollm2/{method}.yaml"), tmp_path / "r.yaml", tiny_llama, memorise_data)
    p = profile(recipe, "", first=2, last=3, runs_root=tmp_path / "runs", shapes=method == "lora")
    # what ran, not how fast: op names and shares, never a time threshold (CI machines are busy)
    assert p.steps == 2 and p.tokens > 0
    assert "matmul" in p.kinds and ("4-bit dequantise" in p.kinds) is dequant
    assert abs(sum(p.kinds.values()) - 1) < 1e-6 and "where the time goes" in table(p)
    # split by shapes (LoRA's case): each matmul row names its operands' sizes
    mm = [o["name"] for o in p.top if o["name"].startswith("aten::mm")]
    assert mm and all((" [[" in name) is (method == "lora") for name in mm), p.top
