"""A killed run resumes exactly; failed writes and concurrent runs leave valid records.

Real processes and real signals on a tiny Llama: SIGKILL to `tunebook train` (what `kill -9`
of `make train` does), then `train(..., resume="latest")` in the same run directory.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_tiny_recipe
from tunebook.errors import TunebookError
from tunebook.runs import MARKER, RunDir
from tunebook.train import train

LORA = Path("recipes/smollm2/lora.yaml")


def _processes_with(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def _losses(run: RunDir) -> list[tuple[int, float]]:
    return [(p.step, p.loss) for p in run.read_record().loss_curve]


def test_a_killed_run_resumes_to_the_loss_curve_of_an_uninterrupted_one(tiny_llama, tmp_path):
    # Packed, as the shipped recipe (Axolotl's packed sampler needed tunebook's seeded order,
    # engines/packed_order.py); 24 rows make ~10 packs, so 24 steps cross two epochs. A
    # checkpoint every 4 steps: the kill lands after the first, well before the end.
    data = tmp_path / "train.jsonl"
    data.write_text("".join(Path("data/nba/train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:24]))
    recipe = write_tiny_recipe(LORA, tmp_path / "r.yaml", tiny_llama, data, max_steps=24, sample_packing=True,
                               micro_batch_size=1, sequence_len=256, pad_to_sequence_len=True,
                               save_strategy="steps", save_steps=4, logging_steps=1, learning_rate=1e-2)
    whole = train(recipe, runs_root=tmp_path / "whole", echo=False)

    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "tunebook", "train", str(recipe), "--runs", str(runs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        found = [RunDir(p) for p in runs.glob("*/*") if p.is_dir() and not p.is_symlink()]
        if found and found[0].checkpoints():
            proc.send_signal(signal.SIGKILL)  # no handler can run: the run is left `running`
            killed = found[0]
            break
        time.sleep(0.02)
    assert killed is not None, f"the run ended before a checkpoint could be killed: {proc.stderr.read()[-2000:]}"
    proc.wait(timeout=30)
    config = str(killed.path / "config.yaml")
    for _ in range(100):  # the engine gets SIGKILL from the kernel when its parent dies
        if not _processes_with(config):
            break
        time.sleep(0.1)
    assert not _processes_with(config), "the engine trained on, orphaned, after its parent was killed"
    assert killed.read_record().status == "running" and (killed.path / MARKER).exists()
    assert not (runs / killed.path.parent.name / "latest").exists()

    resumed = train(recipe, runs_root=runs, resume="latest", echo=False)
    assert resumed.path == killed.path  # the same run directory, not a new run
    record = resumed.read_record()
    assert record.status == "finished" and resumed.is_complete and not (resumed.path / MARKER).exists()
    assert [s.status for s in record.segments] == ["killed", "finished"]
    assert record.segments[1].from_step > 0 and record.segments[1].steps == 24
    a, b = _losses(whole), _losses(resumed)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 25))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < 1e-4, list(zip(a, b))
    # Determinism (the nightly trusts it, run.json says so): up to the checkpoint, the killed
    # run's own steps equal the uninterrupted run's bit for bit
    cut = record.segments[1].from_step
    assert a[:cut] == b[:cut]
    assert record.determinism["expected"] is True

    from tunebook.loading import load_run

    loaded = load_run(resumed)
    assert loaded.model.peft_config  # the final adapter loads onto its base

    with pytest.raises(TunebookError, match="finished; there is nothing to resume"):
        train(recipe, runs_root=runs, resume="latest", echo=False)


def test_resume_refuses_args_a_run_without_checkpoints_and_a_run_in_use(tiny_llama, memorise_data, tmp_path):
    recipe = write_tiny_recipe(LORA, tmp_path / "r.yaml", tiny_llama, memorise_data)
    with pytest.raises(TunebookError, match="ARGS and ENGINE cannot change it"):
        train(recipe, "max_steps=3", runs_root=tmp_path / "runs", resume="latest", echo=False)
    with pytest.raises(TunebookError, match="no run of this recipe to resume"):
        train(recipe, runs_root=tmp_path / "runs", resume="latest", echo=False)
    run = RunDir.create("smollm2-lora", tmp_path / "runs")
    (run.path / "run.json").write_text(json.dumps({
        "status": "interrupted", "run_id": run.path.name, "run_dir": str(run.path), "engine": "axolotl",
        "recipe": {"name": "smollm2-lora", "version": 1, "method": "lora"}, "machine": {"kind": "cpu"}}))
    with pytest.raises(TunebookError, match="no complete checkpoint") as info:
        train(recipe, runs_root=tmp_path / "runs", resume=run.path.name, echo=False)
    assert info.value.exit_code == 2
    half = run.output / "checkpoint-4"  # cut short by a kill: no trainer_state.json yet
    half.mkdir(parents=True)
    (half / "adapter_model.safetensors").write_bytes(b"")
    assert run.checkpoints() == []
    whole = run.output / "checkpoint-2"
    whole.mkdir()
    (whole / "trainer_state.json").write_text("{}")
    assert [s for s, _ in run.checkpoints()] == [2]
    with run.held():  # another process is training it
        with pytest.raises(TunebookError, match="another process is training this run"):
            train(recipe, runs_root=tmp_path / "runs", resume="latest", echo=False)


def test_two_runs_at_once_and_a_full_disk(tiny_llama, memorise_data, tmp_path):
    """Two `make train` of one recipe at the same moment, one of them on a disk that takes no
    file over 1 MiB (`ulimit -f`: the engine's tokenizer.json is 3.5 MB): distinct run
    directories, both records valid, the full disk's run failed with one line of cause, and
    `latest` points at the run that finished."""
    recipe = write_tiny_recipe(LORA, tmp_path / "r.yaml", tiny_llama, memorise_data)
    runs = tmp_path / "runs"
    cmd = f"{sys.executable} -m tunebook train {recipe} --runs {runs}"
    full = subprocess.Popen(["bash", "-c", f"ulimit -f 1024; exec {cmd}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    fine = subprocess.Popen(cmd.split(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (full_out, full_err), (_, fine_err) = full.communicate(timeout=600), fine.communicate(timeout=600)
    assert fine.returncode == 0, fine_err[-2000:]
    assert full.returncode == 1 and "Traceback" not in full_err + full_out
    assert "File too large" in full_err, full_err[-2000:]
    dirs = sorted(p for p in (runs / "smollm2-lora").iterdir() if not p.is_symlink())
    assert len(dirs) == 2
    records = {RunDir(d).read_record().status: RunDir(d) for d in dirs}  # both parse as records
    assert set(records) == {"finished", "failed"}
    assert "File too large" in records["failed"].read_record().error
    assert (records["failed"].path / MARKER).exists()
    assert (runs / "smollm2-lora" / "latest").resolve() == records["finished"].path.resolve()
