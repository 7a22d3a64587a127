"""Unsloth's CPU backend turns packing off; tunebook puts TRL's padding-free BFD packing back.

That is only safe if packed rows cannot see each other: with no attention mask and position
ids restarting at each row, transformers builds a block-diagonal mask. The check runs the real
Unsloth + TRL stack on a tiny model and compares a packed row's per-token loss with the row
alone (float32: equal to ~1e-6), against a control where positions do not restart (a leak,
~1e-1), so a tolerance of 1e-4 separates the two by three orders of magnitude.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).with_name("unsloth_packing_check.py")


# eager is what tunebook runs on a CPU; sdpa (GPUs, TUNEBOOK_CPU_ATTENTION=sdpa) builds its mask its own way
@pytest.mark.parametrize("mode,attention", [("", "sdpa"), ("4bit", "eager")])
def test_packed_rows_train_as_if_alone(smollm2_dir, mode, attention):
    proc = subprocess.run([sys.executable, str(CHECK), str(smollm2_dir), mode, attention], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["attention"] == attention
    # the trainer really packs: one row of three conversations, padding-free, no attention mask
    assert r["packing"] and r["padding_free"]
    # (TRL appends an EOS to each row that does not end with one: at most one token more per row)
    assert r["rows_in_batch"] == 3 and 0 <= r["batch_tokens"] - sum(r["row_tokens"]) <= 3
    assert "attention_mask" not in r["batch_keys"] and "position_ids" in r["batch_keys"]
    assert r["labels_masked"] > 0  # response-only loss survived the packing
    # the backend's clearing is what restore_packing undoes; if Unsloth stops clearing, nothing to restore
    assert r["restored"] == r["cleared_by_unsloth"]
    assert r["max_diff"] < 1e-4 < r["leak_diff"]
