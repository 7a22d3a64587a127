"""The neighbour watcher: one thread fewer while another process keeps a core busy, back when it stops."""

from __future__ import annotations

import subprocess
import sys
import time

from tunebook.engines import threads as T


def test_policy_gives_up_one_core_and_takes_it_back_with_hysteresis():
    p = T.ThreadPolicy(cores=2)
    assert p.decide(0.1) == 2 and p.decide(0.4) == 2  # light load: keep every core
    assert p.decide(0.9) == 1
    p.threads = 1
    assert p.decide(0.4) == 1  # between FREE and BUSY: stay (no flapping)
    assert p.decide(0.1) == 2
    assert T.ThreadPolicy(cores=1).decide(1.0) == 1
    assert T.ThreadPolicy(cores=4).decide(1.0) == 3


def test_watcher_sees_a_real_busy_process_and_sets_the_threads(monkeypatch):
    monkeypatch.setattr(T, "MIN_INTERVAL_S", 0.5)
    calls: list[int] = []
    w = T.Watcher(cores=2, set_threads=calls.append)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.5)
        w.step(7)
    finally:
        busy.kill()
        busy.wait()
    assert calls == [1] and w.policy.threads == 1
    assert w.policy.changes[0]["step"] == 7 and w.policy.changes[0]["other_cores"] >= T.BUSY
    w.others = lambda: 0.0  # the neighbour has gone (a quiet reading, whatever else this machine runs)
    w.step(9)
    assert calls == [1, 2] and w.policy.changes[-1] == {"step": 9, "threads": 2, "other_cores": 0.0}


def test_short_intervals_are_not_read():
    w = T.Watcher(cores=2, set_threads=lambda n: None)
    assert w.others() is None  # just created: less than MIN_INTERVAL_S of data
