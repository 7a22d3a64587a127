"""Packed batches in an order that is a function of (seed, epoch) alone, so a resumed run
trains on the batches the uninterrupted run would have.

Axolotl's sample packing wraps a plain `RandomSampler`, which draws its shuffle from the
global torch RNG when the epoch begins. A resumed run reaches that moment with the RNG in
another state (PEFT initialises fresh LoRA weights before loading the checkpoint's), so it
packed a different order and skipped the wrong batches: after a kill at step 8 of the
smollm2 LoRA recipe, steps 9-24 trained on other data (loss curves 0.74 apart). Without
packing, transformers/accelerate already seed the sampler this way, and resume was exact.
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
    """In the engine process: Axolotl's multipack sampler gets an EpochSeededSampler in place
    of its RandomSampler, and hands it the epoch the trainer sets."""
    from axolotl.core.trainers.base import AxolotlTrainer

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
