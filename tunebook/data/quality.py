"""Quality filters: length, alphabetic ratio, repetition. Each filtered row gets its reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Filters:
    min_chars: int = 1
    max_chars: int = 100_000
    min_alpha_ratio: float = 0.0  # letters / non-space characters
    max_repetition: float = 1.0  # share of the text taken by its most repeated 3-word run

    def reason(self, text: str) -> str | None:
        n = len(text)
        if n < self.min_chars:
            return f"too short: {n} < {self.min_chars} characters"
        if n > self.max_chars:
            return f"too long: {n} > {self.max_chars} characters"
        if self.min_alpha_ratio > 0:
            chars = [c for c in text if not c.isspace()]
            ratio = sum(c.isalpha() for c in chars) / max(1, len(chars))
            if ratio < self.min_alpha_ratio:
                return f"alphabetic ratio {ratio:.2f} < {self.min_alpha_ratio}"
        if self.max_repetition < 1.0:
            rep = repetition_ratio(text)
            if rep > self.max_repetition:
                return f"repetition ratio {rep:.2f} > {self.max_repetition}"
        return None


def repetition_ratio(text: str, n: int = 3) -> float:
    words = text.split()
    if len(words) < n * 2:
        return 0.0
    grams: dict[tuple, int] = {}
    for i in range(len(words) - n + 1):
        g = tuple(words[i:i + n])
        grams[g] = grams.get(g, 0) + 1
    top = max(grams.values())
    return (top * n) / len(words) if top > 1 else 0.0
