"""Full-catalogue next-item retrieval (docs/evaluation.md): rank every item, no top-k cut.

The query for a target event t is read at the event before t, so the request time is that event's
time (`query_time=last_event`: the model is not told when the held-out event happened, exactly
like a time-blind baseline); every catalogue item (all vocabulary ids but PAD and OOV) is scored,
and the target's rank counts ties against it, so a constant scorer earns nothing.

Anything that scores the catalogue — the ranker, or a baseline (training.baselines,
benchmarks/baselines) — is a `NextItemScorer` and goes through the same `next_item_ranks`, so a
baseline's number and the model's are computed by one function.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from rotorec.features.dataset import SequenceBatch, SequenceDataset
from rotorec.model.inputs import encode_batch
from rotorec.model.losses import FIRST_ITEM_ID
from rotorec.model.ranker import Ranker
from rotorec.model.repeats import RepeatOffsets, history_columns, query_histories
from rotorec.training.metrics import next_item_metrics


class NextItemScorer(Protocol):
    """Scores the whole catalogue for next-item queries."""

    def next_item_scores(self, batch: SequenceBatch, rows: torch.Tensor) -> torch.Tensor:
        """[N, V - FIRST_ITEM_ID] scores of item ids ≥ 2 for the N queries at `rows` (bool [B, T - 1]):
        the query at position p predicts the item at p + 1 from events ≤ p."""


class RankerScorer:
    """The ranker as a NextItemScorer: its next-item query at p against the tied item table."""

    def __init__(self, model: Ranker) -> None:
        self.model = model
        self.catalogue = model.catalogue_embeddings()[FIRST_ITEM_ID:].float()  # once, not per batch

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def next_item_scores(self, batch: SequenceBatch, rows: torch.Tensor) -> torch.Tensor:
        model = self.model
        hidden = encode_batch(model, batch).hidden
        queries = model.next_item_embeddings(hidden[:, :-1][rows]).float()
        scores = queries @ self.catalogue.T
        offsets = model.repeat_offsets(hidden)
        if offsets is None:
            return scores
        if model.next_item_scale != 1.0:  # the offset is in logit units, as in training: 1/τ first for cosine
            scores.mul_(model.next_item_scale)
        return RepeatOffsets.at(offsets.float(), batch.item, batch.valid, rows).add_to_catalogue(scores)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 + #{items scored above the target} + #{other items tied with it}, per row of scores [N, V'];
    targets index the columns. A target outside the catalogue (OOV, index < 0) ranks last."""
    known = targets >= 0
    target_scores = scores[torch.arange(len(targets), device=scores.device), targets.clamp(min=0)]
    at_least = (scores >= target_scores[:, None]).sum(1)
    return torch.where(known, at_least, torch.full_like(at_least, scores.shape[1]))


@torch.inference_mode()
def next_item_ranks(
    scorer: Ranker | NextItemScorer, dataset: SequenceDataset, batch_size: int = 256, exclude_seen: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each target item, its user) over the split's targets that have a previous event."""
    if isinstance(scorer, Ranker):
        scorer.eval()
        scorer = RankerScorer(scorer)
    device = getattr(scorer, "device", torch.device("cpu"))
    ranks, users = [], []
    for batch in dataset.in_order(batch_size, device):
        rows = batch.target[:, 1:] & batch.valid[:, 1:]
        if not rows.any():
            continue
        scores = scorer.next_item_scores(batch, rows).float()
        targets = batch.item[:, 1:][rows] - FIRST_ITEM_ID
        if exclude_seen:  # drop items already in the query's history (HSTU's protocol), never the target
            window, position = rows.nonzero(as_tuple=True)
            seen = history_columns(query_histories(batch.item, batch.valid, window, position), scores.shape[1])
            seen[torch.arange(len(targets)), targets.clamp(min=0)] = False
            scores = scores.masked_fill(seen, float("-inf"))
        ranks.append(target_ranks(scores, targets).cpu().numpy())
        owner = rows.nonzero(as_tuple=True)[0].cpu().numpy()
        users.append(np.asarray(batch.users, dtype=object)[owner])
    join = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)  # noqa: E731
    return join(ranks, np.int64), join(users, object)


def retrieval_report(scorer: Ranker | NextItemScorer, dataset: SequenceDataset, exclude_seen: bool = False) -> dict:
    ranks, users = next_item_ranks(scorer, dataset, exclude_seen=exclude_seen)
    report = next_item_metrics(ranks)
    report.update(
        catalogue_size=dataset.schema.item_vocab_size - FIRST_ITEM_ID, exclude="seen" if exclude_seen else "none", query_time="last_event"
    )
    report["per_query"] = ranks
    report["users"] = users
    return report
