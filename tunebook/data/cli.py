"""`tunebook data ...` and `tunebook inspect`: the data subcommands behind the Make targets."""

from __future__ import annotations

import json
import os
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


def _allow_list(path: str) -> frozenset:
    if not path:
        return frozenset()
    return frozenset(v.strip() for v in Path(path).read_text(encoding="utf-8").splitlines() if v.strip())


def cmd_convert(a) -> int:
    from tunebook.data import pipeline
    from tunebook.data.pii import DEFAULT_ALLOW
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
        template=template, progress=sys.stderr.isatty(), near_dup_min_chars=a.near_dup_min_chars,
        workers=a.workers, pii_report=Path(a.pii_report) if a.pii_report else None,
        dedup_report=Path(a.dedup_report) if a.dedup_report else None, executor=a.executor,
        pii_allow=DEFAULT_ALLOW | _allow_list(a.pii_allow),
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
    """rows/s of `make data` as users run it (its defaults: validation, PII scrub, filters,
    exact dedup; then with near-dup on) on rows shaped like real Alpaca data, and of each
    stage alone on the first rows, one process."""
    import tempfile

    from tunebook.data.dedup import NearDuplicates, content_hash, content_text, row_text, signature
    from tunebook.data.formats import converter, validate
    from tunebook.data.pii import scrub
    from tunebook.data.quality import Filters
    from tunebook.data.reader import dumps
    from tunebook.data.synth import alpaca_rows

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "alpaca.jsonl"
        with open(src, "w", encoding="utf-8") as f:
            for row in alpaca_rows(a.rows):
                f.write(dumps(row) + "\n")
        size_mib = src.stat().st_size / 2**20
        with open(src, encoding="utf-8") as f:
            lines = [line for _, line in zip(range(20_000), f)]

        def alone(name, fn, items):
            t0 = time.time()
            out = [fn(x) for x in items]
            results.append((f"{name} (alone, 1 process)", len(items) / (time.time() - t0), None))
            return out

        rows = alone("parse JSON", json.loads, lines)
        convert = converter("alpaca", "messages")
        converted = alone("validate + convert", lambda r: validate(convert(validate(r, "alpaca")), "messages"), rows)
        from collections import Counter

        alone("PII scrub", lambda r: scrub(r, Counter()), rows)
        alone("quality filters", lambda r: Filters().reason(row_text(r)), converted)
        alone("exact-dup hash", content_hash, converted)
        sigs = alone("near-dup MinHash signature", lambda r: signature(content_text(r)), converted)
        near = NearDuplicates(0.85)
        alone("near-dup LSH query + insert", lambda i: near.match_signature(str(i), sigs[i]), range(len(sigs)))
        rows = converted = sigs = near = None  # noqa: F841 (the end-to-end runs below measure their own memory)
        from tunebook.bench_engines import _run

        for label, extra in (("make data defaults", []), ("make data + near-dup 0.85", ["--near-dup", "0.85"])):
            # as users run it: its own process (and workers), timed and its RSS polled from outside
            cmd = [sys.executable, "-m", "tunebook", "data", "convert", str(src), "--to", "messages",
                   "--out", str(Path(tmp) / "out.jsonl"), "--workers", str(a.workers), *extra]
            rc, _stamps, peak_mib, wall = _run(cmd, dict(os.environ), Path(tmp) / "log", neighbour=False)
            if rc != 0:
                print((Path(tmp) / "log").read_text(encoding="utf-8")[-2000:], file=sys.stderr)
                return 1
            summary = (Path(tmp) / "log").read_text(encoding="utf-8")
            procs = summary.rsplit(" process", 1)[0].rsplit(", ", 1)[-1] if " process" in summary else "?"
            results.append((f"{label} ({procs} processes, end to end)", a.rows / wall, (wall, peak_mib)))
    width = max(len(r[0]) for r in results)
    print(f"bench-data: {a.rows:,} Alpaca-shaped rows ({size_mib:.0f} MiB), {os.cpu_count()} cores")
    for name, rate, end_to_end in results:
        print(f"  {name:<{width}}  {rate:>10,.0f} rows/s" + (
            f"  {end_to_end[0]:6.1f} s, peak RSS {end_to_end[1]:,.0f} MiB (largest process)" if end_to_end else ""))
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
    c.add_argument("--near-dup", type=float, default=0.0,
                   help="MinHash Jaccard threshold for near-duplicate removal (e.g. 0.85); 0, the default, disables")
    c.add_argument("--near-dup-min-chars", type=int, default=200,
                   help="rows shorter than this are checked for exact duplicates only")
    c.add_argument("--workers", type=int, default=0, help="processes (0: every core for inputs over 8 MiB)")
    c.add_argument("--pii-report", default="", help="write every PII replacement with its context here (JSONL)")
    c.add_argument("--pii-allow", default="", help="a file of placeholder values (one a line) never scrubbed")
    c.add_argument("--dedup-report", default="", help="write each kept row with the duplicates removed for it (JSONL)")
    c.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="ray: the per-row stages as Ray tasks, on RAY_ADDRESS's cluster or a local Ray")
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

    b = dsub.add_parser("bench", help="rows/s of make data's default pipeline, with near-dup, and of each stage")
    b.add_argument("--rows", type=int, default=200_000)
    b.add_argument("--workers", type=int, default=0, help="processes (0: every core for big inputs)")
    b.set_defaults(fn=cmd_bench)

    i = sub.add_parser("inspect", help="show rows as the engine tokenizes them, with the trained tokens")
    i.add_argument("recipe")
    i.add_argument("-n", type=int, default=3)
    i.add_argument("--args", default="")
    i.add_argument("--plain", action="store_true", help="[[ ]] instead of colour")
    i.set_defaults(fn=cmd_inspect)

