"""Packed batches in an order that is a function of (seed, epoch) alone, so a resumed run
trains on the batches the uninterrupted run would have.

Axolotl's sample packing wraps a plain `RandomSampler`, which draws its shuffle from the
global torch RNG when the epoch begins. A resumed run reaches that moment with the RNG in
another state (PEFT initialises fresh LoRA weights before loading the checkpoint's), so it
packed a different order and skipped the wrong batches: after a kill at step 8 of the
smollm2 LoRA recipe, steps 9-24 trained on other data (loss curves 0.74 apart). Without
packing, transformers/accelerate already seed the sampler this way, and resume was exact.

The length of that packed epoch is decided earlier, while Axolotl prepares the data
(`calculate_total_num_steps`): it packs one order of its own, drawn through a `RandomSampler`
from torch's global RNG, which torch seeds at random in every process. The same recipe then
trained 441, 442 or 443 steps from one run to the next (make compare of 8e33260 and 8ee141c:
full 443 then 442, LoRA 441 then 443; the learning-rate schedule and which packs trained with
it), and the estimate's order was not the order trained, whose own pack count could differ.
That estimate now packs the order epoch 0 trains.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import RandomSampler, Sampler


class EpochSeededSampler(Sampler[int]):
    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


def install(seed: int) -> None:
    """In the engine process, before Axolotl loads the data: Axolotl's multipack sampler gets
    an EpochSeededSampler in place of its RandomSampler, and hands it the epoch the trainer
    sets; the epoch-length estimate packs that sampler's epoch 0."""
    from axolotl.core.trainers.base import AxolotlTrainer
    from axolotl.utils import trainer as axolotl_trainer

    axolotl_trainer.RandomSampler = lambda dataset: EpochSeededSampler(len(dataset), seed)

    original = AxolotlTrainer._create_multipack_sampler

    def create(self, base_sampler, dataset):
        if type(base_sampler) is RandomSampler:
            base_sampler = EpochSeededSampler(len(dataset), seed)
        sampler = original(self, base_sampler, dataset)
        own_set_epoch = sampler.set_epoch

        def set_epoch(epoch: int) -> None:
            if isinstance(base_sampler, EpochSeededSampler):
                base_sampler.set_epoch(epoch)
            own_set_epoch(epoch)

        sampler.set_epoch = set_epoch
        return sampler

    AxolotlTrainer._create_multipack_sampler = create
