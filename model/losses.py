"""Training objectives: masked per-task BCE, and softmax losses for next-item retrieval.

The next-item objective is a softmax over the catalogue. Where the catalogue fits (tens of
thousands of items: a [rows, V] logit block per step) the softmax runs over every item, which is
what lets a model order popular items against each other. For catalogues too large for that, a
sampled softmax draws a pool of negatives per step from a proposal distribution Q (uniform, or
item popularity to the power α) and subtracts log(m·Q(j)) from every logit (log-Q correction,
Bengio & Senécal 2008; Yi et al., RecSys 2019), so the sampled loss estimates the full one
instead of over-penalising popular items.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rotorec.features.vocab import RESERVED
from rotorec.model.config import NextItemConfig
from rotorec.model.repeats import RepeatOffsets

FIRST_ITEM_ID = RESERVED
"""Ids 0 and 1 are PAD and OOV: never a target of the softmax, never a negative."""


def task_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE over (position, task) entries that are known and selected; also per task.

    logits/labels/label_mask [B, S, T]; weight bool [B, S] (targets of this split, not padding)."""
    selected = (label_mask & weight.unsqueeze(-1)).to(logits.dtype)
    losses = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none") * selected
    per_task = losses.sum(dim=(0, 1)) / selected.sum(dim=(0, 1)).clamp(min=1)
    return losses.sum() / selected.sum().clamp(min=1), per_task


class NegativeSampler:
    """The proposal Q over catalogue ids (≥ FIRST_ITEM_ID) for sampled softmax, with log Q.

    `counts` [V] are training-target counts per item id; popularity sampling uses (count + 1)^α so
    that unseen items keep a small chance (and a finite log Q)."""

    def __init__(self, counts: torch.Tensor, config: NextItemConfig) -> None:
        weights = torch.zeros(len(counts), dtype=torch.float64)
        if config.negatives == "popularity":
            weights[FIRST_ITEM_ID:] = (counts[FIRST_ITEM_ID:].double() + 1.0) ** config.popularity_alpha
        else:
            weights[FIRST_ITEM_ID:] = 1.0
        self.probabilities = (weights / weights.sum()).float()
        self.log_probabilities = torch.log(self.probabilities.clamp(min=1e-30))
        self.config = config

    def to(self, device: torch.device) -> NegativeSampler:
        self.probabilities = self.probabilities.to(device)
        self.log_probabilities = self.log_probabilities.to(device)
        return self

    def draw(self, generator: torch.Generator | None) -> torch.Tensor:
        return torch.multinomial(self.probabilities, self.config.num_negatives, replacement=True, generator=generator)


def full_softmax_loss(logits: torch.Tensor, positive_items: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the whole catalogue; logits [N, V - FIRST_ITEM_ID] score ids ≥ 2."""
    return F.cross_entropy(logits.float(), positive_items - FIRST_ITEM_ID)


def sampled_softmax_loss(
    query: torch.Tensor,
    positive_items: torch.Tensor,
    item_table: torch.Tensor,
    config: NextItemConfig,
    scale: float,
    sampler: NegativeSampler | None = None,
    generator: torch.Generator | None = None,
    repeats: RepeatOffsets | None = None,
) -> torch.Tensor:
    """Softmax of the true next item against sampled negatives.

    query [N, d] and item_table [V, d] are already in the model's similarity space (normalised for
    cosine); `scale` multiplies every logit (1/τ for cosine, 1 for dot). Pool negatives
    (uniform/popularity) are shared by the batch, so each row sees `num_negatives` of them for one
    [N, m] matmul; in-batch negatives are the other rows' positives. A negative equal to the row's
    positive is masked out. With `log_q_correction`, log(m·Q(j)) is subtracted from the positive's
    and every negative's logit (in-batch: Q is the batch's own positive frequency). `repeats` adds
    the repeat gate's offset to the positive and every negative its row's history holds."""
    positives = item_table[positive_items]
    positive_logit = (query * positives).sum(-1, keepdim=True) * scale
    if config.negatives == "in_batch":
        negative_ids = positive_items
        log_q = torch.log(torch.bincount(positive_items, minlength=item_table.shape[0]).float()[negative_ids] / len(positive_items))
        pool = len(positive_items)
    else:
        if sampler is None:
            raise ValueError(f"{config.negatives} negatives need a NegativeSampler")
        negative_ids = sampler.draw(generator)
        log_q = sampler.log_probabilities[negative_ids]
        pool = config.num_negatives
    negative_logits = query @ item_table[negative_ids].T * scale
    if config.log_q_correction:
        correction = log_q + math.log(pool)
        negative_logits = negative_logits - correction.unsqueeze(0)
        if config.negatives == "in_batch":
            positive_logit = positive_logit - correction.unsqueeze(1)
        else:
            positive_logit = positive_logit - (sampler.log_probabilities[positive_items] + math.log(pool)).unsqueeze(1)
    if repeats is not None:
        positive_logit = positive_logit + repeats.over(positive_items.unsqueeze(1))
        negative_logits = negative_logits + repeats.over(negative_ids)
    clash = negative_ids.unsqueeze(0) == positive_items.unsqueeze(1)
    logits = torch.cat([positive_logit, negative_logits.masked_fill(clash, float("-inf"))], dim=1)
    return F.cross_entropy(logits.float(), torch.zeros(len(query), dtype=torch.long, device=query.device))
