"""Run directories: what ran, with what, on what, and whether it finished.

Layout of `runs/<recipe-name>/<run-id>/`:
    INCOMPLETE        present from the first moment until every output is written
    recipe.yaml       the recipe file byte for byte
    config.yaml       the resolved engine config exactly as launched
    run.json          the record (status: running | finished | failed | interrupted)
    .lock             held (flock) by the process training it: a dead process holds nothing
    logs/engine.log   everything the engine printed (each resumed segment appends)
    output/           the engine's outputs in HF layout (adapter or full model), and its
                      checkpoint-N folders (weights, optimizer, RNG, trainer state)
A run killed by SIGKILL keeps INCOMPLETE and status "running": never mistaken for finished,
and `make train RESUME=latest` continues it from its last complete checkpoint.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tunebook.atomic import atomic_save_pretrained, atomic_write_json, atomic_write_text  # noqa: F401 (re-exported)
from tunebook.paths import PATHS

if TYPE_CHECKING:
    from tunebook.records import RunRecord

RUNS_ROOT = PATHS.runs
MARKER = "INCOMPLETE"
TRACKED_PACKAGES = (
    "tunebook", "axolotl", "torch", "transformers", "peft", "trl", "datasets", "accelerate",
    "bitsandbytes", "unsloth", "unsloth_zoo", "lm_eval",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, recipe_name: str, root: Path = RUNS_ROOT) -> "RunDir":
        path = Path(root) / recipe_name / new_run_id()
        (path / "logs").mkdir(parents=True)
        (path / MARKER).write_text(
            "This run has not finished writing its outputs; do not use them.\n", encoding="utf-8"
        )
        return cls(path)

    @property
    def output(self) -> Path:
        return self.path / "output"

    @property
    def log(self) -> Path:
        return self.path / "logs" / "engine.log"

    @property
    def record_path(self) -> Path:
        return self.path / "run.json"

    def write_record(self, record: "RunRecord") -> None:
        from tunebook.records import dump

        atomic_write_json(self.record_path, dump(record))

    def read_record(self) -> "RunRecord":
        from tunebook.records import RunRecord, load

        return load(self.record_path, RunRecord)

    def finish(self, record: "RunRecord") -> None:
        """Mark finished only after outputs and record are on disk, then point `latest` here."""
        from tunebook.records import RunRecord, dump

        self.write_record(RunRecord.model_validate({**dump(record), "status": "finished"}))
        (self.path / MARKER).unlink(missing_ok=True)
        latest = self.path.parent / "latest"
        tmp = self.path.parent / f".latest.{secrets.token_hex(3)}"
        tmp.symlink_to(self.path.name)
        os.replace(tmp, latest)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the run's lock while training it. flock dies with its process (even on
        SIGKILL), so a lock nobody holds means nothing is training this run any more."""
        with open(self.path / ".lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                from tunebook.errors import Problem, TunebookError

                raise TunebookError([Problem(str(self.path), "", "another process is training this run right now")],
                                    hint="wait for it, or stop it (Ctrl-C) before resuming") from None
            yield

    def checkpoints(self) -> list[tuple[int, Path]]:
        """The trainer's complete checkpoints, oldest first. The trainer writes trainer_state.json
        last, so a checkpoint cut short by a kill lacks it (or holds half of it) and is skipped."""
        found = []
        for p in self.output.glob("checkpoint-*"):
            step = p.name.rsplit("-", 1)[-1]
            try:
                json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if step.isdigit():
                found.append((int(step), p))
        return sorted(found)

    @property
    def is_complete(self) -> bool:
        if (self.path / MARKER).exists() or not self.record_path.exists():
            return False
        from pydantic import ValidationError

        try:
            return self.read_record().status == "finished"
        except (ValidationError, ValueError):  # not a record tunebook can read: not a usable run
            return False


def finished_runs(recipe_name: str, root: Path = RUNS_ROOT) -> list[RunDir]:
    base = Path(root) / recipe_name
    if not base.is_dir():
        return []
    runs = [RunDir(p) for p in sorted(base.iterdir()) if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
    return [r for r in runs if r.is_complete]


def find_run(recipe_name: str, run: str | None = None, root: Path = RUNS_ROOT) -> RunDir:
    """RUN may be a run id, a run directory, or empty for the latest finished run."""
    from tunebook.errors import Problem, TunebookError

    if run and Path(run).is_dir():
        found = RunDir(Path(run))
    elif run:
        found = RunDir(Path(root) / recipe_name / run)
    else:
        runs = finished_runs(recipe_name, root)
        if not runs:
            raise TunebookError([Problem(str(Path(root) / recipe_name), "", "no finished run of this recipe")],
                                hint="train it first: make train RECIPE=<its path>")
        found = runs[-1]
    if not found.is_complete:
        raise TunebookError([Problem(str(found.path), "", "not a finished run (missing, failed or INCOMPLETE)")])
    return found


def resumable_run(recipe_name: str, which: str, root: Path = RUNS_ROOT) -> RunDir:
    """RESUME=latest (the recipe's newest run) or a run id or directory: a run that did not
    finish, is not being trained by anyone, and kept a checkpoint."""
    from tunebook.errors import Problem, TunebookError

    base = Path(root) / recipe_name
    if which == "latest":
        runs = sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()
                      and not p.name.startswith(".")) if base.is_dir() else []
        if not runs:
            raise TunebookError([Problem(str(base), "", "no run of this recipe to resume")],
                                hint="start one: make train RECIPE=<its path>")
        run = RunDir(runs[-1])
    else:
        run = RunDir(Path(which) if Path(which).is_dir() else base / which)
    if not run.record_path.exists():
        raise TunebookError([Problem(str(run.path), "", "no run.json: not a run directory tunebook wrote")])
    record = run.read_record()
    if record.status == "finished" and run.is_complete:
        raise TunebookError([Problem(str(run.path), "", "this run finished; there is nothing to resume")],
                            hint="to train again, start a new run: make train RECIPE=<its path>")
    if not run.checkpoints():
        raise TunebookError([Problem(str(run.path / "output"), "", "the run kept no complete checkpoint to resume "
                                     "from (it stopped before the first save, or save_strategy is \"no\")")],
                            hint="start it again: make train RECIPE=<its path> (set save_steps to checkpoint)")
    return run


def dir_size(path: Path, skip_checkpoints: bool = False) -> int:
    """Bytes under `path`; with skip_checkpoints, what a user ships: not the trainer's
    checkpoint-N folders (weights and optimizer state kept for resuming and the learning curve)."""
    root = Path(path)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()
               and not (skip_checkpoints and p.relative_to(root).parts[0].startswith("checkpoint-")))
