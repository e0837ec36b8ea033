"""Training data: a resumable, rank-sharded batch order and the LightningDataModule over a recipe's dataset.

The whole run is one pass over a fixed sequence of batches (every epoch a fresh permutation seeded by
(seed, epoch)), so a run resumed after `k` optimizer steps simply starts at batch `k * grad_accum`: the data
order of a resumed run equals the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

# global batches per length-sorted mega-batch (LLaVA sorts mega-batches of 50 x world size samples)
MEGA = 50


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices for `epochs` epochs; rank `rank` of `world` takes its slice of each global batch.

    The last incomplete global batch of an epoch is dropped so every rank sees equal-sized batches.
    `start` skips that many batches (a resumed run); `len` stays the whole run's length. With `lengths` (one
    estimate per sample) each global batch holds samples of similar length (less padding; `_grouped`).
    """

    def __init__(self, size: int, batch_size: int, *, epochs: int = 1, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world: int = 1, start: int = 0, lengths: Sequence[int] | None = None):
        if size < batch_size * world:
            raise ValueError(f"dataset of {size} samples is smaller than one global batch ({batch_size} x {world})")
        self.size, self.batch_size, self.epochs = size, batch_size, epochs
        self.seed, self.shuffle, self.rank, self.world, self.start = seed, shuffle, rank, world, start
        self.lengths = None if lengths is None else torch.as_tensor(list(lengths))

    @property
    def batches_per_epoch(self) -> int:
        """Global batches in one epoch."""
        return self.size // (self.batch_size * self.world)

    def __len__(self) -> int:
        # the whole run's length even when resumed: the trainer restores how many batches it has consumed
        return self.epochs * self.batches_per_epoch

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.size, generator=gen)
        return order if self.lengths is None else self._grouped(order, gen)

    def _grouped(self, order: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """`order` regrouped so each global batch holds samples of similar length: mega-batches of MEGA global
        batches are sorted by length (longest first), then the global batches are shuffled (seeded)."""
        glob = self.batch_size * self.world
        per = self.size // glob
        used, rest = order[: per * glob], order[per * glob :]
        mega = glob * MEGA
        parts = []
        for lo in range(0, len(used), mega):
            block = used[lo : lo + mega]
            parts.append(block[torch.argsort(self.lengths[block], descending=True, stable=True)])
        batches = torch.cat(parts).view(per, glob) if per else used.view(0, glob)
        batches = batches[torch.randperm(per, generator=gen)]
        return torch.cat((batches.reshape(-1), rest))

    def __iter__(self) -> Iterator[list[int]]:
        per = self.batches_per_epoch
        first_epoch, offset = divmod(self.start, per)
        for epoch in range(first_epoch, self.epochs):
            order = self._order(epoch)
            for b in range(offset if epoch == first_epoch else 0, per):
                lo = (b * self.world + self.rank) * self.batch_size
                yield order[lo : lo + self.batch_size].tolist()


class RecipeDataModule(L.LightningDataModule):
    """Serves `train` (and optionally `val`) samples through `collate` into training batches.

    `collate(samples) -> batch dict` (input_ids, labels, media, meta), see docs/ARCHITECTURE.md.
    """

    def __init__(self, train: Sequence, collate: Callable[[list], dict], *, batch_size: int, grad_accum: int = 1,
                 epochs: int = 1, seed: int = 0, val: Sequence | None = None, num_workers: int = 0,
                 lengths: Sequence[int] | None = None, val_batch_size: int | None = None):
        super().__init__()
        self.train_set, self.val_set, self.collate = train, val, collate
        self.batch_size, self.grad_accum, self.epochs = batch_size, grad_accum, epochs
        self.seed, self.num_workers, self.lengths = seed, num_workers, lengths
        self.val_batch_size = val_batch_size or batch_size

    def batch_sampler(self, start: int = 0) -> ResumableBatchSampler:
        """The training batch order for this process, skipping the first `start` batches."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return ResumableBatchSampler(len(self.train_set), self.batch_size, epochs=self.epochs, seed=self.seed,
                                     rank=rank, world=world, start=start, lengths=self.lengths)

    def batches_per_epoch(self, world: int = 1) -> int:
        """Batches each process takes per epoch (the incomplete last global batch is dropped)."""
        return len(self.train_set) // (self.batch_size * world)

    def train_dataloader(self) -> DataLoader:
        # The trainer has restored global_step from the checkpoint before it asks for the data.
        start = self.trainer.global_step * self.grad_accum if self.trainer is not None else 0
        return DataLoader(self.train_set, batch_sampler=self.batch_sampler(start), collate_fn=self.collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        # every process scores every val sample (the val set is small); the loss is averaged over processes
        return DataLoader(self.val_set or [], batch_size=self.val_batch_size, collate_fn=self.collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
