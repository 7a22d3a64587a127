"""Where tunebook keeps things, defined once.

Everything is relative to the repo root, which is the directory `make` runs in (or
TUNEBOOK_ROOT): recipes name their models and data relative to the same place, so a run
directory, a recipe and its data always agree on what "data/nba" means. Commands and tests
that need another place pass a path to the function; the defaults all come from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def recipes(self) -> Path:
        return self.root / "recipes"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def eval_cache(self) -> Path:
        """Base-model scores, keyed by evaluate.eval_key."""
        return self.runs / ".eval-cache"

    @property
    def data_checks(self) -> Path:
        """Training-data checks, keyed by file hash (data/preflight.py)."""
        return self.runs / ".data-check"

    @property
    def tasks(self) -> Path:
        return self.root / "eval" / "tasks"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    @property
    def bench_db(self) -> Path:
        return self.bench / "history.sqlite"

    @property
    def bench_runs(self) -> Path:
        return self.runs / "bench"

    @property
    def profile_runs(self) -> Path:
        return self.runs / "profile"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def embedded_model(self) -> Path:
        return self.root / "models" / "smollm2-135m-instruct"


# relative when it is the working directory, so paths print as `runs/...` as users type them
PATHS = Paths(Path(os.environ.get("TUNEBOOK_ROOT") or "."))
