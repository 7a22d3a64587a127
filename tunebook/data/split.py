"""Deterministic splits by content hash: a row keeps its split when other rows are added."""

from __future__ import annotations

from typing import Any

from tunebook.data.dedup import NearDuplicates, content_hash, content_text


def split_of(row: Any, val: float = 0.05, test: float = 0.05, salt: str = "") -> str:
    h = int(content_hash({"salt": salt, "row": row})[:12], 16) / 16**12
    if h < test:
        return "test"
    if h < test + val:
        return "val"
    return "train"


def leakage(splits: dict[str, list[Any]], threshold: float = 0.85) -> list[dict]:
    """Rows of val/test that exactly or nearly repeat a train row (should be none)."""
    index = NearDuplicates(threshold=threshold)
    train_hashes = set()
    for i, row in enumerate(splits.get("train", [])):
        train_hashes.add(content_hash(row))
        index.match(f"train:{i}", content_text(row))
    found = []
    for name in ("val", "test"):
        for i, row in enumerate(splits.get(name, [])):
            if content_hash(row) in train_hashes:
                found.append({"split": name, "index": i, "kind": "exact"})
                continue
            hit = index.match(f"{name}:{i}", content_text(row))
            if hit and hit[0].startswith("train:"):
                found.append({"split": name, "index": i, "kind": "near", "train": hit[0], "jaccard": round(hit[1], 3)})
    return found
