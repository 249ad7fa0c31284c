"""Training objectives: masked per-task BCE, and sampled softmax for next-item retrieval."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.config import NextItemConfig


def task_loss(logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE over (position, task) entries that are known and selected; also per task.

    logits/labels/label_mask [B, S, T]; weight bool [B, S] (targets of this split, not padding)."""
    selected = (label_mask & weight.unsqueeze(-1)).to(logits.dtype)
    losses = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none") * selected
    per_task = losses.sum(dim=(0, 1)) / selected.sum(dim=(0, 1)).clamp(min=1)
    return losses.sum() / selected.sum().clamp(min=1), per_task


def sampled_softmax_loss(
    query: torch.Tensor, positive_items: torch.Tensor, item_table: torch.Tensor, config: NextItemConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Softmax of the true next item against sampled negatives, on cosine similarity / τ.

    query [N, d] and item_table [V, d] are L2-normalised; ids 0 and 1 (PAD, OOV) are never
    sampled. Uniform negatives are shared by the batch; in-batch negatives are the other
    queries' positives. A negative equal to the positive is masked out."""
    positives = item_table[positive_items]
    positive_logit = (query * positives).sum(-1, keepdim=True)
    if config.negatives == "uniform":
        negatives = torch.randint(2, item_table.shape[0], (config.num_negatives,), device=query.device, generator=generator)
        negative_logits = query @ item_table[negatives].T
        clash = negatives.unsqueeze(0) == positive_items.unsqueeze(1)
    else:
        negative_logits = query @ positives.T
        clash = positive_items.unsqueeze(0) == positive_items.unsqueeze(1)
    negative_logits = negative_logits.masked_fill(clash, float("-inf"))
    logits = torch.cat([positive_logit, negative_logits], dim=1) / config.temperature
    return F.cross_entropy(logits.float(), torch.zeros(len(query), dtype=torch.long, device=query.device))
