"""`make data`: read -> validate -> scrub -> convert -> filter -> dedup -> write, streaming.

Every input row ends in exactly one bucket, and the summary proves it:
read = written + rejected + duplicates + filtered. Everything not written goes to
`<OUT>.rejects.jsonl` with its file, line, kind and reason. Both outputs are written to
temp files and renamed, so a killed run leaves the previous outputs intact.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunebook.data import formats
from tunebook.data.dedup import NearDuplicates, content_hash, content_text, row_text, signature
from tunebook.data.pii import DEFAULT_ALLOW, scrub
from tunebook.data.quality import Filters
from tunebook.data.reader import dumps, iter_chunks, iter_records, parse_jsonl_line, position_word


@dataclass
class Options:
    to: str
    src: str | None = None  # detected when None
    scrub_pii: bool = True
    exact_dedup: bool = True
    near_dup_threshold: float | None = None  # e.g. 0.85; None (the default): exact duplicates only
    filters: Filters = field(default_factory=Filters)
    template: Callable[[list[dict]], str] | None = None  # messages -> text, for TO=completion
    progress: bool = True
    near_dup_min_chars: int = 200  # shorter rows are checked for exact duplicates only
    workers: int = 0  # processes for the per-row stages; 0: every core for big inputs (default_workers)
    chunk_rows: int = 2000
    pii_allow: frozenset = DEFAULT_ALLOW  # documented placeholder values left as they are
    pii_report: Path | None = None  # every replacement with its context, for review
    dedup_report: Path | None = None  # every kept row with the rows removed as its duplicates
    executor: str = "local"  # local: a process pool on this machine; ray: Ray tasks (RAY_ADDRESS, or a local Ray)


_SPECIFIC = re.compile(r"(?:line|item) \d+|\d+(?:\.\d+)?|'[^']*'|\"[^\"]*\"")


def reason_kind(kind: str, reason: str) -> str:
    """A reason without what is particular to one row (line numbers, values, quoted text), so
    78 duplicates of eight different rows count as one kind of reason, not eight."""
    return f"{kind}: " + _SPECIFIC.sub(lambda m: "N" if m.group(0)[0].isdigit() or m.group(0)[0] in "li" else "'…'",
                                       reason).replace("line N", "N").replace("item N", "N")


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
    reasons: Counter = field(default_factory=Counter)  # reason kind -> rows
    not_carried: Counter = field(default_factory=Counter)  # input field -> rows whose output has no place for it
    examples: dict = field(default_factory=dict)  # reason kind -> up to 3 "line N: reason"
    seconds: float = 0.0
    workers: int = 1
    executor: str = "local"

    def add_reason(self, kind: str, reason: str, where: str) -> None:
        key = reason_kind(kind, reason)
        self.reasons[key] += 1
        shown = self.examples.setdefault(key, [])
        if len(shown) < 3:
            shown.append(f"{where}: {reason}")

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
        if self.not_carried:
            lines.append("not carried " + ", ".join(f"{k} in {v} rows" for k, v in self.not_carried.most_common())
                         + f" (the {self.to} rows have no place for them)")
        if self.reasons:
            lines.append(f"why         (every row in {self.rejects})")
            for key, n in self.reasons.most_common(10):
                lines.append(f"  {n:6d}  {key}")
                lines += [f"            e.g. {e}" for e in self.examples.get(key, [])]
            if len(self.reasons) > 10:
                lines.append(f"          ... and {len(self.reasons) - 10} more kinds of reason")
        rate = self.read / self.seconds if self.seconds else 0
        lines.append(f"time        {self.seconds:.1f} s ({rate:,.0f} rows/s, "
                     + (f"Ray tasks, {self.workers} workers)" if self.executor == "ray" else
                        f"{self.workers} process{'es' if self.workers > 1 else ''})"))
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


@dataclass
class Outcome:
    """What the per-row stages made of one input row (in a worker); what happens to it next
    (duplicate or written) is decided in input order by the one process that writes."""
    line: int
    kind: str  # ok | rejected | filtered
    reason: str = ""
    payload: str = ""  # ok/filtered: the converted row as JSON; rejected: the row (or raw text) as JSON
    raw: bool = False  # payload is the raw text of a line that did not parse
    hash64: int = 0
    sig: object = None  # MinHash signature for near-duplicate search (None: not searched)
    pii_found: list = field(default_factory=list)  # (type, value, context), when a PII report is asked for
    dropped: list = field(default_factory=list)  # fields of the input the output has no place for, by name


_WORK: dict = {}  # the worker's stages: set before the pool forks (a template lambda cannot be pickled)


def _stages(rec, src: str, opts: Options, convert, pii: Counter) -> Outcome:
    if rec.error:
        return Outcome(rec.line, "rejected", rec.error, dumps(rec.raw), raw=True)
    try:
        dropped: list[str] = []
        row = formats.validate(rec.row, src, dropped)
        if src != opts.to:
            dropped += formats.not_carried(rec.row, src)
        found: list | None = [] if opts.pii_report else None
        row = scrub(row, pii, found, opts.pii_allow) if opts.scrub_pii else row
        row = formats.validate(convert(row), opts.to)
    except formats.RowError as exc:
        return Outcome(rec.line, "rejected", str(exc), dumps(rec.row))
    payload = dumps(row)
    why = opts.filters.reason(row_text(row))
    if why:
        return Outcome(rec.line, "filtered", why, payload, pii_found=found or [], dropped=dropped)
    out = Outcome(rec.line, "ok", "", payload, pii_found=found or [], dropped=dropped)
    if opts.exact_dedup:
        out.hash64 = int(content_hash(row)[:16], 16)
    if opts.near_dup_threshold:
        text = content_text(row)
        if len(text) >= opts.near_dup_min_chars:  # shorter: one changed word is the whole point; exact only
            out.sig = signature(text)
    return out


def _work_chunk(chunk: list) -> tuple[list[Outcome], Counter]:
    src, opts, convert = _WORK["src"], _WORK["opts"], _WORK["convert"]
    pii: Counter = Counter()
    outs = []
    for item in chunk:
        rec = parse_jsonl_line(*item) if isinstance(item, tuple) else item
        if rec is not None:
            outs.append(_stages(rec, src, opts, convert, pii))
    return outs, pii


def _ray_chunk(chunk: list, src: str, opts: Options) -> tuple[list[Outcome], Counter]:
    """A Ray task: the same per-row stages, on whichever node Ray places it."""
    _WORK.update(src=src, opts=opts, convert=formats.converter(src, opts.to))
    return _work_chunk(chunk)


def _ray_results(chunks, src: str, opts: Options, workers: int):
    """Outcomes chunk by chunk, in input order, computed by Ray tasks on a cluster
    (RAY_ADDRESS) or a local Ray with `workers` CPUs; at most 4 chunks per worker in flight."""
    from collections import deque

    import ray

    if opts.template is not None:
        raise DataError("--executor ray cannot ship a chat template function to its workers; "
                        "convert to messages with Ray, then to completion locally")
    address = os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": workers, "object_store_memory": 256 * 2**20}))
    task = ray.remote(num_cpus=1)(_ray_chunk)
    light = Options(**{**opts.__dict__, "template": None, "progress": False})
    pending: deque = deque()
    for chunk in chunks:
        pending.append(task.remote(chunk, src, light))
        if len(pending) >= 4 * workers:
            yield ray.get(pending.popleft())
    while pending:
        yield ray.get(pending.popleft())


def _write_clusters(path: Path, clusters: dict[int, list], where: str, source: str) -> None:
    """One line per kept row that had duplicates: which rows were removed as its copies, how."""
    f, tmp = _tmp_beside(Path(path))
    with f:
        for kept in sorted(clusters):
            f.write(dumps({"file": source, "kept": f"{where} {kept}", "removed": [
                {where: line, "kind": kind, "jaccard": j} for line, kind, j in clusters[kept]]}) + "\n")
    os.replace(tmp, path)


def default_workers(path: Path) -> int:
    """Every core for inputs big enough to pay for the processes (~0.3 s to start), else one."""
    try:
        big = path.stat().st_size > 8 * 2**20
    except OSError:
        big = False
    return max(1, min(os.cpu_count() or 1, 8)) if big else 1


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
    where = position_word(in_path)
    workers = opts.workers or default_workers(in_path)
    t0 = time.time()
    out, out_tmp = _tmp_beside(out_path)
    rej, rej_tmp = _tmp_beside(rejects_path)
    file_json = dumps(str(in_path))
    pii_report = _tmp_beside(opts.pii_report) if opts.pii_report else None
    clusters: dict[int, list] = {}  # kept line -> [(line, kind, jaccard)], for the dedup report

    def reject(kind: str, line: int, reason: str, payload: str, raw: bool = False) -> None:
        head = f'{{"file": {file_json}, "{where}": {line}, "kind": {dumps(kind)}, "reason": {dumps(reason)}, '
        rej.write(head + ('"raw": ' if raw else '"row": ') + payload + "}\n")
        s.add_reason(kind, reason, f"{where} {line}")

    progress = None
    if opts.progress:
        from tqdm import tqdm

        progress = tqdm(desc="rows", unit=" rows", mininterval=1.0, leave=False)
    _WORK.update(src=src, opts=opts, convert=convert)
    pool = None
    try:
        chunks = iter_chunks(in_path, size=opts.chunk_rows)
        in_flight = threading.BoundedSemaphore(4 * workers)
        if opts.executor == "ray":
            workers = max(2, workers)
            results = _ray_results(chunks, src, opts, workers)
        elif workers > 1:
            import multiprocessing

            def bounded(it):  # Pool.imap reads ahead without limit: the whole file would queue up in memory
                for chunk in it:
                    in_flight.acquire()
                    yield chunk

            pool = multiprocessing.get_context("fork").Pool(workers)
            results = pool.imap(_work_chunk, bounded(chunks))  # in input order: the same output as one process
        else:
            results = map(_work_chunk, chunks)
        for outcomes, pii in results:
            if workers > 1 and pool is not None:
                in_flight.release()
            s.pii.update(pii)
            for o in outcomes:
                s.read += 1
                s.not_carried.update(set(o.dropped))  # rows, not turns
                if pii_report is not None:
                    for kind, value, context in o.pii_found:
                        pii_report[0].write(dumps({"file": str(in_path), where: o.line, "type": kind, "value": value,
                                                   "context": context}) + "\n")
                if o.kind == "rejected":
                    s.rejected += 1
                    reject("rejected", o.line, o.reason, o.payload, o.raw)
                    continue
                if o.kind == "filtered":
                    s.filtered += 1
                    reject("filtered", o.line, o.reason, o.payload)
                    continue
                if opts.exact_dedup:
                    if o.hash64 in seen:
                        s.duplicates += 1
                        reject("duplicate", o.line, f"exact duplicate of {where} {seen[o.hash64]}", o.payload)
                        clusters.setdefault(seen[o.hash64], []).append((o.line, "exact", 1.0))
                        continue
                    seen[o.hash64] = o.line
                if near is not None and o.sig is not None:
                    hit = near.match_signature(str(o.line), o.sig)
                    if hit:
                        clusters.setdefault(int(hit[0]), []).append((o.line, "near", round(hit[1], 3)))
                        s.near_duplicates += 1
                        reject("near_duplicate", o.line, f"near duplicate of {where} {hit[0]} (jaccard ~{hit[1]:.2f})",
                               o.payload)
                        continue
                out.write(o.payload + "\n")
                s.written += 1
            if progress is not None:
                progress.update(len(outcomes))
        if opts.dedup_report:
            _write_clusters(opts.dedup_report, clusters, where, str(in_path))
        out.close()
        rej.close()
        os.replace(out_tmp, out_path)
        os.replace(rej_tmp, rejects_path)
        if pii_report is not None:
            pii_report[0].close()
            os.replace(pii_report[1], opts.pii_report)
    except BaseException:
        out.close()
        rej.close()
        out_tmp.unlink(missing_ok=True)
        rej_tmp.unlink(missing_ok=True)
        if pii_report is not None:
            pii_report[0].close()
            pii_report[1].unlink(missing_ok=True)
        raise
    finally:
        if pool is not None:
            pool.terminate()
        _WORK.clear()
        if progress is not None:
            progress.close()
    s.seconds = time.time() - t0
    s.workers, s.executor = workers, opts.executor
    return s
