"""PII scrubbing into typed placeholders, with per-type counts.

Regexes with validation (Luhn for cards, octet ranges for IPv4) rather than an NER library:
Presidio and scrubadub's NER need spaCy models that can't be downloaded here, and for these
structured types their own recognisers are regexes too. Recall and precision are measured
on a labelled sample in tests/data/pii_labelled.jsonl.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

# Order matters: URL credentials before emails (user:pass@host), cards before phones.
PATTERNS: list[tuple[str, re.Pattern]] = [
    ("URL_SECRET", re.compile(
        r"\b[a-z][a-z0-9+.-]*://[^\s/:@]+:[^\s/@]+@[^\s]+"  # scheme://user:password@host
        r"|\bhttps?://[^\s?#]+\?[^\s#]*\b(?:token|access_token|api_key|apikey|key|secret|password|sig|auth)=[^\s&#]+[^\s]*",
        re.I)),
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    ("CREDIT_CARD", re.compile(r"\b(?:\d[ -]?){12,18}\d\b")),
    ("SSN", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")),
    ("IP_ADDRESS", re.compile(
        r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"
        r"|\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}:?){1,6}\b", re.I)),
    ("PHONE", re.compile(
        r"(?<![\w.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w|[.-]\d)")),
]


def luhn_ok(digits: str) -> bool:
    nums = [int(c) for c in digits if c.isdigit()]
    if not 13 <= len(nums) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(nums)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def scrub_text(text: str, counts: Counter | None = None, found: list | None = None) -> str:
    """Replace PII with <TYPE> placeholders; count per type, and list (type, value) if asked."""
    counts = counts if counts is not None else Counter()
    for kind, pattern in PATTERNS:
        def repl(m: re.Match, kind=kind) -> str:
            if kind == "CREDIT_CARD" and not luhn_ok(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            if found is not None:
                found.append((kind, m.group(0)))
            return f"<{kind}>"
        text = pattern.sub(repl, text)
    return text


def find_pii(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    scrub_text(text, found=found)
    return found


def scrub(value: Any, counts: Counter) -> Any:
    """Scrub every string inside a row (roles and keys are left alone)."""
    if isinstance(value, str):
        return scrub_text(value, counts)
    if isinstance(value, list):
        return [scrub(v, counts) for v in value]
    if isinstance(value, dict):
        return {k: (v if k in ("role", "from") else scrub(v, counts)) for k, v in value.items()}
    return value
