"""Run an engine worker module in a child process, teeing its output, and read its metrics.

A child process per run: a crash, an OOM kill or Ctrl-C in the engine leaves this process
able to mark the run, and the engine's import-time patches (Unsloth patches transformers)
never leak into tunebook or into the next run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tunebook.launch import Launch
from tunebook.runs import RunDir


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (kill -9 included).
    Linux only; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:
    """In the engine child before exec: no engine trains on, orphaned, after tunebook died,
    while its run can be resumed by another process."""
    die_with_parent(signal.SIGKILL)


def stop_with_make() -> None:
    """`kill -9` of `make train` kills make alone: tunebook, its child, would train on unseen.
    Under make, make's death is a SIGTERM here, which stops the engine and marks the run
    interrupted (train.sigterm_as_interrupt); RESUME=latest continues it."""
    ppid = os.getppid()
    try:
        if Path(f"/proc/{ppid}/comm").read_text().strip() != "make":
            return
    except OSError:
        return
    die_with_parent(signal.SIGTERM)
    if os.getppid() != ppid:  # make died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def run_worker(module: str, run: RunDir, config_path: Path, env: dict[str, str], echo: bool = True,
               resume_from: Path | None = None, launch: Launch | None = None) -> dict:
    """Run `python -m module CONFIG METRICS [CHECKPOINT]` (under torchrun when `launch` has
    several processes); return rank 0's metrics, with every rank's peak RSS, or raise EngineFailed."""
    launch = launch or Launch()
    metrics_path = run.path / "metrics.json"
    for old in [metrics_path, *run.path.glob("metrics.json.rank*")]:
        old.unlink(missing_ok=True)  # a resumed segment must not read the last one's
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "TUNEBOOK_ENGINE_LOG": str(run.log)}
    cmd = launch.command(module, [str(config_path), str(metrics_path)] + ([str(resume_from)] if resume_from else []))
    with open(run.log, "ab") as log:
        log.write((" ".join(cmd) + "\n").encode())
        log.flush()
        start = log.tell()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                                preexec_fn=_die_with_parent)
        shown = WithoutTracebacks()
        try:
            assert proc.stdout is not None
            # Raw chunks, not lines: tqdm redraws with \r and must reach the terminal live.
            while chunk := proc.stdout.read1(65536):
                log.write(chunk)
                log.flush()
                if echo:
                    sys.stdout.buffer.write(shown.feed(chunk))
                    sys.stdout.buffer.flush()
            rc = proc.wait()
        except BaseException:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)  # "stopped within seconds": a CI timeout does not wait long
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if rc != 0 or not metrics_path.exists():
        raise EngineFailed(rc, run.log, start)
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    ranks = sorted((json.loads(p.read_text(encoding="utf-8")) for p in run.path.glob("metrics.json.rank*")),
                   key=lambda r: r["rank"])
    metrics["distributed"] = {**(metrics.get("distributed") or {}), **launch.to_dict(),
                              "peak_rss_mib_per_rank": [r["peak_rss_mib"] for r in ranks] or [metrics.get("peak_rss_mib")]}
    for p in run.path.glob("metrics.json.rank*"):
        p.unlink()
    return metrics


class WithoutTracebacks:
    """The engine's output for the terminal, minus Python tracebacks: the log keeps them, the
    terminal gets tunebook's one line of cause at the end. Complete lines are judged whole;
    a line still being written (a tqdm bar redrawn with \\r) is shown as it comes."""

    STARTS = (b"Traceback (most recent call last):", b"The above exception was the direct cause",
              b"During handling of the above exception")

    def __init__(self) -> None:
        self.in_traceback = False
        self.after = False  # just past a traceback: its trailing blank lines go with it
        self.pending = b""  # the unfinished last line
        self.pending_shown = 0  # how much of it already went out

    def feed(self, chunk: bytes) -> bytes:
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        out = []
        for i, line in enumerate(lines):
            skip = self.pending_shown if i == 0 else 0
            if self._keep(line):
                out.append(line[skip:] + b"\n")
            elif skip:
                out.append(b"\n")  # the shown start of a line judged too late: end it
        if lines:
            self.pending_shown = 0
        maybe_start = any(start.startswith(self.pending) or self.pending.startswith(start) for start in self.STARTS)
        if not self.in_traceback and self.pending and not maybe_start:
            out.append(self.pending[self.pending_shown:])
            self.pending_shown = len(self.pending)
        return b"".join(out)

    def _keep(self, line: bytes) -> bool:
        if line.startswith(self.STARTS):
            self.in_traceback, self.after = True, False
            return False
        if self.in_traceback:
            if line.strip() and line[:1] not in (b" ", b"\t"):
                self.in_traceback, self.after = False, True  # the exception line: tunebook prints the cause
            return False
        if self.after and not line.strip():
            return False
        self.after = False
        return True


CAUSE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)):\s*(.*)$")


class EngineFailed(RuntimeError):
    """The engine process failed; `cause` is the one line a user needs (the exception that
    ended it), the traceback stays in the log."""

    def __init__(self, returncode: int, log: Path, start: int = 0):
        self.returncode = returncode
        self.log = log
        with open(log, "rb") as f:  # this segment's output only: an earlier one's error is not this cause
            f.seek(start)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        found = [m for m in map(CAUSE.match, (line.strip() for line in lines)) if m]
        if found:
            self.cause = f"{found[-1].group(1)}: {found[-1].group(2)}".strip().rstrip(":")
        elif returncode < 0:
            self.cause = f"killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
        else:
            self.cause = f"exited with code {returncode}"
        super().__init__(f"engine exited with code {returncode}: {self.cause}")
