"""Reference models every report sits beside, scored by the evaluation's own code.

A trained model is only worth serving if it beats what needs no training: for next-item
retrieval the popularity list (most-often-targeted training items first), for impression logs
a count model (smoothed per-item and per-user × category click rates). `rotorec evaluate` puts
them in metrics.json and report.md with the model's lift over them; benchmarks/quality.py puts
them in the ablation tables. Both go through the same functions as the model
(`training.retrieval.next_item_ranks`, `training.evaluate.task_report`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rotorec.features.dataset import SequenceBatch, SequenceDataset
from rotorec.model.losses import FIRST_ITEM_ID
from rotorec.training.metrics import group_sums


class PopularityScorer:
    """Scores every catalogue item by its training-target count, the same for every query."""

    def __init__(self, train: SequenceDataset) -> None:
        self.scores = train.target_item_counts()[FIRST_ITEM_ID:].float()

    def next_item_scores(self, batch: SequenceBatch, rows: torch.Tensor) -> torch.Tensor:
        return self.scores.to(rows.device).expand(int(rows.sum()), -1)


class CountClickModel:
    """P(label) for an event from counts in the training split: a Beta-smoothed item rate, moved
    toward the user's own rate on the event's first categorical value (per-user × category) when
    the user has history there. Logit = item log-odds + (user-category log-odds − base log-odds),
    so no count means the base rate.

    Everything is counted on training targets only; users and items unseen there fall back.
    Keys are integers (item id; user code × category vocabulary + category id), looked up by
    binary search, so fitting and scoring cost array operations, not per-event Python."""

    def __init__(self, train: SequenceDataset, task: str, smoothing: float = 20.0) -> None:
        labels = train.values[f"label_{task}"]
        chosen = np.flatnonzero(train.values["target"].astype(bool) & (labels >= 0))
        positive = (labels[chosen] == 1).astype(np.float64)
        self.smoothing = smoothing
        self.base_rate = float(np.clip(positive.mean() if len(positive) else 0.5, 1e-4, 1 - 1e-4))
        self.users = pd.Index(pd.unique(train.users))
        self.category = next(iter(train.schema.categorical), None)
        self.items = self._rates(train.values["item"][chosen], positive)
        self.tastes = self._rates(self._user_category_keys(train, chosen), positive) if self.category else None

    def _rates(self, keys: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sorted keys, smoothed rate of each); key −1 (an unknown user) is never looked up."""
        unique, inverse = np.unique(keys, return_inverse=True)
        clicks, shown = np.bincount(inverse, positive), np.bincount(inverse).astype(np.float64)
        return unique, (clicks + self.smoothing * self.base_rate) / (shown + self.smoothing)

    def _user_category_keys(self, dataset: SequenceDataset, rows: np.ndarray) -> np.ndarray:
        users = self.users.get_indexer(np.repeat(dataset.users, dataset.lengths)[rows])
        categories = dataset.values[f"cat_{self.category}"][rows, 0].astype(np.int64)
        stride = dataset.schema.categorical[self.category].vocab_size
        return np.where(users >= 0, users.astype(np.int64) * stride + categories, -1)

    def _lookup(self, keys: np.ndarray, table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        known, rates = table
        if not len(known):  # no labelled training target at all
            return np.full(len(keys), self.base_rate)
        at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
        return np.where((keys >= 0) & (known[at] == keys), rates[at], self.base_rate)

    def logits(self, dataset: SequenceDataset) -> np.ndarray:
        """Logits for every target event of `dataset`, in the order training.evaluate.predict
        returns them (window by window, then by position)."""
        rows = np.flatnonzero(dataset.values["target"].astype(bool))
        odds = lambda rate: np.log(rate / (1 - rate))  # noqa: E731
        out = odds(self._lookup(dataset.values["item"][rows].astype(np.int64), self.items))
        if self.tastes is not None:
            out = out + odds(self._lookup(self._user_category_keys(dataset, rows), self.tastes)) - odds(self.base_rate)
        return out


def count_user_sums(train: SequenceDataset, dataset: SequenceDataset, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The count model's per-user sufficient statistics (training.metrics.group_sums) on a split's
    target events with a known label. Users are coded by first appearance in window order, as
    training.evaluate.predict codes them, so these pair unit by unit with a run's statistics."""
    rows = np.flatnonzero(dataset.values["target"].astype(bool))
    labels = dataset.values[f"label_{task}"][rows]
    known = labels >= 0
    users = np.repeat(pd.factorize(dataset.users)[0], dataset.lengths)[rows]
    logits = CountClickModel(train, task).logits(dataset)
    return group_sums(logits[known], (labels[known] == 1).astype(np.float64), users[known])
