"""`tunebook data ...` and `tunebook inspect`: the data subcommands behind the Make targets."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tunebook.errors import Problem, TunebookError
from tunebook.paths import PATHS


def tokenizer_for(source: str):
    """A tokenizer with the chat template a recipe trains with (or of a tokenizer folder)."""
    from transformers import AutoTokenizer

    if Path(source).is_dir():
        return AutoTokenizer.from_pretrained(source)
    from tunebook.loading import tokenizer
    from tunebook.recipe import load_recipe

    cfg = load_recipe(source).engine_config
    return tokenizer(cfg["base_model"], cfg)


def _fail(exc: Exception, where: str) -> TunebookError:
    return TunebookError([Problem(where, "", str(exc))])


def cmd_convert(a) -> int:
    from tunebook.data import pipeline
    from tunebook.data.quality import Filters
    from tunebook.data.reader import EmptyInput

    template = None
    if a.to == "completion" and a.template:
        tok = tokenizer_for(a.template)
        template = lambda msgs: tok.apply_chat_template(msgs, tokenize=False)  # noqa: E731
    opts = pipeline.Options(
        to=a.to, src=a.src or None, scrub_pii=not a.no_scrub, exact_dedup=not a.no_dedup,
        near_dup_threshold=None if a.no_dedup or a.near_dup <= 0 else a.near_dup,
        filters=Filters(min_chars=a.min_chars, max_chars=a.max_chars, min_alpha_ratio=a.min_alpha,
                        max_repetition=a.max_repetition),
        template=template, progress=sys.stderr.isatty(),
    )
    try:
        summary = pipeline.run(a.input, a.out, opts)
    except (pipeline.DataError, EmptyInput, FileNotFoundError, ValueError) as exc:
        raise _fail(exc, a.input) from None
    print(f"detected format: {summary.detected}" + ("" if a.src else " (pass FROM=... to override)"))
    print(summary.render())
    return 0


def cmd_split(a) -> int:
    from tunebook.data.reader import dumps, iter_records
    from tunebook.data.split import leakage, split_of
    from tunebook.runs import atomic_write_text

    out = Path(a.out_dir)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    strata: dict[str, dict[str, int]] = {}
    for rec in iter_records(a.input):
        if rec.row is None:
            raise TunebookError([Problem(a.input, "", f"line {rec.line}: {rec.error} (run make data first)", rec.line)])
        # Hash-based assignment is proportional within every stratum in expectation; the
        # per-stratum counts below show how close each one came.
        name = split_of(rec.row, a.val, a.test)
        parts[name].append(rec.row)
        if a.stratify:
            key = str(rec.row.get(a.stratify))
            strata.setdefault(key, {"train": 0, "val": 0, "test": 0})[name] += 1
    leaks = leakage(parts, threshold=a.near_dup)
    for name, rows in parts.items():
        atomic_write_text(out / f"{name}.jsonl", "".join(dumps(r) + "\n" for r in rows))
    print(f"== split {a.input} -> {out}/  (by content hash: a row keeps its split when rows are added)")
    for name, rows in parts.items():
        print(f"{name:<6}{len(rows)}")
    for key, c in sorted(strata.items()):
        print(f"  {a.stratify}={key}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print(f"leakage {len(leaks)} val/test rows repeat a train row" + (": " + json.dumps(leaks[:5]) if leaks else ""))
    return 1 if leaks else 0


def cmd_stats(a) -> int:
    from tunebook.data.stats import render, report
    from tunebook.recipe import load_recipe

    cfg = load_recipe(a.recipe).engine_config
    data = Path(a.data or cfg["datasets"][0]["path"])
    tok = tokenizer_for(a.tokenizer or a.recipe)
    png = Path(a.png) if a.png else PATHS.reports / "data" / f"{data.parent.name}-{data.stem}-lengths.png"
    stats = report(data, tok, int(cfg.get("sequence_len") or 2048), png)
    print(f"== token lengths of {data} with {a.recipe}'s tokenizer and chat template")
    print(render(stats))
    return 0


def cmd_inspect(a) -> int:
    from tunebook.data.inspect import inspect

    print(inspect(a.recipe, a.n, a.args, color=sys.stdout.isatty() and not a.plain))
    return 0


def cmd_bench(a) -> int:
    """rows/s of convert + validate + exact dedup on a generated file of `rows` rows."""
    import random
    import tempfile

    from tunebook.data import pipeline

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "bench.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for i in range(a.rows):
                f.write(json.dumps({"instruction": f"Question {i}: what is {rng.randint(1, 10**6)} squared?",
                                    "input": "", "output": f"Row {i} answer {rng.random()}"}) + "\n")
        t0 = time.time()
        s = pipeline.run(src, Path(tmp) / "out.jsonl", pipeline.Options(
            to="messages", src="alpaca", scrub_pii=False, near_dup_threshold=None, progress=sys.stderr.isatty()))
        dt = time.time() - t0
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"convert+validate+exact-dedup: {s.read} rows in {dt:.1f} s = {s.read / dt:,.0f} rows/s, peak RSS {rss:.0f} MiB")
    return 0


def register(sub) -> None:
    p = sub.add_parser("data", help="convert / split / stats / bench for datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True)

    c = dsub.add_parser("convert", help="validate, scrub, convert, filter and dedup a file")
    c.add_argument("input")
    c.add_argument("--to", required=True, choices=["alpaca", "sharegpt", "messages", "completion", "preference"])
    c.add_argument("--out", required=True)
    c.add_argument("--from", dest="src", default="", help="input format when detection is ambiguous")
    c.add_argument("--template", default="", help="recipe or tokenizer folder, for --to completion")
    c.add_argument("--no-scrub", action="store_true")
    c.add_argument("--no-dedup", action="store_true")
    c.add_argument("--near-dup", type=float, default=0.85, help="MinHash Jaccard threshold; 0 disables")
    c.add_argument("--min-chars", type=int, default=1)
    c.add_argument("--max-chars", type=int, default=100_000)
    c.add_argument("--min-alpha", type=float, default=0.0)
    c.add_argument("--max-repetition", type=float, default=1.0)
    c.set_defaults(fn=cmd_convert)

    s = dsub.add_parser("split", help="deterministic train/val/test split with a leakage check")
    s.add_argument("input")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--val", type=float, default=0.05)
    s.add_argument("--test", type=float, default=0.05)
    s.add_argument("--stratify", default="")
    s.add_argument("--near-dup", type=float, default=0.85)
    s.set_defaults(fn=cmd_split)

    t = dsub.add_parser("stats", help="token-length table and histogram with a recipe's tokenizer")
    t.add_argument("recipe")
    t.add_argument("--data", default="")
    t.add_argument("--tokenizer", default="", help="tokenizer folder instead of the recipe's base model")
    t.add_argument("--png", default="")
    t.set_defaults(fn=cmd_stats)

    b = dsub.add_parser("bench", help="rows/s of convert + validate + exact dedup")
    b.add_argument("--rows", type=int, default=200_000)
    b.set_defaults(fn=cmd_bench)

    i = sub.add_parser("inspect", help="show rows as the engine tokenizes them, with the trained tokens")
    i.add_argument("recipe")
    i.add_argument("-n", type=int, default=3)
    i.add_argument("--args", default="")
    i.add_argument("--plain", action="store_true", help="[[ ]] instead of colour")
    i.set_defaults(fn=cmd_inspect)

