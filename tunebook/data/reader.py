"""Read .jsonl, .json (array), .csv and .parquet row by row, keeping where each row came from.

A bad line never stops the good ones: it comes back as a Record with an error, and the
pipeline writes it to the rejects file. JSONL is read as bytes and decoded per line, so
one non-UTF-8 line is one rejected row, not a crashed run.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class Record:
    line: int  # 1-based line (JSONL, CSV) or item number (JSON array, Parquet)
    row: Any = None
    error: str | None = None
    raw: str | None = None  # the original text of a rejected line, kept for the rejects file


class EmptyInput(ValueError):
    pass


def iter_records(path: str | Path) -> Iterator[Record]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise EmptyInput(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl(path)
    elif suffix == ".json":
        yield from _json_array(path)
    elif suffix == ".csv":
        yield from _csv(path)
    elif suffix == ".parquet":
        yield from _parquet(path)
    else:
        raise ValueError(f"{path}: unsupported file type '{suffix}' (one of {', '.join(SUFFIXES)})")


def _jsonl(path: Path) -> Iterator[Record]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            rec = parse_jsonl_line(n, raw)
            if rec is not None:
                yield rec


def parse_jsonl_line(n: int, raw: bytes) -> Record | None:
    """One JSONL line as a Record (None for a blank line): the pipeline's workers parse lines
    themselves, so parsing runs on every core."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Record(n, error=f"not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})",
                      raw=raw.decode("utf-8", errors="replace").rstrip("\n"))
    if not text.strip():
        return None  # blank lines carry no row
    try:
        return Record(n, row=json.loads(text))
    except json.JSONDecodeError as exc:
        return Record(n, error=f"invalid JSON at column {exc.colno}: {exc.msg}", raw=text.rstrip("\n"))


def iter_chunks(path: str | Path, size: int = 2000) -> Iterator[list]:
    """The input in chunks for the pipeline's workers: raw (line, bytes) pairs for JSONL
    (parsed in the workers), Records for the other formats (parsed here)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise EmptyInput(f"{path}: the file is empty")
        chunk: list = []
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                chunk.append((n, raw))
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk
        return
    chunk = []
    for rec in iter_records(path):
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def position_word(path: str | Path) -> str:
    """What a Record's number counts: lines of a JSONL/CSV file, items of a JSON array or Parquet file."""
    return "item" if Path(path).suffix.lower() in (".json", ".parquet") else "line"


def _json_array(path: Path) -> Iterator[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError(f"{path}: a .json file must hold an array of rows")
    if not data:
        raise EmptyInput(f"{path}: the array is empty")
    for n, row in enumerate(data, start=1):
        yield Record(n, row=row)


def _csv(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield Record(reader.line_num, row={k: _maybe_json(v) for k, v in row.items()})


def _maybe_json(value: str) -> Any:
    """CSV cells holding JSON lists/objects (a `messages` column) are parsed back."""
    if value and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            n += 1
            yield Record(n, row=row)


def dumps(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False)

