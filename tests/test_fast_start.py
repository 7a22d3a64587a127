"""tunebook.fast_start: the repeated start-up work is skipped, and what callers get is unchanged."""

from __future__ import annotations

import importlib.metadata

import pytest

from tunebook import fast_start


def test_the_distribution_index_is_built_once_and_each_caller_gets_its_own_copy(monkeypatch):
    # the stdlib's own, also when an in-process `tunebook` command of an earlier test wrapped it
    current = importlib.metadata.packages_distributions
    original = getattr(current, "__wrapped__", current)
    monkeypatch.setattr(importlib.metadata, "packages_distributions", original)  # undone after the test
    want = original()
    scans = []
    real = importlib.metadata.distributions
    monkeypatch.setattr(importlib.metadata, "distributions", lambda **kw: scans.append(1) or real(**kw))

    fast_start.share_distribution_index()
    fast_start.share_distribution_index()  # a second call does not wrap the wrapper
    first = importlib.metadata.packages_distributions()
    first["torch"].append("edited by a caller")
    first["not-a-package"] = ["x"]
    second = importlib.metadata.packages_distributions()
    assert len(scans) == 1, "the installed packages were scanned again"
    assert second == want and "torch" in second
    assert importlib.metadata.packages_distributions.__wrapped__ is original


def test_a_one_process_save_writes_in_process_the_same_dataset(tmp_path, monkeypatch):
    from datasets import Dataset, load_from_disk
    from datasets import arrow_dataset

    unwrapped = getattr(Dataset.save_to_disk, "__wrapped__", Dataset.save_to_disk)
    monkeypatch.setattr(Dataset, "save_to_disk", unwrapped)  # undone after the test

    def no_pool(*a, **kw):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(arrow_dataset.mp, "get_context", no_pool)
    rows = {"input_ids": [[1, 2, 3], [4, 5], [6]], "labels": [[-100, 2, 3], [-100, 5], [6]]}
    ds = Dataset.from_dict(rows)
    with pytest.raises(AssertionError, match="pool"):  # as datasets ships: a pool for one process
        ds.save_to_disk(str(tmp_path / "unpatched"), num_proc=1)

    fast_start.save_without_a_pool()
    ds.save_to_disk(str(tmp_path / "one"), num_proc=1, num_shards=None, max_shard_size=None)
    assert load_from_disk(str(tmp_path / "one")).to_dict() == rows
    with pytest.raises(AssertionError, match="pool"):  # more than one process still gets its pool
        ds.save_to_disk(str(tmp_path / "two"), num_proc=2)


def test_process_start_shares_the_index_and_silences_the_noisy_loggers(monkeypatch):
    import logging

    from tunebook.quiet import NOISY_LOGGERS

    current = importlib.metadata.packages_distributions
    monkeypatch.setattr(importlib.metadata, "packages_distributions", getattr(current, "__wrapped__", current))
    for name in NOISY_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)

    fast_start.process_start()
    assert getattr(importlib.metadata.packages_distributions, "__wrapped__", None) is not None
    assert all(logging.getLogger(n).level == logging.ERROR for n in NOISY_LOGGERS)
