"""engines/packed_order: the packed epoch Axolotl sizes while it loads the data is the epoch it
then trains, whatever torch's global RNG holds (torch seeds it at random in every process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SEED = 42


@pytest.fixture
def axolotl_estimate(monkeypatch):
    """Axolotl's own step estimate, with packed_order's patches undone after the test."""
    from axolotl.core.trainers.base import AxolotlTrainer
    from axolotl.utils import trainer as axolotl_trainer
    from axolotl.utils.samplers import multipack

    # each packing ends in a gc.collect(), ~0.2 s over a test session's heap; memory only
    monkeypatch.setattr(multipack.gc, "collect", lambda *a: 0)

    monkeypatch.setattr(axolotl_trainer, "RandomSampler", axolotl_trainer.RandomSampler)
    monkeypatch.setattr(AxolotlTrainer, "_create_multipack_sampler", AxolotlTrainer._create_multipack_sampler)
    return axolotl_trainer.calculate_total_num_steps


def _data():
    from datasets import Dataset

    lengths = np.random.default_rng(0).integers(30, 400, size=600).tolist()
    return Dataset.from_dict({"input_ids": [[1] * n for n in lengths], "labels": [[1] * n for n in lengths],
                              "length": lengths})


def _cfg():
    from axolotl.utils.dict import DictDefault

    return DictDefault(sample_packing=True, micro_batch_size=1, batch_size=1, sequence_len=512, num_epochs=1,
                       attn_supports_packing=True, dataset_num_proc=1, sample_packing_group_size=100_000,
                       sample_packing_bin_size=200)


def _estimates(estimate, data) -> set[int]:
    """Axolotl's step count for the same data in processes whose global RNG differs."""
    found = set()
    for global_seed in range(4):
        torch.manual_seed(global_seed)
        found.add(estimate(_cfg(), data))
    return found


def test_the_epoch_length_estimate_packs_the_order_epoch_0_trains(axolotl_estimate):
    from axolotl.utils.samplers import MultipackBatchSampler, get_dataset_lengths

    from tunebook.engines import packed_order

    data = _data()
    assert len(_estimates(axolotl_estimate, data)) > 1, "as Axolotl ships: the length follows the global RNG"

    packed_order.install(SEED)
    (steps,) = _estimates(axolotl_estimate, data)
    trained = MultipackBatchSampler(packed_order.EpochSeededSampler(len(data), SEED), lengths=get_dataset_lengths(data),
                                    batch_max_len=512, batch_size=1, group_size=100_000, bin_size=200,
                                    drop_last=True, num_processes=1)
    trained.set_epoch(0)
    assert steps == len(trained.generate_batches()), "the estimate is not the epoch that trains"
    packed = sorted(i for batch in trained.generate_batches() for b in batch for i in b)
    assert packed == list(range(len(data))), "every row is in exactly one pack of the epoch"
