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

from features.dataset import SequenceBatch, SequenceDataset
from model.losses import FIRST_ITEM_ID
from training.metrics import group_sums


class PopularityScorer:
    """Scores every catalogue item by its training-target count, the same for every query."""

    def __init__(self, train: SequenceDataset) -> None:
        self.scores = train.target_item_counts()[FIRST_ITEM_ID:].float()

    def next_item_scores(self, batch: SequenceBatch, rows: torch.Tensor) -> torch.Tensor:
        return self.scores.to(rows.device).expand(int(rows.sum()), -1)


class CountClickModel:
    """P(label) for an event from counts in the training split: a Beta-smoothed item rate, moved
    toward the user's own rate on the event's first categorical value (per-user × category) when
    the user has history there. Logit = prior logit + item evidence + user-category evidence, each a
    log-odds ratio of smoothed rates against the global rate, so no count means the base rate.

    Everything is counted on training targets only; users and items unseen there fall back."""

    def __init__(self, train: SequenceDataset, task: str, smoothing: float = 20.0) -> None:
        column = train.schema.tasks.index(task)
        labels = train.values[f"label_{task}"]
        chosen = train.values["target"].astype(bool) & (labels >= 0)
        positive = (labels[chosen] == 1).astype(np.float64)
        self.column, self.smoothing = column, smoothing
        self.base_rate = float(np.clip(positive.mean() if len(positive) else 0.5, 1e-4, 1 - 1e-4))
        self.item_rates = self._rates(train.values["item"][chosen], positive)
        self.category = next(iter(train.schema.categorical), None)
        users = np.repeat(train.users, train.lengths)[chosen]
        self.user_category_rates = (self._rates(self._user_category_keys(users, train.values[f"cat_{self.category}"][chosen, 0]),
                                                positive) if self.category else {})

    def _rates(self, keys: np.ndarray, positive: np.ndarray) -> dict:
        unique, inverse = np.unique(keys, return_inverse=True)
        clicks, shown = np.bincount(inverse, positive), np.bincount(inverse).astype(np.float64)
        rates = (clicks + self.smoothing * self.base_rate) / (shown + self.smoothing)
        return dict(zip(unique.tolist(), rates.tolist()))

    @staticmethod
    def _user_category_keys(users: np.ndarray, categories: np.ndarray) -> np.ndarray:
        return np.array([f"{u}\x1f{c}" for u, c in zip(users, categories)], dtype=object)

    def logits(self, dataset: SequenceDataset) -> np.ndarray:
        """Logits for every target event of `dataset`, in the order training.evaluate.predict
        returns them (window by window, then by position)."""
        rows = np.flatnonzero(dataset.values["target"].astype(bool))
        prior = np.log(self.base_rate / (1 - self.base_rate))
        item = np.array([self.item_rates.get(k, self.base_rate) for k in dataset.values["item"][rows].tolist()])
        out = prior + np.log(item / (1 - item)) - prior
        if self.category:
            users = np.repeat(dataset.users, dataset.lengths)[rows]
            keys = self._user_category_keys(users, dataset.values[f"cat_{self.category}"][rows, 0])
            taste = np.array([self.user_category_rates.get(k, self.base_rate) for k in keys.tolist()])
            out = out + np.log(taste / (1 - taste)) - prior
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
