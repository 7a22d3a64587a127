#!/usr/bin/env python3
"""Write the small starter instruction set the first recipes train on.

Hubs are unreachable, so the recipes need data that ships in the repo; templated,
exactly-checkable answers make "did the loss go down / did it learn" easy to see.
Seeded, so re-running it reproduces the committed files byte for byte.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SYSTEM = "You are a concise assistant. Answer with the result only, in one sentence."

UNITS = [
    ("kilometres", "metres", 1000),
    ("metres", "centimetres", 100),
    ("kilograms", "grams", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("litres", "millilitres", 1000),
]
WORDS = [
    "basket", "rebound", "assist", "court", "dribble", "guard", "center", "forward",
    "timeout", "jumper", "layup", "dunk", "steal", "block", "screen", "pivot",
]


def _arith(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op = rng.choice(["+", "-", "*"])
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    q = rng.choice(["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}."])
    return q.format(a=a, op=op, b=b), f"{a} {op} {b} = {value}."


def _units(rng: random.Random) -> tuple[str, str]:
    big, small, factor = rng.choice(UNITS)
    n = rng.randint(2, 40)
    return f"How many {small} are in {n} {big}?", f"{n} {big} is {n * factor} {small}."


def _reverse(rng: random.Random) -> tuple[str, str]:
    w = rng.choice(WORDS)
    return f"Spell the word '{w}' backwards.", f"'{w}' backwards is '{w[::-1]}'."


def _count(rng: random.Random) -> tuple[str, str]:
    w = rng.choice(WORDS)
    return f"How many letters does the word '{w}' have?", f"'{w}' has {len(w)} letters."


def _maximum(rng: random.Random) -> tuple[str, str]:
    xs = rng.sample(range(1, 200), 5)
    return (
        "Which is the largest number in " + ", ".join(map(str, xs)) + "?",
        f"The largest number is {max(xs)}.",
    )


TASKS = [_arith, _units, _reverse, _count, _maximum]


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out = []
    while len(out) < n:
        question, answer = rng.choice(TASKS)(rng)
        if question in seen:
            continue
        seen.add(question)
        out.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return out


def _wrong(answer: str, rng: random.Random) -> str:
    """A plausible but wrong answer: the same sentence with its last number (or word) changed."""
    nums = re.findall(r"-?\d+", answer)
    if nums:
        last = nums[-1]
        bad = str(int(last) + rng.choice([-3, -2, -1, 1, 2, 7]))
        i = answer.rfind(last)
        return answer[:i] + bad + answer[i + len(last):]
    m = re.search(r"'([a-z]+)'\.$", answer)
    if m:
        w = m.group(1)
        return answer[: m.start(1)] + w[1:] + w[0] + answer[m.end(1):]
    return answer + " Probably."


def preference_rows(chat_rows: list[dict], seed: int) -> list[dict]:
    """DPO pairs from the chat rows: the prompt turns, the right answer, a wrong one."""
    rng = random.Random(seed + 1)
    out = []
    for row in chat_rows:
        prompt, answer = row["messages"][:-1], row["messages"][-1]["content"]
        out.append({"messages": prompt, "chosen": answer, "rejected": _wrong(answer, rng)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="data/starter")
    ap.add_argument("--train", type=int, default=320)
    ap.add_argument("--val", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    all_rows = rows(args.train + args.val, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = (("train", all_rows[: args.train]), ("val", all_rows[args.train :]),
             ("preference", preference_rows(all_rows[: args.train], args.seed)))
    for name, part in parts:
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"wrote {len(part)} rows to {out / (name + '.jsonl')}")


if __name__ == "__main__":
    main()
