"""Thread count that yields a core to a busy neighbour, checked between training steps.

Measured on 2 cores (README, Performance): OpenMP threads that spin briefly before they
sleep (`GOMP_SPINCOUNT=10000`, ~0.1 ms) train 1.4x faster than threads that sleep at once
(`OMP_WAIT_POLICY=PASSIVE`) on an idle machine, but with one busy single-threaded process
beside the run every parallel region waits for the thread that shares its core with the
neighbour: 3.4x slower. Fewer threads than cores there costs only the core given up. So the
engine runs with every core and brief spinning, and this watcher drops one thread while
another process keeps a core busy and takes it back when the core is free again.

It runs in the engine process (both workers install it through `timing`), reads only
system and own CPU times (psutil), and costs two syscalls a step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

BUSY = 0.5  # cores used by other processes over the last interval: give one up
FREE = 0.25  # ...and take it back below this (hysteresis: no flapping at the edge)
MIN_INTERVAL_S = 1.0  # shorter steps are aggregated: a CPU-time delta over a few ms is noise


@dataclass
class ThreadPolicy:
    cores: int
    threads: int = 0
    changes: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.threads = self.threads or self.cores

    def decide(self, others: float) -> int:
        """The thread count for the next steps, given the cores other processes used."""
        if self.cores < 2:
            return self.threads
        if others >= BUSY and self.threads == self.cores:
            return self.cores - 1
        if others < FREE and self.threads < self.cores:
            return self.cores
        return self.threads


class Watcher:
    """Samples other processes' CPU use between steps and applies the policy to torch."""

    def __init__(self, cores: int, set_threads=None):
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self.policy = ThreadPolicy(cores)
        self._set = set_threads or _torch_set_threads
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        t = self._psutil.cpu_times()
        busy = sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))
        own = self._me.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def others(self) -> float | None:
        """Cores other processes used since the last reading (None until the interval is long enough)."""
        now = self._sample()
        dt = now[0] - self._last[0]
        if dt < MIN_INTERVAL_S:
            return None
        used = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / dt
        self._last = now
        return used

    def step(self, at_step: int) -> None:
        others = self.others()
        if others is None:
            return
        want = self.policy.decide(others)
        if want != self.policy.threads:
            self._set(want)
            self.policy.changes.append({"step": at_step, "threads": want, "other_cores": round(others, 2)})
            self.policy.threads = want


def _torch_set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
