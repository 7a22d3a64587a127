"""`make compare`: base vs full vs LoRA vs QLoRA in one report (markdown, HTML, PNG plots).

Every number in the report is read from the runs' own `eval.json` and `run.json`, so the
report can't disagree with what the runs recorded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tunebook import by_kind, learning_curve, records
from tunebook.evaluate import ensure_eval, lower_is_better, main_metric, quantization_note
from tunebook.atomic import atomic_path
from tunebook.paths import PATHS
from tunebook.records import EvalRecord, RunRecord
from tunebook.runs import RunDir, atomic_write_text, dir_size, finished_runs

DEFAULT_RECIPES = ("recipes/smollm2/full.yaml", "recipes/smollm2/lora.yaml", "recipes/smollm2/qlora.yaml")


def collect(recipes: list[str], limit: int | None, runs_root: Path = PATHS.runs, train_missing: bool = True) -> list[RunDir]:
    """The latest finished run of each recipe (trained when missing), each with an eval.json
    and, when the eval has the learning-curve task, a learning_curve.json."""
    from tunebook.resolve import resolve
    from tunebook.train import start

    from tunebook import progress

    out = []
    for i, path in enumerate(recipes, 1):
        progress.stage(i, len(recipes), f"{path}")
        resolved = resolve(path)  # the recipe as written: no ARGS, no ENGINE
        name = resolved.meta.name
        # only runs of this very recipe content count: an older version trained something else
        runs = [r for r in finished_runs(name, runs_root)
                if (rec := r.read_record()).recipe.content_hash == resolved.recipe.content_hash() and rec.as_written]
        if runs:
            progress.note(f"trained: {runs[-1].path} (this recipe content)")
        elif train_missing:
            progress.note("training (no finished run of this recipe content)")
        run = runs[-1] if runs else (start(resolved, runs_root) if train_missing else None)
        if run is None:
            raise FileNotFoundError(f"no finished run of {name}")
        progress.note(f"evaluating {run.path} (and its base; reused when already answered)")
        if learning_curve.TASK in ensure_eval(run, limit=limit).results:
            progress.note(f"learning curve: scoring each checkpoint of {run.path} on {learning_curve.TASK}")
            learning_curve.ensure(run, limit)
        out.append(run)
    return out


def save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


def to_html(markdown_text: str) -> str:
    """The same report as a page: real tables and inline plots, readable in any browser."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])
    return ("<!doctype html><meta charset=utf-8><title>tunebook comparison</title><style>"
            "body{font-family:sans-serif;max-width:72em;margin:2em auto}table{border-collapse:collapse}"
            "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child,th:first-child"
            "{text-align:left}img{max-width:100%}</style>\n" + body + "\n")


@dataclass(frozen=True)
class Row:
    record: RunRecord
    eval: EvalRecord

    @property
    def name(self) -> str:
        return self.record.recipe.name


def _row(run: RunDir) -> Row:
    return Row(run.read_record(), records.load(run.path / "eval.json", EvalRecord))


def _fmt(x, nd=3) -> str:
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _score(results: dict, metric: str) -> str:
    v, se = results.get(metric), results.get(metric.replace(",", "_stderr,"))
    return _fmt(v) + (f" ± {_fmt(se)}" if isinstance(se, float) else "")


def _time_section(rows: list[Row], curves: dict[str, dict]) -> list[str]:
    """Where a `make compare` from scratch spends its time, from what each step recorded:
    which part to shorten when the whole takes too long."""
    def s(v):
        return v if isinstance(v, (int, float)) else 0.0

    md = ["", "## Time", "", "| model | train wall s | eval s | learning curve s |", "|---|---:|---:|---:|"]
    totals = [0.0, 0.0, 0.0]
    for r in rows:
        parts = [s(r.record.wall_time_s), s(r.eval.seconds), s((curves.get(r.name) or {}).get("seconds"))]
        totals = [a + b for a, b in zip(totals, parts)]
        md.append(f"| {r.name} | " + " | ".join(f"{v:.0f}" for v in parts) + " |")
    md += ["", f"In all {sum(totals) / 60:.1f} min: training {totals[0] / 60:.1f}, evaluating {totals[1] / 60:.1f} "
           f"(the base and the QLoRA quantization check included, where this report scored them first), learning "
           f"curves {totals[2] / 60:.1f}. Work reused from earlier runs counts as it took then."]
    return md


def _by_kind_section(rows: list[Row], tasks: list[str]) -> list[str]:
    """Each multiple-choice task split by question kind, from the per-document scores the
    evals kept: which kinds training moved, which stay at chance."""
    md = []
    for t in tasks:
        columns = {"base": rows[0].eval.base.per_doc.get(t) or []}
        columns.update({r.name: r.eval.per_doc.get(t) or [] for r in rows})
        if not all(columns.values()):
            continue
        split = by_kind.split(t, columns)
        if not split or all(r["chance"] is None for r in split):
            continue
        md += ["", f"## {t} by question kind ({main_metric(t).split(',')[0]})", "",
               "The same scores split by the kind of question (the data's `task` or `topic` field); chance is "
               "one over the number of choices. A kind still near chance after training is one this model "
               "does not learn from this data.", ""]
        md += by_kind.markdown(split, list(columns))
    return md


def build_report(runs: list[RunDir], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [_row(r) for r in runs]
    base = rows[0].eval.base.results
    tasks = list(rows[0].eval.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# tunebook comparison ({time.strftime('%Y-%m-%d %H:%M')})", "",
          f"Base model: `{rows[0].eval.base.model}`; eval limit: {rows[0].eval.limit or 'all'} docs per task.", "",
          "## Quality (main metric per task; delta vs base)", "",
          "| model | " + " | ".join(f"{t} ({main_metric(t).split(',')[0]})" for t in tasks) + " |",
          "|---|" + "---|" * len(tasks)]
    md.append("| base | " + " | ".join(_score(base.get(t, {}), main_metric(t)) for t in tasks) + " |")
    for r in rows:
        cells = []
        for t in tasks:
            m = main_metric(t)
            v, b = r.eval.score(t, m), base.get(t, {}).get(m)
            cells.append(_score(r.eval.results[t], m)
                         + (f" ({v - b:+.3f})" if isinstance(v, float) and isinstance(b, float) else ""))
        rec = r.record
        md.append(f"| {r.name} v{rec.recipe.version} ({rec.recipe.method}, {rec.engine}) | " + " | ".join(cells) + " |")
    md += ["", "What was evaluated (an adapter is applied to the base it was trained on; QLoRA's is 4-bit NF4):", ""]
    md += [f"- {r.name}: {r.eval.evaluated}" for r in rows]
    md += ["", "## Cost", "", "| model | train wall s | tokens/s | peak RSS MiB | trainable params | artifact MiB | final loss |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = r.record
        md.append(f"| {r.name} | {_fmt(rec.wall_time_s, 1)} | {_fmt(rec.tokens.per_second, 1)} | "
                  f"{_fmt(rec.peak_rss_mib, 0)} | {rec.params.trainable or 0:,} | "
                  f"{dir_size(Path(rec.output_dir), skip_checkpoints=True) / 2**20:.1f} | {_fmt(rec.final_loss)} |")
    if "control_mc" in tasks:
        md += ["", "## Forgetting (control task accuracy vs base)", ""]
        b = base.get("control_mc", {}).get("acc,none")
        for r in rows:
            v = r.eval.score("control_mc", "acc,none")
            md.append(f"- {r.name}: {_fmt(v)} (base {_fmt(b)}, {v - b:+.3f})" if b is not None else f"- {r.name}: {_fmt(v)}")
            if quantization_note(r.eval):
                md.append(f"  - {quantization_note(r.eval)}")
    md += _by_kind_section(rows, tasks)
    # plots
    pngs = []
    labels = ["base"] + [r.name for r in rows]
    for t in tasks:
        m = main_metric(t)
        vals = [base.get(t, {}).get(m) or 0] + [r.eval.score(t, m) or 0 for r in rows]
        errs = [base.get(t, {}).get(m.replace(",", "_stderr,")) or 0] + \
               [r.eval.score(t, m.replace(",", "_stderr,")) or 0 for r in rows]
        errs = [e if isinstance(e, float) else 0 for e in errs]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar(labels, vals, yerr=errs, color=["#999"] + ["#4a7bd0", "#d0884a", "#5aa55a", "#a05ab0"][: len(rows)])
        ax.set_title(f"{t}: {m.split(',')[0]} ({'lower' if lower_is_better(t) else 'higher'} is better)")
        fig.tight_layout()
        png = out_dir / f"task-{t}.png"
        save_png(fig, png)
        plt.close(fig)
        pngs.append(png)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    names = [r.name for r in rows]
    for ax, vals, title in zip(axes, ([r.record.wall_time_s for r in rows], [r.record.peak_rss_mib for r in rows],
                                      [r.record.tokens.per_second for r in rows]),
                               ("train wall time (s)", "peak RSS (MiB)", "tokens/s")):
        ax.bar(names, [v or 0 for v in vals], color="#4a7bd0")
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    save_png(fig, out_dir / "cost.png")
    plt.close(fig)
    pngs.append(out_dir / "cost.png")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in rows:
        curve = r.record.loss_curve
        ax.plot([p.step for p in curve], [p.loss for p in curve], label=r.name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    save_png(fig, out_dir / "loss.png")
    plt.close(fig)
    pngs.append(out_dir / "loss.png")
    saved = {r.name: json.loads((run.path / learning_curve.FILE).read_text())
             for r, run in zip(rows, runs) if (run.path / learning_curve.FILE).exists()}
    curves = {name: c["points"] for name, c in saved.items()}
    if curves:
        docs = ", ".join(sorted({str(c["limit"]) for c in saved.values()}))
        md += ["", f"## Learning curve ({learning_curve.TASK} {learning_curve.METRIC.split(',')[0]} against training tokens)", "",
               f"Base, each checkpoint the run saved, and the final model, all on the first {docs} {learning_curve.TASK} "
               "documents. Still rising at the end: more training would help; flat: it would not.", "",
               "| model (point) | training tokens | score |", "|---|---|---|"]
        for name, points in curves.items():
            for p in points:
                se = f" ± {_fmt(p['stderr'])}" if isinstance(p["stderr"], float) else ""
                md.append(f"| {name} ({p['source']}) | {p['tokens']:,} | {_fmt(p['score'])}{se} |")
        md += [""] + [f"- {name}: {learning_curve.verdict(points)}" for name, points in curves.items()]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for name, points in curves.items():
            ax.errorbar([p["tokens"] for p in points], [p["score"] for p in points],
                        yerr=[p["stderr"] or 0 for p in points], marker="o", capsize=3, label=name)
        ax.set_xlabel("training tokens")
        ax.set_ylabel(f"{learning_curve.TASK} {learning_curve.METRIC.split(',')[0]} (higher is better)")
        ax.legend()
        fig.tight_layout()
        save_png(fig, out_dir / "learning-curve.png")
        plt.close(fig)
        pngs.append(out_dir / "learning-curve.png")
    md += _time_section(rows, saved)
    md += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    md += ["", "Runs: " + ", ".join(f"`{r.path}`" for r in runs)]
    text = "\n".join(md) + "\n"
    atomic_write_text(out_dir / "report.md", text)
    atomic_write_text(out_dir / "report.html", to_html(text))
    return out_dir / "report.md"
