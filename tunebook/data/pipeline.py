"""`make data`: read -> validate -> scrub -> convert -> filter -> dedup -> write, streaming.

Every input row ends in exactly one bucket, and the summary proves it:
read = written + rejected + duplicates + filtered. Everything not written goes to
`<OUT>.rejects.jsonl` with its file, line, kind and reason. Both outputs are written to
temp files and renamed, so a killed run leaves the previous outputs intact.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunebook.data import formats
from tunebook.data.dedup import NearDuplicates, content_hash, content_text, row_text
from tunebook.data.pii import scrub
from tunebook.data.quality import Filters
from tunebook.data.reader import dumps, iter_records


@dataclass
class Options:
    to: str
    src: str | None = None  # detected when None
    scrub_pii: bool = True
    exact_dedup: bool = True
    near_dup_threshold: float | None = 0.85  # None: no near-duplicate removal
    filters: Filters = field(default_factory=Filters)
    template: Callable[[list[dict]], str] | None = None  # messages -> text, for TO=completion
    progress: bool = True


@dataclass
class Summary:
    input: str
    output: str
    rejects: str
    detected: str = ""
    to: str = ""
    read: int = 0
    written: int = 0
    rejected: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    filtered: int = 0
    pii: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def balanced(self) -> bool:
        return self.read == self.written + self.rejected + self.duplicates + self.near_duplicates + self.filtered

    def render(self) -> str:
        lines = [
            f"== data: {self.input} ({self.detected}) -> {self.output} ({self.to})",
            f"read        {self.read}",
            f"written     {self.written}",
            f"rejected    {self.rejected}",
            f"duplicates  {self.duplicates} exact, {self.near_duplicates} near",
            f"filtered    {self.filtered}",
            f"check       read = written + rejected + duplicates + filtered: {'ok' if self.balanced else 'MISMATCH'}",
        ]
        if self.pii:
            lines.append("pii         " + ", ".join(f"{k} {v}" for k, v in sorted(self.pii.items())))
        if self.reasons:
            lines.append(f"why         (all in {self.rejects})")
            lines += [f"  {n:6d}  {r}" for r, n in self.reasons.most_common(8)]
        rate = self.read / self.seconds if self.seconds else 0
        lines.append(f"time        {self.seconds:.1f} s ({rate:,.0f} rows/s)")
        return "\n".join(lines)


class DataError(ValueError):
    """The input as a whole can't be processed (empty, unknown format, ambiguous, refused)."""


def detect_format(path: Path, sample: int = 50) -> str:
    votes: Counter = Counter()
    for i, rec in enumerate(iter_records(path)):
        if i >= sample:
            break
        if rec.row is not None:
            found = formats.detect(rec.row)
            if len(found) > 1:
                raise DataError(f"{path}:{rec.line}: the row fits {' and '.join(found)}; say which with FROM=<format>")
            votes.update(found)
    if not votes:
        raise DataError(f"{path}: no row looks like any of {', '.join(formats.FORMATS)}; say which with FROM=<format>")
    if len(votes) > 1:
        raise DataError(f"{path}: rows look like {dict(votes)}; say which with FROM=<format>")
    return votes.most_common(1)[0][0]


def _tmp_beside(path: Path):
    """Output and rejects are renamed into place together, at the end (not atomic_path's
    one-file block): a killed run leaves neither."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    return os.fdopen(fd, "w", encoding="utf-8"), Path(tmp)


def run(in_path: str | Path, out_path: str | Path, opts: Options) -> Summary:
    in_path, out_path = Path(in_path), Path(out_path)
    rejects_path = out_path.with_name(out_path.name.removesuffix(".jsonl") + ".rejects.jsonl")
    src = opts.src or detect_format(in_path)
    if src not in formats.FORMATS or opts.to not in formats.FORMATS:
        raise DataError(f"formats are {', '.join(formats.FORMATS)}")
    try:
        convert = formats.converter(src, opts.to, opts.template)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    s = Summary(str(in_path), str(out_path), str(rejects_path), detected=src, to=opts.to)
    seen: dict[int, int] = {}  # 64-bit prefix of the content hash -> first line: ~100 B a row
    near = NearDuplicates(threshold=opts.near_dup_threshold) if opts.near_dup_threshold else None
    t0 = time.time()
    out, out_tmp = _tmp_beside(out_path)
    rej, rej_tmp = _tmp_beside(rejects_path)

    def reject(kind: str, line: int, reason: str, row=None, raw=None) -> None:
        entry = {"file": str(in_path), "line": line, "kind": kind, "reason": reason}
        entry.update({"row": row} if raw is None else {"raw": raw})
        rej.write(dumps(entry) + "\n")
        s.reasons[f"{kind}: {reason.split(':')[0] if kind != 'rejected' else reason}"[:100]] += 1

    progress = None
    if opts.progress:
        from tqdm import tqdm

        progress = tqdm(desc="rows", unit=" rows", mininterval=1.0, leave=False)
    try:
        for rec in iter_records(in_path):
            s.read += 1
            if progress is not None:
                progress.update()
            if rec.error:
                s.rejected += 1
                reject("rejected", rec.line, rec.error, raw=rec.raw)
                continue
            try:
                formats.validate(rec.row, src)
                row = scrub(rec.row, s.pii) if opts.scrub_pii else rec.row
                row = formats.validate(convert(row), opts.to)
            except formats.RowError as exc:
                s.rejected += 1
                reject("rejected", rec.line, str(exc), row=rec.row)
                continue
            text = row_text(row)
            why = opts.filters.reason(text)
            if why:
                s.filtered += 1
                reject("filtered", rec.line, why, row=row)
                continue
            if opts.exact_dedup:
                h = int(content_hash(row)[:16], 16)
                if h in seen:
                    s.duplicates += 1
                    reject("duplicate", rec.line, f"exact duplicate of line {seen[h]}", row=row)
                    continue
                seen[h] = rec.line
            if near is not None:
                hit = near.match(str(rec.line), content_text(row))
                if hit:
                    s.near_duplicates += 1
                    reject("near_duplicate", rec.line, f"near duplicate of line {hit[0]} (jaccard ~{hit[1]:.2f})", row=row)
                    continue
            out.write(dumps(row) + "\n")
            s.written += 1
        out.close()
        rej.close()
        os.replace(out_tmp, out_path)
        os.replace(rej_tmp, rejects_path)
    except BaseException:
        out.close()
        rej.close()
        out_tmp.unlink(missing_ok=True)
        rej_tmp.unlink(missing_ok=True)
        raise
    finally:
        if progress is not None:
            progress.close()
    s.seconds = time.time() - t0
    return s
