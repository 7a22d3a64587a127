"""End-to-end on the real SmolLM2-135M (`make test-slow`): minutes, not seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunebook.recipe import load_recipe

pytestmark = pytest.mark.slow


def test_make_train_lora_on_the_real_model(tmp_path):
    proc = subprocess.run(
        ["make", "train", "RECIPE=recipes/smollm2/lora.yaml", "ARGS=max_steps=12"],
        capture_output=True, text=True, timeout=1800, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    meta = load_recipe("recipes/smollm2/lora.yaml").meta  # the version as shipped, never a copy of it
    assert f"== smollm2-lora v{meta.version} (lora, axolotl) finished ==" in proc.stdout
    record = json.loads((Path("runs/smollm2-lora/latest") / "run.json").read_text())
    losses = [p["loss"] for p in record["loss_curve"]]
    assert len(losses) == 12
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses


def test_axolotl_cli_runs_the_recipe_file_unchanged(tmp_path):
    venv_bin = str(Path(sys.executable).parent)  # "inside the venv": axolotl execs `accelerate`
    env = {**os.environ, "PATH": venv_bin + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_MODE": "disabled", "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "axolotl"), "train", "recipes/smollm2/lora.yaml",
         "--max-steps=2", f"--output-dir={out}"],
        capture_output=True, text=True, timeout=1800, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file()


def test_export_q4_and_serve_an_nba_answer():
    """The issue's acceptance path on the real model: the latest smollm2-lora run (the test
    above trains one) exported to q4_k_m, served, and asked an NBA question with curl's
    equivalent (plain HTTP, no client library)."""
    import urllib.request

    from tunebook import export as ex
    from tunebook.runs import find_run
    from tunebook.serve import Server

    run = find_run("smollm2-lora")
    record = ex.export_run(run, ["q4_k_m"])
    assert record.quants["f16"].passed and record.quants["q4_k_m"].passed
    assert record.quants["f16"].answers_same >= 18, [a for a in record.quants["f16"].answers if not a.same]
    q = json.loads(Path("data/nba/test.jsonl").read_text().splitlines()[0])
    with Server(ex.latest_gguf(run), "smollm2-lora") as server:
        req = urllib.request.Request(f"{server.url}/chat/completions", method="POST",
                                     headers={"Content-Type": "application/json"},
                                     data=json.dumps({"messages": q["messages"][:-1], "temperature": 0,
                                                      "max_tokens": 48}).encode())
        answer = json.loads(urllib.request.urlopen(req, timeout=120).read())["choices"][0]["message"]["content"]
    assert answer.strip(), "an empty answer"
