"""`make bench-engines`: the same model, data and steps through every way of training it.

Contenders, each a child process launched one after the other (two at once on a small CPU
would measure OpenMP contention, not the engines):

- plain `axolotl train` of the recipe, as a user runs it (the baseline of every ratio);
- tunebook through Axolotl, as shipped (packed) and on the padded batches Unsloth uses;
- tunebook through Unsloth, LoRA and the QLoRA recipe, on those padded batches;
- Unsloth's own CPU path as its notebooks write it (`tunebook.plain_unsloth`), same padded batches;
- transformers + peft written by hand (`tunebook.floor_peft`), the floor;
- tunebook through Axolotl again with one busy single-threaded process beside it.

Every contender is measured the same way, from outside: the wall clock at each per-step log
line (`logging_steps: 1` everywhere) gives the time to the first step and the steady rate
(steps 2..N, no start-up), and a poll of the process tree gives the peak RSS of its largest
process. Real (non-pad) tokens come from what each run recorded: tunebook's run.json, the
scripts' own counts. Plain Axolotl packs the same rows into the same 512-token rows as
tunebook's packed run (same sampler and seed), so its real tokens per step are that run's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from tunebook import records
from tunebook.records import RunRecord
from tunebook.runs import atomic_write_json, atomic_write_text

STEP_LINE = re.compile(r"\{'loss': ")  # a logged step, as transformers prints it (plain axolotl, floor)
BAR_STEP = re.compile(r"\|\s*(\d+)/(\d+) \[")  # tqdm's "| 5/20 [": tunebook shows the bar, not the dicts
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "AXOLOTL_DO_NOT_TRACK": "1"}


@dataclass
class Contender:
    name: str
    cmd: list[str]
    shapes: str
    method: str = "lora"  # FLOPs per token: 4N with a frozen base
    tokens: str = "run"  # where its real tokens come from: "run" (run.json), "file" (tokens_file), or another contender's name
    tokens_file: Path | None = None  # a script's own count: {"tokens_real": n, "compute_dtype": ...}
    runs: Path | None = None
    neighbour: bool = False


@dataclass
class Result:
    name: str
    shapes: str
    ok: bool
    steps: int = 0
    time_to_first_step_s: float | None = None
    steady_s: float | None = None
    tokens_real: int | None = None
    tokens_per_s: float | None = None
    peak_rss_mib: float | None = None
    frac_bf16_peak: float | None = None
    frac_fp32_peak: float | None = None
    vs_plain_axolotl: float | None = None
    compute_dtype: str | None = None
    tokens_from: str | None = None  # another contender whose real tokens per step this one shares
    flops_per_token: int | None = None
    log: str = ""
    notes: list[str] = field(default_factory=list)


def _watch(proc: subprocess.Popen, peak: list[float], stop: threading.Event) -> None:
    import psutil

    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
            peak[0] = max(peak[0], *(p.memory_info().rss for p in procs))
        except psutil.Error:
            pass
        stop.wait(0.2)


def _run(cmd: list[str], env: dict, log: Path, neighbour: bool, steps: int,
         ) -> tuple[int, list[float], float, float]:
    """(returncode, times of the step lines since launch, peak RSS MiB of the largest process, wall).

    A contender timed by its progress bar shows other bars first (transformers' "Loading
    weights 272/272", dataset maps): only the bar whose total is the run's `steps` is its
    training."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
    t0 = time.perf_counter()
    stamps: list[float] = []
    peak, stop = [0.0], threading.Event()
    try:
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
            watcher = threading.Thread(target=_watch, args=(proc, peak, stop), daemon=True)
            watcher.start()
            buf, bar_stamps, last_bar = b"", [], 0
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(65536):
                now = time.perf_counter() - t0
                f.write(chunk)
                buf += chunk
                *lines, buf = re.split(rb"[\r\n]", buf)
                for line in (raw.decode("utf-8", "replace") for raw in lines):
                    if STEP_LINE.search(line):
                        stamps.append(now)
                    elif (m := BAR_STEP.search(line)) and int(m.group(2)) == steps and int(m.group(1)) > last_bar:
                        last_bar = int(m.group(1))
                        bar_stamps.append(now)
            rc = proc.wait()
            stamps = stamps or bar_stamps  # a contender that prints no step dicts is timed by its bar
            stop.set()
            watcher.join()
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return rc, stamps, peak[0] / 2**20, time.perf_counter() - t0


def _latest_record(runs: Path) -> RunRecord | None:
    found = sorted(runs.glob("*/*/run.json"))
    return records.load(found[-1], RunRecord) if found else None


def contenders(recipe: Path, qlora: Path, steps: int, work: Path, data: str, model: str) -> list[Contender]:
    py, tb = sys.executable, [sys.executable, "-m", "tunebook", "train"]
    cfg = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    cfg.update({"max_steps": steps, "save_strategy": "no", "output_dir": str(work / "plain-axolotl")})
    cfg.pop("save_steps", None)
    plain = work / "plain-axolotl.yaml"
    plain.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    axolotl = str(Path(sys.executable).parent / "axolotl")
    common = f"max_steps={steps} save_strategy=no save_steps=null"
    padded = f"{common} sample_packing=false pad_to_sequence_len=false micro_batch_size=4"
    packed = f"packed {cfg['sequence_len']} x {cfg['micro_batch_size']}" if cfg.get("sample_packing") else "as recipe"
    out = [Contender("axolotl train (plain)", [axolotl, "train", str(plain)], packed, tokens="tunebook → axolotl")]
    for name, rec, args, eng, shapes, extra in (
            ("tunebook → axolotl", recipe, common, None, packed, {}),
            ("tunebook → axolotl, padded x4", recipe, padded, None, "padded x 4", {}),
            ("tunebook → unsloth", recipe, padded, "unsloth", "padded x 4", {}),
            ("tunebook → unsloth QLoRA", qlora, padded, None, "padded x 4" + (
                ", by length" if yaml.safe_load(qlora.read_text(encoding="utf-8")).get("group_by_length") else ""), {}),
            ("tunebook → axolotl, busy neighbour", recipe, common, None, packed, {"neighbour": True})):
        runs = work / re.sub(r"\W+", "-", name).strip("-")
        cmd = [*tb, str(rec), "--args", args, "--runs", str(runs)] + (["--engine", eng] if eng else [])
        out.append(Contender(name, cmd, shapes, runs=runs, **extra))
    for name, module, stem in (("unsloth (plain)", "tunebook.plain_unsloth", "plain-unsloth"),
                               ("transformers + peft (floor)", "tunebook.floor_peft", "floor")):
        counts = work / f"{stem}.json"
        out.append(Contender(name, [py, "-m", module, model, data, str(steps), "4", str(counts)], "padded x 4",
                             tokens="file", tokens_file=counts))
    return out


def _model_params(model: str) -> int:
    import math

    from safetensors import safe_open

    n = 0
    for f in Path(model).glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            n += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return n


def run(recipe: Path, qlora: Path, steps: int, out_dir: Path, echo=print) -> dict:
    from tunebook.bench import matmul_peaks
    from tunebook.machine import detect

    machine = detect()
    cfg = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    model, data = cfg["base_model"], cfg["datasets"][0]["path"]
    n_params = _model_params(model)
    echo(f"measuring matmul peaks on {machine.kind} ...")
    peaks = matmul_peaks(seconds=2.0)
    echo("  " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items() if v))
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="tunebook-bench-engines-") as tmp:
        work = Path(tmp)
        for c in contenders(recipe, qlora, steps, work, data, model):
            echo(f"== {c.name}: {' '.join(c.cmd[1:4])} ...")
            # as in an activated venv: `axolotl train` execs `accelerate` from PATH
            bindir = str(Path(sys.executable).parent)
            env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1", "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
            log = out_dir / "logs" / (re.sub(r"\W+", "-", c.name).strip("-") + ".log")
            log.parent.mkdir(parents=True, exist_ok=True)
            rc, stamps, rss, wall = _run(c.cmd, env, log, c.neighbour, steps)
            r = Result(c.name, c.shapes, ok=rc == 0 and len(stamps) >= 2, steps=len(stamps), log=str(log),
                       peak_rss_mib=round(rss, 1))
            if stamps:
                r.time_to_first_step_s = round(stamps[0], 1)
            if len(stamps) >= 2:
                r.steady_s = round(stamps[-1] - stamps[0], 2)
            record = _latest_record(c.runs) if c.runs else None
            if c.tokens == "run" and record:
                r.tokens_real = record.tokens.total
                r.compute_dtype = record.compute_dtype
            elif c.tokens == "file" and c.tokens_file and c.tokens_file.exists():
                counts = json.loads(c.tokens_file.read_text(encoding="utf-8"))
                r.tokens_real, r.compute_dtype = counts["tokens_real"], counts.get("compute_dtype", "float32")
            elif c.tokens == "file":
                r.notes.append("no token count written")
            else:
                r.tokens_from, r.compute_dtype = c.tokens, "float32"
            r.flops_per_token = (6 if c.method == "full" else 4) * n_params
            if rc != 0:
                r.notes.append(f"exit code {rc}; see {log}")
            results[c.name] = r
            derive(list(results.values()), peaks)
            speed = (f"{r.tokens_per_s} tok/s" if r.tokens_per_s is not None
                     else f"tok/s once '{r.tokens_from}' has run (its real tokens per step)")
            echo(f"   {speed}, first step {r.time_to_first_step_s} s, peak RSS {r.peak_rss_mib} MiB"
                 + (f"  ({'; '.join(r.notes)})" if r.notes else ""))
    derive(list(results.values()), peaks)
    report = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": asdict(machine), "machine_kind": machine.kind,
              "git_commit": _git_commit(), "recipe": str(recipe), "qlora_recipe": str(qlora), "steps": steps,
              "model_params": n_params, "peaks_flops": peaks, "results": [asdict(r) for r in results.values()]}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    atomic_write_json(out_dir / f"{stamp}.json", report)
    atomic_write_text(out_dir / "latest.md", table(report))
    return report


def derive(results: list[Result], peaks: dict) -> None:
    """Rates, fractions of the peaks and ratios from what was measured; rerunnable on a saved report."""
    by_name = {r.name: r for r in results}
    for r in results:
        src = by_name.get(r.tokens_from or "")
        if src and src.tokens_real and src.steps and r.steps:
            r.tokens_real = round(src.tokens_real * r.steps / src.steps)
            note = f"real tokens: {src.name}'s per step (same packs)"
            if note not in r.notes:
                r.notes.append(note)
        if r.tokens_real and r.steady_s and r.steps >= 2:
            r.tokens_per_s = round(r.tokens_real * (r.steps - 1) / r.steps / r.steady_s, 1)
            flops = (r.flops_per_token or 0) * r.tokens_per_s
            r.frac_bf16_peak = round(flops / peaks["bf16"], 3) if peaks.get("bf16") else None
            r.frac_fp32_peak = round(flops / peaks["fp32"], 3) if peaks.get("fp32") else None
    base = by_name.get("axolotl train (plain)")
    for r in results:
        if base and base.tokens_per_s and r.tokens_per_s:
            r.vs_plain_axolotl = round(r.tokens_per_s / base.tokens_per_s, 2)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _fmt0(x) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def table(report: dict) -> str:
    peaks = report["peaks_flops"]
    head = (f"Engines on `{report['machine_kind']}` ({report['machine']['cpu_model']}), {report['steps']} steps each, "
            f"commit {report['git_commit']}, {report['at']}. Matmul peaks this run: "
            + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items() if v) + ".\n\n")
    lines = ["| contender | shapes | compute | tokens/s | × plain axolotl | first step s | peak RSS MiB | % bf16 peak | % fp32 peak |",
             "|---|---|---|---|---|---|---|---|---|"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.0f}%"

    for r in report["results"]:
        lines.append(f"| {r['name']} | {r['shapes']} | {r['compute_dtype'] or 'n/a'} | {r['tokens_per_s'] or 'failed'} | "
                     f"{r['vs_plain_axolotl'] or 'n/a'} | {r['time_to_first_step_s'] or 'n/a'} | {_fmt0(r['peak_rss_mib'])} | "
                     f"{pct(r['frac_bf16_peak'])} | {pct(r['frac_fp32_peak'])} |")
    return head + "\n".join(lines) + "\n"
