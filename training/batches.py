"""Which training windows make each step's batch, for one process or each rank of a `torchrun` job.

An unsharded split is read whole by every process; a step's global batch is one slice of an
epoch-wise permutation and rank r trains on every world-th row of it. A split prepared with
`--shards N` is read shard by shard: rank r reads only the shards k with k mod world = r, and a
step's global batch takes batch_size / N windows from every shard (each shard has its own
permutation), so one process reading all N shards trains on exactly the union of the ranks'
batches (docs/prepare_at_scale.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rotorec.features.artifacts import split_files
from rotorec.features.dataset import SequenceBatch, SequenceDataset
from rotorec.training.config import ConfigError


def batch_indices(size: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of the training set for `step`: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = math.ceil(size / batch_size)
    epoch, position = divmod(step, per_epoch)
    permutation = np.random.default_rng([seed, epoch]).permutation(size)
    return permutation[position * batch_size : (position + 1) * batch_size]


@dataclass(frozen=True)
class Distributed:
    """This process's place in a `torchrun` job (absent when run as a single process)."""

    rank: int
    world: int
    local_rank: int

    @classmethod
    def from_env(cls) -> Distributed | None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def share(self, mean_loss: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """Rescale a rank's mean so DDP's gradient average equals the mean over the global batch."""
        total = count.detach().float().clone()
        torch.distributed.all_reduce(total)
        return mean_loss * count.float() * self.world / total.clamp(min=1)


class TrainingBatches:
    """This process's part of the training split and of every step's batch."""

    def __init__(self, data: Path, batch_size: int, seed: int, distributed: Distributed | None) -> None:
        self.batch_size, self.seed, self.distributed = batch_size, seed, distributed
        world, rank = (1, 0) if distributed is None else (distributed.world, distributed.rank)
        self.shards = len(split_files(data, "train"))
        if self.shards == 1:
            self.dataset = SequenceDataset(data, "train")
            return
        if self.shards % world:
            raise ConfigError(f"{data}: {self.shards} train shards cannot be shared evenly by {world} processes")
        if batch_size % self.shards:
            raise ConfigError(f"train.batch_size {batch_size} must be a multiple of the {self.shards} train shards of {data}")
        self.owned = [k for k in range(self.shards) if k % world == rank]
        self.dataset = SequenceDataset(data, "train", shards=self.owned)
        self._offsets = np.concatenate([[0], np.cumsum(self.dataset.shard_sizes)[:-1]]).astype(np.int64)

    def rows(self, step: int) -> np.ndarray:
        if self.shards == 1:
            rows = batch_indices(len(self.dataset), self.batch_size, self.seed, step)
            return rows if self.distributed is None else rows[self.distributed.rank :: self.distributed.world]
        per_shard = self.batch_size // self.shards
        parts = [
            offset + batch_indices(size, per_shard, self.seed * 1_000_003 + shard, step)
            for shard, size, offset in zip(self.owned, self.dataset.shard_sizes, self._offsets)
            if size
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def batch(self, step: int) -> SequenceBatch:
        return self.dataset.__getitems__(self.rows(step))

    def items_present(self) -> torch.Tensor:
        """Item ids anywhere in the whole training split, whichever shards this rank reads."""
        return self._summed(self.dataset.items_present().long()) > 0

    def target_item_counts(self) -> torch.Tensor:
        """How often each item id is a target in the whole training split."""
        return self._summed(self.dataset.target_item_counts())

    def _summed(self, local: torch.Tensor) -> torch.Tensor:
        if self.shards == 1 or self.distributed is None:
            return local
        total = local.clone()
        torch.distributed.all_reduce(total)
        return total
