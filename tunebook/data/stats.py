"""Token-length statistics with a recipe's tokenizer and chat template, plus a histogram."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tunebook.data.reader import iter_records


def lengths(data: Path, tokenizer) -> tuple[list[int], Counter]:
    out, roles = [], Counter()
    for rec in iter_records(data):
        row = rec.row
        if not isinstance(row, dict):
            continue
        msgs = row.get("messages")
        if isinstance(msgs, list):
            roles.update(m.get("role") for m in msgs if isinstance(m, dict))
            text = tokenizer.apply_chat_template(msgs, tokenize=False)
        else:
            text = row.get("text") or json.dumps(row, ensure_ascii=False)
        out.append(len(tokenizer(text)["input_ids"]))
    return out, roles


def percentile(xs: list[int], q: float) -> int:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] if s else 0


def report(data: Path, tokenizer, sequence_len: int, png: Path | None = None) -> dict:
    xs, roles = lengths(data, tokenizer)
    stats = {
        "rows": len(xs), "tokens": sum(xs), "min": min(xs), "p50": percentile(xs, 0.5), "p90": percentile(xs, 0.9),
        "p99": percentile(xs, 0.99), "max": max(xs), "mean": round(sum(xs) / len(xs), 1),
        "sequence_len": sequence_len, "truncated": sum(x > sequence_len for x in xs), "roles": dict(roles),
    }
    if png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist(xs, bins=40, color="#4a7bd0")
        ax.axvline(sequence_len, color="#c33", linestyle="--", label=f"sequence_len {sequence_len}")
        ax.set_xlabel("tokens per row (chat template applied)")
        ax.set_ylabel("rows")
        ax.set_title(f"{data.name}: {len(xs)} rows, p50 {stats['p50']}, p99 {stats['p99']}")
        ax.legend()
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        from tunebook.atomic import atomic_path

        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
        stats["histogram"] = str(png)
    return stats


def render(stats: dict) -> str:
    rows = [("rows", stats["rows"]), ("tokens", stats["tokens"]), ("min", stats["min"]), ("p50", stats["p50"]),
            ("p90", stats["p90"]), ("p99", stats["p99"]), ("max", stats["max"]), ("mean", stats["mean"]),
            (f"> sequence_len {stats['sequence_len']}", f"{stats['truncated']} rows truncated")]
    out = [f"{k:<24}{v}" for k, v in rows]
    out.append("roles".ljust(24) + ", ".join(f"{r} {n}" for r, n in sorted(stats["roles"].items())))
    if stats.get("histogram"):
        out.append("histogram".ljust(24) + stats["histogram"])
    return "\n".join(out)
