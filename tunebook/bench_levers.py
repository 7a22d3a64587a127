"""`make bench-levers`: each speed lever measured on its own against the shipped recipe.

One short run per lever (recipe + ARGS, or recipe + environment), one after the other,
measured from outside exactly as `make bench-engines` measures (step-line clock, largest
process RSS, real tokens from run.json). A lever is kept in the shipped recipes only when
its row here beats the shipped row; the table in the README comes from `latest.md`.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunebook.bench_engines import OFFLINE, Result, _git_commit, _latest_record, _model_params, _run, derive
from tunebook.runs import atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class Lever:
    name: str
    recipe: str  # "lora", "qlora" or "full": which of the recipes it changes
    args: str = ""
    env: dict[str, str] = field(default_factory=dict)
    engine: str | None = None
    neighbour: bool = False  # one busy single-threaded process beside the run


ACTIVE = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "30000000000"}  # libgomp's own ACTIVE spin count
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "TUNEBOOK_ADAPTIVE_THREADS": "0"}
NO_WATCH = {"TUNEBOOK_ADAPTIVE_THREADS": "0"}

LEVERS = [
    Lever("LoRA as shipped (packed 512 x 1, bf16 autocast, eager attention, all cores, 0.1 ms spin, "
          "neighbour watcher, tcmalloc)", "lora"),
    Lever("fp32 instead of bf16", "lora", "bf16=false"),
    Lever("glibc malloc instead of tcmalloc (engines/allocator.py)", "lora", env={"TUNEBOOK_ALLOCATOR": "glibc"}),
    Lever("1 thread", "lora", env={"TUNEBOOK_THREADS": "1"}),
    # libgomp (torch's OpenMP): an explicit GOMP_SPINCOUNT overrides the policy's spin count
    # (PASSIVE 0, unset 300k, ACTIVE 3e10; ~100k spins a millisecond)
    Lever("OMP_WAIT_POLICY=PASSIVE (no spin)", "lora", env=PASSIVE),
    Lever("OMP_WAIT_POLICY=ACTIVE", "lora", env=ACTIVE),
    Lever("GOMP_SPINCOUNT=100000 (~1 ms spin)", "lora", env={"GOMP_SPINCOUNT": "100000"}),
    Lever("oneDNN primitive cache 1024 (its default) instead of 256", "lora", env={"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}),
    Lever("packed 512 x 2 (micro batch 2)", "lora", "micro_batch_size=2"),
    Lever("packed 1024 x 1", "lora", "sequence_len=1024"),
    Lever("packed 256 x 1", "lora", "sequence_len=256"),
    Lever("sdpa attention instead of eager (its CPU flash backward: 20% of the step, make profile)", "lora",
          env={"TUNEBOOK_CPU_ATTENTION": "sdpa"}),
    Lever("gradient checkpointing", "lora", "gradient_checkpointing=true"),
    Lever("torch.compile", "lora", "torch_compile=true"),
    Lever("logits at every position (tunebook's labelled logits off)", "lora", env={"TUNEBOOK_LABELLED_LOGITS": "0"}),
    Lever("Axolotl's chunked cross-entropy (labelled logits off)", "lora", "chunked_cross_entropy=true",
          env={"TUNEBOOK_LABELLED_LOGITS": "0"}),
    Lever("busy neighbour: as the recipe runs (spin, watcher gives up a thread)", "lora", neighbour=True),
    Lever("busy neighbour: spin, watcher off", "lora", env=NO_WATCH, neighbour=True),
    Lever("busy neighbour: OMP_WAIT_POLICY=PASSIVE (no spin), watcher off", "lora", env=PASSIVE, neighbour=True),
    Lever("busy neighbour: OMP_WAIT_POLICY=ACTIVE, watcher off", "lora", env={**ACTIVE, **NO_WATCH}, neighbour=True),
    Lever("LoRA, for-loop AdamW (adamw_torch) instead of fused", "lora", "optimizer=adamw_torch"),
    Lever("full fine-tuning as shipped (packed 512 x 1, bf16 autocast, fp32 masters, fused AdamW)", "full"),
    Lever("full fine-tuning, glibc malloc instead of tcmalloc", "full", env={"TUNEBOOK_ALLOCATOR": "glibc"}),
    Lever("full fine-tuning, for-loop AdamW (adamw_torch) instead of fused", "full", "optimizer=adamw_torch"),
    Lever("full fine-tuning, packed 256 x 1", "full", "sequence_len=256"),
    Lever("QLoRA as shipped (Unsloth, padded x 8, grouped by length, gradient checkpointing)", "qlora"),
    Lever("QLoRA, Unsloth, glibc malloc instead of tcmalloc", "qlora", env={"TUNEBOOK_ALLOCATOR": "glibc"}),
    Lever("QLoRA, Unsloth, oneDNN primitive cache 1024 (its default) instead of 256", "qlora",
          env={"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}),
    Lever("QLoRA, Unsloth, gradient checkpointing off (faster, every activation kept)", "qlora",
          "gradient_checkpointing=false"),
    Lever("QLoRA, Unsloth, gradient checkpointing off, sdpa attention", "qlora", "gradient_checkpointing=false",
          env={"TUNEBOOK_CPU_ATTENTION": "sdpa"}),
    Lever("QLoRA, Unsloth, sdpa attention instead of eager", "qlora", env={"TUNEBOOK_CPU_ATTENTION": "sdpa"}),
    Lever("QLoRA, Unsloth, random order (no group_by_length)", "qlora", "group_by_length=false"),
    Lever("QLoRA, Unsloth, micro batch 4 (v6)", "qlora", "micro_batch_size=4"),
    Lever("QLoRA, Unsloth, micro batch 16", "qlora", "micro_batch_size=16"),
    Lever("QLoRA, Unsloth packed 512 x 1 (TRL BFD, padding-free)", "qlora", "sample_packing=true micro_batch_size=1"),
    Lever("QLoRA, Unsloth packed 1024 x 1", "qlora", "sample_packing=true micro_batch_size=1 sequence_len=1024"),
    Lever("QLoRA through Axolotl (packed 512 x 1)", "qlora", "sample_packing=true micro_batch_size=1 "
          "pad_to_sequence_len=true", engine="axolotl"),
]


def run(recipes: dict[str, Path], steps: int, out_dir: Path, only: str | None = None, echo=print) -> dict:
    from tunebook.bench import matmul_peaks
    from tunebook.machine import detect

    import yaml

    machine = detect()
    model = yaml.safe_load(recipes["lora"].read_text(encoding="utf-8"))["base_model"]
    n_params = _model_params(model)
    echo(f"measuring matmul peaks on {machine.kind} ...")
    peaks = matmul_peaks(seconds=2.0)
    results: list[Result] = []
    common = f"max_steps={steps} save_strategy=no save_steps=null"
    bindir = str(Path(sys.executable).parent)
    with tempfile.TemporaryDirectory(prefix="tunebook-bench-levers-") as tmp:
        for i, lever in enumerate(LEVERS):
            if only and not re.search(only, lever.name, re.I):
                continue
            runs = Path(tmp) / f"lever-{i}"
            cmd = [sys.executable, "-m", "tunebook", "train", str(recipes[lever.recipe]), "--args",
                   f"{common} {lever.args}".strip(), "--runs", str(runs)] + (["--engine", lever.engine] if lever.engine else [])
            env = {**os.environ, **OFFLINE, **lever.env, "PYTHONUNBUFFERED": "1",
                   "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
            log = out_dir / "logs" / f"lever-{i}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            echo(f"== {lever.name} ...")
            rc, stamps, rss, _wall = _run(cmd, env, log, neighbour=lever.neighbour, steps=steps)
            r = Result(lever.name, lever.args or "-", ok=rc == 0 and len(stamps) >= 2, steps=len(stamps),
                       log=str(log), peak_rss_mib=round(rss, 1),
                       flops_per_token=(6 if lever.recipe == "full" else 4) * n_params)
            if stamps:
                r.time_to_first_step_s = round(stamps[0], 1)
            if len(stamps) >= 2:
                r.steady_s = round(stamps[-1] - stamps[0], 2)
            record = _latest_record(runs)
            if record:
                r.tokens_real = record.tokens.total
                r.compute_dtype = record.compute_dtype
                eff = record.tokens.packing_efficiency
                if eff is not None:
                    r.notes.append(f"packing efficiency {eff:.2f}")
            if rc != 0:
                r.notes.append(f"exit code {rc}; see {log}")
            results.append(r)
            derive(results, peaks)
            echo(f"   {r.tokens_per_s} tok/s, first step {r.time_to_first_step_s} s, peak RSS {r.peak_rss_mib} MiB")
    commit = _git_commit()
    for r in results:
        r.notes.append(f"commit {commit}")
    report = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine_kind": machine.kind, "machine": asdict(machine),
              "git_commit": commit, "steps": steps, "peaks_flops": peaks, "model_params": n_params,
              "results": [asdict(r) for r in merge(results, _previous(out_dir, machine.kind, steps) if only else [])]}
    atomic_write_json(out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}.json", report)
    atomic_write_text(out_dir / "latest.md", table(report))
    return report


def _previous(out_dir: Path, kind: str, steps: int) -> list[Result]:
    """The rows of the last full or partial report on this machine class with the same steps."""
    import json

    for f in sorted(out_dir.glob("*.json"), reverse=True):
        rep = json.loads(f.read_text(encoding="utf-8"))
        if rep.get("machine_kind") == kind and rep.get("steps") == steps:
            rows = [Result(**r) for r in rep["results"]]
            for r in rows:
                if not any(n.startswith("commit ") for n in r.notes):
                    r.notes.append(f"commit {rep.get('git_commit')}")
            return rows
    return []


def merge(new: list[Result], old: list[Result]) -> list[Result]:
    """An `--only` run's rows replace the same levers' rows of the last report; the table keeps
    LEVERS' order (levers no longer listed drop out) and each row names the commit it was
    measured at. Ratios are recomputed."""
    by_name = {r.name: r for r in old} | {r.name: r for r in new}
    rows = [by_name[lv.name] for lv in LEVERS if lv.name in by_name]  # retired levers drop out
    versus_shipped(rows)
    return rows


def versus_shipped(results: list[Result]) -> None:
    """Each lever's rate over its recipe's shipped rate (kept in the `vs_plain_axolotl` slot)."""
    recipe_of = {lv.name: lv.recipe for lv in LEVERS}
    shipped = {recipe_of[r.name]: r for r in results if r.name in recipe_of and "as shipped" in r.name}
    for r in results:
        base = shipped.get(recipe_of.get(r.name, ""))
        r.vs_plain_axolotl = (round(r.tokens_per_s / base.tokens_per_s, 2)
                              if base and base.tokens_per_s and r.tokens_per_s else None)


def table(report: dict) -> str:
    peaks = report["peaks_flops"]
    head = (f"Levers, {report['steps']} steps each, {report['machine_kind']}, commit {report['git_commit']}; "
            f"matmul peaks bf16 {(peaks.get('bf16') or 0) / 1e9:.0f}, fp32 {(peaks.get('fp32') or 0) / 1e9:.0f} GFLOP/s\n\n"
            "| lever | tokens/s | vs shipped | % of best peak | first step s | peak RSS MiB | dtype | notes |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")
    rows = []
    for r in report["results"]:
        # of the machine's best peak (the faster of bf16 and fp32): the smaller fraction
        best = min((x for x in (r.get("frac_bf16_peak"), r.get("frac_fp32_peak")) if x is not None), default=0)
        rows.append(f"| {r['name']} | {r['tokens_per_s'] or 'failed'} | {r['vs_plain_axolotl'] or ''} | "
                    f"{best:.0%} | {r['time_to_first_step_s']} | {r['peak_rss_mib']:.0f} | {r['compute_dtype']} | "
                    f"{'; '.join(r['notes'])} |")
    return head + "\n".join(rows) + "\n"
