"""Item age: how long ago the log first showed an item, as a token embedding.

Some catalogues are short-lived: a news story is clicked most in its first hours, and most of a
test day's stories never appeared in training, so an item's own embedding says nothing about it.
Age carries over: a fresh story on the test day is as fresh as one on a training day. The age is
an event's timestamp minus its item's first timestamp anywhere in the log (`first_seen`, written
by `rotorec prepare` into items.parquet), which uses only events at or before the event itself.
Items the run never saw (the OOV id at serving time) are new, age 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rotorec.features.artifacts import NO_FIRST_SEEN
from rotorec.model.inputs import TimeInputs

AGE_BUCKETS = 24  # bucket k ≥ 1: [2^(k−1) − 1, 2^k − 1) minutes old; the last one, about 16 years and more


class ItemAge(nn.Module):
    def __init__(self, item_vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("first_seen", torch.full((item_vocab_size,), NO_FIRST_SEEN, dtype=torch.int64))
        self.table = nn.Embedding(AGE_BUCKETS + 1, d_model, padding_idx=0)
        nn.init.normal_(self.table.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def set_first_seen(self, first_seen: np.ndarray) -> None:
        """The prepared data's per-item first timestamps (NO_FIRST_SEEN where none), saved with the weights."""
        if first_seen.shape != self.first_seen.shape:
            raise ValueError(f"first_seen has {first_seen.shape[0]} items, the model {self.first_seen.shape[0]}")
        self.first_seen.copy_(torch.from_numpy(first_seen.astype(np.int64)))

    def buckets(self, item: torch.Tensor, seconds: torch.Tensor, has_time: torch.Tensor) -> torch.Tensor:
        """0 where there is no time (or padding), else 1 + ⌊log2(1 + minutes since first seen)⌋."""
        first = self.first_seen[item]
        age = torch.where(first == NO_FIRST_SEEN, torch.zeros_like(seconds), seconds - first).clamp(min=0)
        minutes = age.div(60, rounding_mode="floor").to(torch.float32)
        bucket = 1 + torch.floor(torch.log2(minutes + 1)).long().clamp(max=AGE_BUCKETS - 1)
        return torch.where(has_time & (item > 0), bucket, torch.zeros_like(bucket))

    def forward(self, item: torch.Tensor, time: TimeInputs) -> torch.Tensor:
        return self.table(self.buckets(item, time.seconds, time.has_time))
