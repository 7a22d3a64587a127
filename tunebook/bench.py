"""`make bench`: the nightly matrix, its SQLite history, and regression checks.

Schema of bench/history.sqlite (one row per recipe per bench run):

    results(
      id INTEGER PRIMARY KEY, bench_id TEXT, at TEXT,           -- one bench invocation, ISO time
      recipe TEXT, version INTEGER, content_hash TEXT,          -- what ran
      git_commit TEXT, packages TEXT (JSON), machine_kind TEXT, machine TEXT (JSON), seed INTEGER,
      run_dir TEXT, status TEXT,
      tokens_per_s REAL, train_s REAL, wall_s REAL, peak_rss_mib REAL, time_to_first_step_s REAL,
      achieved_flops REAL, frac_bf16_peak REAL, frac_fp32_peak REAL,
      quality TEXT (JSON: task -> main metric), metrics TEXT (JSON: everything else))

Comparable rows: same recipe, same version, same machine_kind. Writers use WAL mode and
BEGIN IMMEDIATE, so concurrent bench processes append without corrupting each other.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunebook import records
from tunebook.evaluate import lower_is_better, main_metric
from tunebook.atomic import atomic_path
from tunebook.launch import Launch
from tunebook.paths import PATHS
from tunebook.records import EvalRecord

DB = PATHS.bench_db
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  id INTEGER PRIMARY KEY, bench_id TEXT NOT NULL, at TEXT NOT NULL,
  recipe TEXT NOT NULL, version INTEGER NOT NULL, content_hash TEXT,
  git_commit TEXT, packages TEXT, machine_kind TEXT NOT NULL, machine TEXT, seed INTEGER,
  run_dir TEXT, status TEXT,
  tokens_per_s REAL, train_s REAL, wall_s REAL, peak_rss_mib REAL, time_to_first_step_s REAL,
  achieved_flops REAL, frac_bf16_peak REAL, frac_fp32_peak REAL,
  quality TEXT, metrics TEXT);
CREATE INDEX IF NOT EXISTS results_comparable ON results (recipe, version, machine_kind, id);
"""


@dataclass
class Thresholds:
    quality_drop: float = 0.05  # absolute, on each task's main metric (relative for perplexity)
    slowdown: float = 0.25  # tokens/s falling by more than this share
    memory_growth: float = 0.25  # peak RSS growing by more than this share


@dataclass
class Matrix:
    recipes: list[str]
    nproc: list[int] = field(default_factory=list)  # processes per row (torchrun when > 1); 1 when absent
    args: str = ""
    eval_tasks: list[str] = field(default_factory=lambda: ["nba_mc", "control_mc"])
    eval_limit: int | None = 50
    thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def load(cls, path: str | Path) -> "Matrix":
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        entries = [e if isinstance(e, dict) else {"recipe": e} for e in raw["recipes"]]
        return cls(recipes=[str(e["recipe"]) for e in entries], nproc=[int(e.get("nproc") or 1) for e in entries],
                   args=raw.get("args", ""),
                   eval_tasks=raw.get("eval", {}).get("tasks", ["nba_mc", "control_mc"]),
                   eval_limit=raw.get("eval", {}).get("limit", 50),
                   thresholds=Thresholds(**raw.get("thresholds", {})))


def connect(db: Path = DB) -> sqlite3.Connection:
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db, timeout=120, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    return con


def append(con: sqlite3.Connection, row: dict) -> int:
    cols = ", ".join(row)
    con.execute("BEGIN IMMEDIATE")
    try:
        cur = con.execute(f"INSERT INTO results ({cols}) VALUES ({', '.join('?' * len(row))})",
                          [json.dumps(v) if isinstance(v, (dict, list)) else v for v in row.values()])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return cur.lastrowid


def previous(con: sqlite3.Connection, row: dict) -> dict | None:
    cur = con.execute(
        "SELECT * FROM results WHERE recipe=? AND version=? AND machine_kind=? AND status='finished' AND id<? "
        "ORDER BY id DESC LIMIT 1", (row["recipe"], row["version"], row["machine_kind"], row["id"]))
    hit = cur.fetchone()
    return dict(zip([c[0] for c in cur.description], hit)) if hit else None


def regressions(new: dict, old: dict, t: Thresholds) -> list[str]:
    out = []
    q_new, q_old = _json(new.get("quality")), _json(old.get("quality"))
    for task, v in q_new.items():
        o = q_old.get(task)
        if not isinstance(v, (int, float)) or not isinstance(o, (int, float)):
            continue
        if lower_is_better(task):
            if v > o * (1 + t.quality_drop):
                out.append(f"{new['recipe']}: {task} perplexity {o:.3f} -> {v:.3f}")
        elif v < o - t.quality_drop:
            out.append(f"{new['recipe']}: {task} {o:.3f} -> {v:.3f} (drop > {t.quality_drop})")
    if new.get("tokens_per_s") and old.get("tokens_per_s") and new["tokens_per_s"] < old["tokens_per_s"] * (1 - t.slowdown):
        out.append(f"{new['recipe']}: tokens/s {old['tokens_per_s']:.1f} -> {new['tokens_per_s']:.1f} (slower by > {t.slowdown:.0%})")
    if new.get("peak_rss_mib") and old.get("peak_rss_mib") and new["peak_rss_mib"] > old["peak_rss_mib"] * (1 + t.memory_growth):
        out.append(f"{new['recipe']}: peak RSS {old['peak_rss_mib']:.0f} -> {new['peak_rss_mib']:.0f} MiB (grew > {t.memory_growth:.0%})")
    return out


def _json(v):
    return json.loads(v) if isinstance(v, str) else (v or {})


def matmul_peaks(n: int = 2048, seconds: float = 0.4, bf16: bool | None = None) -> dict[str, float | None]:
    """Peak FLOP/s of an n x n matmul in bf16 and fp32 on this machine, right now.

    bf16 is measured only where the CPU (or a GPU) has it in hardware (`bf16=None` asks the
    machine): emulated bf16 on an AVX2-only CPU is ~80x slower, and one 2048^2 matmul ran
    for minutes there. Its peak is then None and nothing is compared against it.

    A peak is the best single matmul over `seconds` after warm-up: the first calls pay for
    oneDNN's kernel selection (AMX for bf16), and a mean over a few tens of milliseconds
    came out anywhere from 179 to 406 bf16 GFLOP/s between two identical nightly runs here,
    which made "% of peak" move for no reason of the recipe's.
    """
    import torch

    if bf16 is None:
        from tunebook.machine import detect

        machine = detect()
        bf16 = machine.cpu_bf16 or machine.cuda_bf16
    out: dict[str, float | None] = {"bf16": None}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        if name == "bf16" and not bf16:
            continue
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            a @ b
        best, start = 0.0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
        out[name] = best
    return out


def row_from_run(run, bench_id: str, peaks: dict[str, float], tasks: list[str]) -> dict:
    rec = run.read_record()
    results = records.load(run.path / "eval.json", EvalRecord).results if (run.path / "eval.json").exists() else {}
    train_s = rec.train_runtime_s or 0
    tokens = rec.tokens.total or 0
    # Training FLOPs ~ 6 x params x tokens for full fine-tuning; with a frozen base the
    # weight-gradient matmuls are skipped: ~4 x params x tokens (forward + input gradients).
    factor = 6 if rec.recipe.method == "full" else 4
    flops = factor * (rec.params.total or 0) * tokens / train_s if train_s else None
    return {
        "bench_id": bench_id, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "recipe": rec.recipe.name, "version": rec.recipe.version, "content_hash": rec.recipe.content_hash,
        "git_commit": rec.git_commit, "packages": rec.packages, "machine_kind": rec.machine.kind,
        "machine": records.dump(rec.machine), "seed": rec.seed, "run_dir": rec.run_dir, "status": rec.status,
        "tokens_per_s": rec.tokens.per_second, "train_s": train_s, "wall_s": rec.wall_time_s,
        "peak_rss_mib": rec.peak_rss_mib, "time_to_first_step_s": rec.timing.get("time_to_first_step_s"),
        "achieved_flops": flops, "frac_bf16_peak": flops / peaks["bf16"] if flops and peaks.get("bf16") else None,
        "frac_fp32_peak": flops / peaks["fp32"] if flops and peaks.get("fp32") else None,
        "quality": {t: results.get(t, {}).get(main_metric(t)) for t in tasks if t in results},
        "metrics": {"peaks": peaks, "final_loss": rec.final_loss, "eval": results},
    }


def plot_history(con: sqlite3.Connection, out_dir: Path) -> list[Path]:
    """One figure a reader can scan: every night on the x axis (so recipes line up by night),
    one line per recipe version (versions are not comparable), cost on top, quality below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cur = con.execute("SELECT bench_id, recipe, version, tokens_per_s, peak_rss_mib, time_to_first_step_s, "
                      "frac_fp32_peak, quality FROM results WHERE status='finished' ORDER BY id")
    rows = [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]
    nights = sorted({r["bench_id"] for r in rows})
    x_of = {b: i for i, b in enumerate(nights)}
    tasks = sorted({t for r in rows for t in _json(r["quality"])})
    cost = [("tokens_per_s", "trained tokens/s", 1), ("peak_rss_mib", "peak RSS (MiB)", 1),
            ("time_to_first_step_s", "time to first step (s)", 1), ("frac_fp32_peak", "% of fp32 matmul peak", 100)]
    ncols = max(len(cost), len(tasks), 1)
    fig, axes = plt.subplots(2, ncols, figsize=(3.6 * ncols, 6.4), squeeze=False)
    for i, key in enumerate(sorted({(r["recipe"], r["version"]) for r in rows})):
        mine = [r for r in rows if (r["recipe"], r["version"]) == key]
        xs, label = [x_of[r["bench_id"]] for r in mine], f"{key[0]} v{key[1]}"
        # distinct markers and dashes: equal scores (common on small evals) still show every line
        style = {"marker": "os^Dv<>p"[i % 8], "linestyle": ("-", "--", ":", "-.")[i % 4],
                 "markersize": 10 - 3 * (i % 3), "markerfacecolor": "none", "markeredgewidth": 1.5, "label": label}
        for ax, (col, _, scale) in zip(axes[0], cost):
            ax.plot(xs, [(r[col] or 0) * scale for r in mine], **style)
        for ax, task in zip(axes[1], tasks):
            ax.plot(xs, [_json(r["quality"]).get(task, float("nan")) for r in mine], **style)
    for ax, (_, title, _) in zip(axes[0], cost):
        ax.set_title(title)
    for ax, task in zip(axes[1], tasks):
        ax.set_title(f"{task} ({'lower' if lower_is_better(task) else 'higher'} is better)")
    for ax in axes[1][len(tasks):]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:
        ax.set_xticks(range(len(nights)), [n[4:8] + "\n" + n[9:13] for n in nights], fontsize=7)
        ax.grid(alpha=0.3)
    spare = axes[1][len(tasks)] if len(tasks) < ncols else None
    if spare is not None:  # the legend in the empty panel, clear of the data
        spare.set_visible(True)
        spare.axis("off")
        spare.legend(handles, labels, loc="center", title="recipe version")
    else:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(f"tunebook nightly bench: {len(nights)} runs (x = bench id MMDD/HHMM)", fontsize=10)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "history.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return [path]


def run_bench(matrix_path: str | Path, db: Path = DB, runs_root: Path = PATHS.bench_runs) -> tuple[list[dict], list[str]]:
    from tunebook.evaluate import ensure_eval
    from tunebook.train import train

    m = Matrix.load(matrix_path)
    bench_id = time.strftime("%Y%m%d-%H%M%S")
    peaks = matmul_peaks()
    con = connect(db)
    rows, found = [], []
    from tunebook import progress

    plan = list(zip(m.recipes, m.nproc or [1] * len(m.recipes)))
    for i, (recipe, nproc) in enumerate(plan, 1):
        progress.stage(i, len(plan), f"{recipe}" + (f" x{nproc} processes" if nproc > 1 else "") + ": train, then eval")
        run = train(recipe, m.args, runs_root=runs_root, launch=Launch(nproc=nproc))
        ensure_eval(run, m.eval_tasks, m.eval_limit)
        row = row_from_run(run, bench_id, peaks, m.eval_tasks)
        if nproc > 1:
            # its own history line: comparable only with rows of the same process count
            row["recipe"] = f"{row['recipe']} x{nproc}proc"
            one = next((r for r in rows if r["run_dir"] and r["recipe"] == row["recipe"].split(" x")[0]), None)
            row["metrics"]["world_size"] = nproc
            if one and one["tokens_per_s"] and row["tokens_per_s"]:
                # tokens/s of n processes over 1 on the same cores: below 1 on a small CPU, tracked
                row["metrics"]["scaling_efficiency"] = round(row["tokens_per_s"] / one["tokens_per_s"], 3)
        row["id"] = append(con, row)
        try:
            from tunebook.trackers import log_bench_row

            log_bench_row(row)  # TRACKER=mlflow: the nightly row in MLflow too
        except Exception as exc:
            print(f"warning: could not log the row to MLflow: {exc}")
        prev = previous(con, row)
        if prev:
            found += regressions(row, prev, m.thresholds)
        row["previous"] = prev  # after the insert: shown in the summary, not stored
        rows.append(row)
    plot_history(con, db.parent / "plots")
    return rows, found
