"""Prepared sequences as a `torch.utils.data.Dataset` that yields padded batch tensors.

The split file's list columns are held as flat NumPy arrays plus offsets, and a batch is
gathered with one fancy-index per column (`__getitems__`, which DataLoader calls with a whole
batch of indices), so batching costs no per-sample Python. Sequences are right-padded; `valid`
marks real events and `target` the events this split predicts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from rotorec.features.artifacts import FeatureSchema, split_files
from rotorec.features.events import MISSING_LABEL


@dataclass
class SequenceBatch:
    """A padded batch; every tensor is [B, T] unless noted."""

    item: torch.Tensor  # int64 item ids (0 = PAD, 1 = OOV)
    categorical: dict[str, torch.Tensor]  # int64 [B, T, max_values]
    labels: torch.Tensor  # float32 [B, T, tasks], 0 where unknown
    label_mask: torch.Tensor  # bool [B, T, tasks]
    probabilities: torch.Tensor  # float64 [B, T, tasks with a true probability] (synthetic data)
    action: torch.Tensor  # int64 action ids (positive-label pattern of the event)
    timestamp: torch.Tensor  # int64 UTC seconds
    has_time: torch.Tensor  # bool
    tz_offset_minutes: torch.Tensor  # int64
    second_of_day: torch.Tensor  # int64, local
    day_of_week: torch.Tensor  # int64, local, Monday = 0
    impression: torch.Tensor  # int64, 0 = none
    row: torch.Tensor  # int64 input row ordinal (provenance)
    target: torch.Tensor  # bool: predicted in this split
    valid: torch.Tensor  # bool: a real event (not padding); the model's name for it too
    lengths: torch.Tensor  # int64 [B]
    users: list[str]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SequenceBatch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=non_blocking)
            elif isinstance(value, dict):
                value = {k: v.to(device, non_blocking=non_blocking) for k, v in value.items()}
            moved[f.name] = value
        return SequenceBatch(**moved)


class SequenceDataset(Dataset):
    """One split of a prepared folder, or some of its shards (windows in shard order); `len` =
    number of windows. Only the files of the chosen shards are read."""

    def __init__(self, folder: str | Path, split: str = "train", shards: Sequence[int] | None = None) -> None:
        self.folder = Path(folder)
        self.schema = FeatureSchema.load(self.folder)
        files = split_files(self.folder, split)
        chosen = [files[k] for k in shards] if shards is not None else files
        tables = [pq.read_table(path) for path in chosen]
        self.shard_sizes = [table.num_rows for table in tables]
        table = pa.concat_tables(tables)
        self.users = np.asarray(table.column("user").to_numpy(zero_copy_only=False), dtype=object)
        lengths = table.column("length").to_numpy().astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.lengths = lengths
        self.values: dict[str, np.ndarray] = {}
        for name in table.column_names:
            if name in ("user", "length"):
                continue
            flat = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            if name.startswith("cat_"):  # stored flattened: max_values per event
                flat = flat.reshape(-1, self.schema.categorical[name[4:]].max_values)
            self.values[name] = flat

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> SequenceBatch:
        return self.__getitems__([index])

    def in_order(self, batch_size: int, device: torch.device | str = "cpu") -> Iterator[SequenceBatch]:
        """Every window once, in file order, on `device`: the evaluation passes' iteration."""
        for start in range(0, len(self), batch_size):
            yield self.__getitems__(np.arange(start, min(start + batch_size, len(self)))).to(device)

    def __getitems__(self, indices: list[int] | np.ndarray, pad_to: int | None = None) -> SequenceBatch:
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[indices]
        width = int(pad_to if pad_to is not None else (lengths.max() if len(lengths) else 0))
        if len(lengths) and lengths.max() > width:
            raise ValueError(f"pad_to={pad_to} is shorter than a sequence of length {lengths.max()}")
        slots = np.arange(width)
        real = slots[None, :] < lengths[:, None]
        gather = np.where(real, self.starts[indices][:, None] + slots[None, :], 0)

        def take(name: str, fill: int | float = 0) -> np.ndarray:
            values = self.values[name][gather]
            values[~real] = fill
            return values

        tasks, probs = self.schema.tasks, self.schema.probabilities
        raw_labels = (
            np.stack([take(f"label_{t}", MISSING_LABEL) for t in tasks], axis=-1) if tasks else np.zeros((*gather.shape, 0), np.int8)
        )
        probabilities = np.stack([take(f"prob_{t}", np.nan) for t in probs], axis=-1) if probs else np.zeros((*gather.shape, 0))
        as_long = lambda name: torch.from_numpy(take(name).astype(np.int64))  # noqa: E731
        return SequenceBatch(
            item=as_long("item"),
            categorical={name: as_long(f"cat_{name}") for name in self.schema.categorical},
            labels=torch.from_numpy((raw_labels == 1).astype(np.float32)),
            label_mask=torch.from_numpy(raw_labels != MISSING_LABEL),
            probabilities=torch.from_numpy(probabilities.astype(np.float64)),
            action=as_long("action"),
            timestamp=as_long("timestamp"),
            has_time=torch.from_numpy(take("has_time").astype(bool)),
            tz_offset_minutes=as_long("tz_offset_minutes"),
            second_of_day=as_long("second_of_day"),
            day_of_week=as_long("day_of_week"),
            impression=as_long("impression"),
            row=as_long("row"),
            target=torch.from_numpy(take("target").astype(bool)),
            valid=torch.from_numpy(real),
            lengths=torch.from_numpy(lengths),
            users=self.users[indices].tolist(),
        )

    def target_item_counts(self) -> torch.Tensor:
        """[item vocabulary size] how often each item id is a target of this split: the popularity
        that negative sampling and the popularity baseline read (training targets only, so held-out
        events never leak into it)."""
        chosen = self.values["item"][self.values["target"].astype(bool)]
        size = self.schema.item_vocab_size
        return torch.from_numpy(np.bincount(chosen, minlength=size)[:size].astype(np.int64))

    def items_present(self) -> torch.Tensor:
        """[item vocabulary size] bool: the item ids that occur in this split at all, as history or target."""
        size = self.schema.item_vocab_size
        return torch.from_numpy(np.bincount(self.values["item"], minlength=size)[:size] > 0)

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False) -> DataLoader:
        """A DataLoader whose batches are SequenceBatch objects (gathered in one step each)."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            self, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last, collate_fn=_already_batched
        )


def _already_batched(batch: SequenceBatch) -> SequenceBatch:
    return batch
