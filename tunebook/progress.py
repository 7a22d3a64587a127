"""One line per stage of a long command (`make compare`, `make bench`, `make eval`): which
recipe or model, which stage, how far through the list, how long so far. The engines and
lm-eval draw their own progress bars under it."""

from __future__ import annotations

import sys
import time

_T0 = time.time()


def stage(i: int, n: int, what: str) -> None:
    elapsed = int(time.time() - _T0)
    print(f"[{i}/{n}] {what}  ({elapsed // 60}:{elapsed % 60:02d} elapsed)", file=sys.stderr, flush=True)


def note(what: str) -> None:
    print(f"  {what}", file=sys.stderr, flush=True)
