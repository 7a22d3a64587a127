"""PII scrubbing into typed placeholders, with per-type counts.

Regexes with validation (Luhn for cards, octet ranges for IPv4, context for numbers that are
arithmetic or decimals, an allow-list of documented placeholders) rather than an NER library:
Presidio and scrubadub's NER need spaCy models that can't be downloaded here, and for these
structured types their own recognisers are regexes too. Recall and precision are measured
on a labelled sample in tests/data/pii_labelled.jsonl.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

# One pass over the text: the alternatives in one regex, tried left to right at each position
# (URL credentials before emails, cards before phones, as when they ran one after another).
PATTERNS: list[tuple[str, str]] = [
    ("URL_SECRET",
     r"\b[a-z][a-z0-9+.-]*://[^\s/:@]+:[^\s/@]+@[^\s]+"  # scheme://user:password@host
     r"|\bhttps?://[^\s?#]+\?[^\s#]*\b(?:token|access_token|api_key|apikey|key|secret|password|sig|auth)=[^\s&#]+[^\s]*"),
    ("EMAIL", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    ("CREDIT_CARD", r"\b(?:\d[ -]?){12,18}\d\b"),
    ("SSN", r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
    ("IP_ADDRESS", r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    ("IPV6", r"\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b"
             r"|\b(?:[0-9a-f]{1,4}:){1,6}:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5}\b"),
    ("PHONE",
     r"(?<![\w.-])(?:\+\d{1,3}[ .-]?|1[ .-])?(?:\(\d{2,4}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w|[.-]\d)"
     r"|(?<![\w.+-])\d{3}-\d{4}(?![\w-]|\.\d)"  # a 7-digit local number
     r"|(?<![\w+])\+\d{1,3}(?:[ .-]\d{1,4}){2,4}(?!\w|[.-]\d)"),  # international: +44 20 7946 0958
]
_TRIGGERS = {"URL_SECRET": "://", "EMAIL": "@", "IPV6": ":"}  # the others need a digit
_STARTS_WITH_DIGIT = {"CREDIT_CARD", "SSN", "IP_ADDRESS", "PHONE"}  # or ( or +: one look-ahead for all


@lru_cache(maxsize=None)
def _one_pass(kinds: tuple[str, ...]) -> re.Pattern:
    """The patterns that can match this text, as one regex. Most rows have no '://', '@' or
    ':': leaving those alternatives out, and trying the number patterns only where a digit,
    '(' or '+' starts, is most of the speed (3x over six regexes one after another)."""
    plain = [f"(?P<{k}>{p})" for k, p in PATTERNS if k in kinds and k not in _STARTS_WITH_DIGIT]
    numbers = [f"(?P<{k}>{p})" for k, p in PATTERNS if k in kinds and k in _STARTS_WITH_DIGIT]
    parts = plain + ([f"(?=[\\d(+])(?:{'|'.join(numbers)})"] if numbers else [])
    return re.compile("|".join(parts), re.I)
# A number inside arithmetic or a decimal is not a card or a phone: "83265 / 305 = 275.03",
# "472547338 + 960397912423686", "1.5-2.5".
_OPERATOR_BEFORE = re.compile(r"(?:[+*/=×÷^]|\d\s*[-–])\s*$|\d\.$")
_OPERATOR_AFTER = re.compile(r"^\s*(?:[+*/=×÷^]|[-–]\s*\d)|^\.\d|^%")
_IPV6_PREFIXES = ("fe80", "2001", "fd", "fc", "ff0")
# Placeholder values that teach a format ("a hypothetical phone number: 123-456-7890"):
# documented fakes, kept. Options.pii_allow (make data DATA_ARGS="--pii-allow FILE") adds more.
DEFAULT_ALLOW = frozenset({"123-456-7890", "(123) 456-7890", "123.456.7890", "123 456 7890", "555-555-5555",
                           "(555) 555-5555", "000-000-0000", "111-111-1111", "123-4567", "555-5555",
                           "(555) 123-4567", "555-123-4567", "555-1234"})


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


_EQUATION = re.compile(r"\d\s*[+*/=×÷]\s*[-(]?\d")  # "256626720691 + 1646615806005 =" just before a result


def _in_arithmetic(text: str, start: int, end: int) -> bool:
    return bool(_OPERATOR_BEFORE.search(text[max(0, start - 4):start]) or _OPERATOR_AFTER.search(text[end:end + 4])
                or _EQUATION.search(text[max(0, start - 80):start]))


def _card_groups_ok(value: str) -> bool:
    """Cards are written whole or in the groups printed on them (4-4-4-4, 4-6-5 Amex);
    "355909190063-746" is a subtraction."""
    groups = [len(g) for g in re.split(r"[ -]", value) if g]
    return len(groups) == 1 or all(n == 4 for n in groups[:-1]) and 1 <= groups[-1] <= 4 or groups == [4, 6, 5]


def _looks_like_range(value: str) -> bool:
    """A 7-digit "phone" made of round numbers is a range: "100-1000 Hz", "500-1000 calories"."""
    first, _, second = value.partition("-")
    return first.endswith("00") or first[:1] in "01"


def _is_pii(kind: str, value: str, text: str, start: int, end: int, allow: frozenset) -> bool:
    if value in allow:
        return False
    if kind == "CREDIT_CARD":
        return luhn_ok(value) and _card_groups_ok(value) and not _in_arithmetic(text, start, end)
    if kind == "PHONE":
        if len(value) == 8 and value[3] == "-" and _looks_like_range(value):
            return False
        return not _in_arithmetic(text, start, end)
    if kind == "IPV6" and value.count(":") < 7:
        groups = [g for g in value.split(":") if g]
        # "abc::def", s[1::2]: two groups are code, not an address, unless a known prefix says so
        return any(c.isdigit() for c in value) and (len(groups) >= 3 or value.lower().startswith(_IPV6_PREFIXES))
    return True


def scrub_text(text: str, counts: Counter | None = None, found: list | None = None,
               allow: frozenset = DEFAULT_ALLOW) -> str:
    """Replace PII with <TYPE> placeholders; count per type, and list (type, value, context) if asked."""
    counts = counts if counts is not None else Counter()
    digit = _DIGIT.search(text) is not None
    kinds = tuple(kind for kind, _ in PATTERNS
                  if (_TRIGGERS[kind] in text if kind in _TRIGGERS else digit))
    if not kinds:
        return text

    def repl(m: re.Match) -> str:
        kind, value = m.lastgroup, m.group(0)
        if not _is_pii(kind, value, text, m.start(), m.end(), allow):
            return value
        kind = "IP_ADDRESS" if kind == "IPV6" else kind
        counts[kind] += 1
        if found is not None:
            found.append((kind, value, text[max(0, m.start() - 40):m.end() + 40]))
        return f"<{kind}>"

    return _one_pass(kinds).sub(repl, text)


_DIGIT = re.compile(r"\d")


def find_pii(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str, str]] = []
    scrub_text(text, found=found)
    return [(kind, value) for kind, value, _context in found]


def scrub(value: Any, counts: Counter, found: list | None = None, allow: frozenset = DEFAULT_ALLOW) -> Any:
    """Scrub every string inside a row (roles and keys are left alone)."""
    if isinstance(value, str):
        return scrub_text(value, counts, found, allow)
    if isinstance(value, list):
        return [scrub(v, counts, found, allow) for v in value]
    if isinstance(value, dict):
        return {k: (v if k in ("role", "from") else scrub(v, counts, found, allow)) for k, v in value.items()}
    return value
