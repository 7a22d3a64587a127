"""Exact duplicates by a normalised content hash; near duplicates by MinHash LSH (datasketch)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

_WS = re.compile(r"\s+")


def row_text(row: Any) -> str:
    """All the text of a row, in order, without keys or roles."""
    if isinstance(row, str):
        return row
    if isinstance(row, dict):
        return "\n".join(row_text(v) for k, v in row.items() if k not in ("role", "from"))
    if isinstance(row, list):
        return "\n".join(row_text(v) for v in row)
    return "" if row is None else str(row)


def content_text(row: Any) -> str:
    """The text that makes a row what it is: turns and fields of its format, without the
    system prompt and metadata that templated datasets share across every row."""
    if isinstance(row, dict):
        for key, role_key, text_key in (("messages", "role", "content"), ("conversations", "from", "value")):
            turns = row.get(key)
            if isinstance(turns, list):
                return "\n".join(str(t.get(text_key, "")) for t in turns
                                 if isinstance(t, dict) and t.get(role_key) != "system")
        fields = [k for k in ("instruction", "input", "output", "text", "prompt", "chosen", "rejected") if k in row]
        if fields:
            return "\n".join(row_text(row[k]) for k in fields)
    return row_text(row)


def normalise(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip()


def content_hash(row: Any) -> str:
    return hashlib.sha256(normalise(content_text(row)).encode()).hexdigest()


def shingles(text: str, k: int = 5) -> set[bytes]:
    """Character k-grams of the normalised text: short instructions have too few words for
    word shingles, and one changed word would move a word-shingle Jaccard a long way."""
    t = normalise(text)
    if len(t) <= k:
        return {t.encode()}
    return {t[i:i + k].encode() for i in range(len(t) - k + 1)}


class NearDuplicates:
    """A MinHash LSH index of the rows kept so far. The signature of a row (the costly part:
    hashing every shingle) is computed where the row is processed, in the pipeline's
    workers, with datasketch's batched update; the index lives in the one process that
    decides, in input order, which row is kept. Kept signatures sit in one growing uint32
    array (512 bytes a row at 128 permutations), keyed by their row number in the LSH."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle: int = 5):
        import numpy as np
        from datasketch import MinHashLSH

        # Candidates are re-checked with the estimated Jaccard below, so tune the bands for
        # few missed pairs rather than few candidates.
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
        self.num_perm, self.shingle, self.threshold = num_perm, shingle, threshold
        self._np = np
        self.hv = np.empty((1024, num_perm), dtype=np.uint32)
        self.keys: list[str] = []

    def signature(self, text: str):
        return signature(text, self.num_perm, self.shingle)

    def match(self, key: str, text: str) -> tuple[str, float] | None:
        return self.match_signature(key, self.signature(text))

    def match_signature(self, key: str, sig) -> tuple[str, float] | None:
        """(key of the kept near-duplicate, estimated Jaccard) or None; a new row is indexed."""
        values = sig.hashvalues
        for other in self.lsh.query(sig):
            j = float(self._np.count_nonzero(self.hv[other] == values)) / self.num_perm
            if j >= self.threshold:
                return self.keys[other], j
        n = len(self.keys)
        if n == len(self.hv):
            self.hv = self._np.concatenate([self.hv, self._np.empty_like(self.hv)])
        self.hv[n] = values
        self.keys.append(key)
        self.lsh.insert(n, sig, check_duplication=False)
        return None


def shingle_hashes(text: str, k: int = 5):
    """32-bit hashes of the normalised text's k-byte shingles, computed in numpy (a polynomial
    over the k bytes of each window), distinct. datasketch's own per-item SHA-1 over Python
    bytes objects was most of the time left after batching."""
    import numpy as np

    data = np.frombuffer(normalise(text).encode("utf-8"), dtype=np.uint8).astype(np.uint32)
    if data.size <= k:
        data = np.pad(data, (0, k + 1 - data.size))
    h = np.zeros(data.size - k + 1, dtype=np.uint32)
    for j in range(k):  # k vector operations, not one per shingle
        h = h * np.uint32(16777619) + data[j:data.size - k + 1 + j]
    return np.unique(h)


def _same(x):
    return x


def signature(text: str, num_perm: int = 128, shingle: int = 5):
    """A LeanMinHash (datasketch) of the text's shingles: the shingle hashes go in as one batch."""
    from datasketch import LeanMinHash, MinHash

    if num_perm not in _PERMUTATIONS:  # drawn once: MinHash() draws them anew for every row
        _PERMUTATIONS[num_perm] = MinHash(num_perm=num_perm).permutations
    m = MinHash(num_perm=num_perm, permutations=_PERMUTATIONS[num_perm], scheme="affine32", hashfunc=_same)
    m.update_batch(shingle_hashes(text, shingle).tolist())
    return LeanMinHash(m)


_PERMUTATIONS: dict[int, Any] = {}
