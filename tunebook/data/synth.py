"""Rows shaped like real Alpaca data, for `make bench-data`: the same lengths (instruction
~10-25 words, an input on ~40% of rows, answers of 20-150 words), the same mix of numbers,
arithmetic and decimals that PII scrubbing has to leave alone, a little real-looking PII to
find, and ~2% exact and ~1% near duplicates. Seeded: the same rows every time."""

from __future__ import annotations

import random
from typing import Iterator

WORDS = (
    "the of and to in is that for it as with was on be by this are or from at an which have not they you "
    "all can more one has their been would what about there when if will so no out up into time some could "
    "them other than then now only its over also after use two how our work first well way even new want "
    "because any these give day most us data model team season player points game average rebounds assists "
    "write explain describe summarize list compare translate classify generate suggest identify calculate "
    "story poem email letter essay paragraph sentence article review recipe plan strategy example reason "
    "water energy climate history science music art health city country language computer network system "
    "student teacher company market customer product service design process research result problem answer"
).split()
VERBS = ["Write", "Explain", "Describe", "Summarize", "List", "Compare", "Translate", "Classify", "Generate",
         "Suggest", "Identify", "Calculate", "Rewrite", "Give", "Create"]


def _words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _answer(rng: random.Random) -> str:
    parts = [_words(rng, 8, 20).capitalize() + "."]
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.15:
            a, b = rng.randint(100, 99999), rng.randint(2, 999)
            parts.append(f"{a} / {b} = {a / b:.2f}.")
        elif kind < 0.25:
            parts.append(f"The total is {rng.randint(10**8, 10**9)} + {rng.randint(10**12, 10**15)}.")
        elif kind < 0.35:
            parts.append(f"He scored {rng.randint(5, 45)} points, {rng.randint(0, 15)} rebounds and shot "
                         f"{rng.random():.3f} from the field in {rng.randint(1990, 2025)}.")
        elif kind < 0.37:
            parts.append(f"Contact {rng.choice(WORDS)}.{rng.choice(WORDS)}@example.com for details.")
        elif kind < 0.39:
            parts.append(f"Call {rng.randint(200, 989)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)} today.")
        else:
            parts.append(_words(rng, 6, 25).capitalize() + ".")
    return " ".join(parts)


def alpaca_rows(n: int, seed: int = 0) -> Iterator[dict]:
    rng = random.Random(seed)
    kept: list[dict] = []
    for _ in range(n):
        r = rng.random()
        if kept and r < 0.02:
            yield dict(rng.choice(kept))  # an exact duplicate
            continue
        if kept and r < 0.03:
            row = dict(rng.choice(kept))
            words = row["output"].split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)  # one word changed: a near duplicate
            row["output"] = " ".join(words)
            yield row
            continue
        row = {"instruction": f"{rng.choice(VERBS)} {_words(rng, 6, 22)}.",
               "input": _words(rng, 5, 40) if rng.random() < 0.4 else "",
               "output": _answer(rng)}
        if len(kept) < 5000:
            kept.append(row)
        elif rng.random() < 0.01:
            kept[rng.randrange(len(kept))] = row
        yield row
