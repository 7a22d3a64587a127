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

from tunebook.runs import RunDir


def run_worker(module: str, run: RunDir, config_path: Path, env: dict[str, str], echo: bool = True) -> dict:
    """Run `python -m module CONFIG METRICS`; return its metrics or raise EngineFailed."""
    metrics_path = run.path / "metrics.json"
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", module, str(config_path), str(metrics_path)]
    with open(run.log, "wb") as log:
        log.write((" ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env)
        try:
            assert proc.stdout is not None
            # Raw chunks, not lines: tqdm redraws with \r and must reach the terminal live.
            while chunk := proc.stdout.read1(65536):
                log.write(chunk)
                log.flush()
                if echo:
                    sys.stdout.buffer.write(chunk)
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
        raise EngineFailed(rc, run.log)
    return json.loads(metrics_path.read_text(encoding="utf-8"))


CAUSE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)):\s*(.*)$")


class EngineFailed(RuntimeError):
    """The engine process failed; `cause` is the one line a user needs (the exception that
    ended it), the traceback stays in the log."""

    def __init__(self, returncode: int, log: Path):
        self.returncode = returncode
        self.log = log
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        found = [m for m in map(CAUSE.match, (line.strip() for line in lines)) if m]
        if found:
            self.cause = f"{found[-1].group(1)}: {found[-1].group(2)}".strip().rstrip(":")
        elif returncode < 0:
            self.cause = f"killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
        else:
            self.cause = f"exited with code {returncode}"
        super().__init__(f"engine exited with code {returncode}: {self.cause}")
