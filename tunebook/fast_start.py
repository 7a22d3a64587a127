"""Start-up work the libraries repeat and no run needs, skipped without changing a result.

Every training, eval and `make` command is a fresh process, and `make test` starts dozens of
engines on tiny models, where start-up is most of the wall time (a tiny Axolotl run: ~8 s of
its ~12 s before the first step). Two costs there are pure repetition:

- transformers and trl each build the map of import names to distributions at import time
  (`importlib.metadata.packages_distributions()` reads every installed package's RECORD:
  ~0.85 s a call here); the installed packages do not change within a process.
- `datasets.Dataset.save_to_disk(num_proc=1)`, as Axolotl calls it for a prepared dataset of
  fewer than 512 rows, still writes through a one-worker "spawn" pool: a fresh interpreter
  that imports datasets before it writes a shard (~1.5 s). Without `num_proc` it writes the
  same single shard in process.
"""

from __future__ import annotations

import functools
import importlib.metadata


def process_start() -> None:
    """What every tunebook process (CLI, engine worker, eval worker) does first, before any
    library import: the shared distribution index, and the import-time noise silenced."""
    from tunebook.quiet import quiet_imports

    share_distribution_index()
    quiet_imports()


def share_distribution_index() -> None:
    """Build the import-name -> distributions map once per process. Callers get a copy each,
    so one that edits its map cannot change another's. Call before transformers is imported."""
    original = importlib.metadata.packages_distributions
    if getattr(original, "__wrapped__", None):
        return
    built = functools.cache(original)

    @functools.wraps(original)
    def packages_distributions():
        return {name: list(dists) for name, dists in built().items()}

    importlib.metadata.packages_distributions = packages_distributions


def save_without_a_pool() -> None:
    """`save_to_disk` with `num_proc` of 0 or 1 writes in process (see the module's note)."""
    from datasets import Dataset

    original = Dataset.save_to_disk
    if getattr(original, "__wrapped__", None):
        return

    @functools.wraps(original)
    def save_to_disk(self, dataset_path, max_shard_size=None, num_shards=None, num_proc=None, storage_options=None):
        if num_proc is not None and num_proc <= 1:
            num_proc = None
        return original(self, dataset_path, max_shard_size=max_shard_size, num_shards=num_shards,
                        num_proc=num_proc, storage_options=storage_options)

    Dataset.save_to_disk = save_to_disk
