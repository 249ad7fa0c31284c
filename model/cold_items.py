"""Cold items: reading an item whose embedding was never trained as the OOV item, and teaching
the OOV item what an unknown item is worth.

The vocabulary covers every split, so an item that first appears in the test period has an id
but a random, never-updated embedding: noise in every score it gets. Where most candidates are
such items (news: each day's stories are new), that noise swamps the signal. `oov_untrained_items`
maps items absent from the training split to OOV (a buffer saved with the weights, so serving
maps the same ones), and `item_dropout` replaces a fraction of item ids by OOV during training,
so OOV's embedding, and the rest of the model, learn to score an item by what else is known of
it (its categories, its age) when its identity says nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from rotorec.features.vocab import OOV, RESERVED


class ColdItems(nn.Module):
    def __init__(self, item_vocab_size: int, dropout: float, untrained_as_oov: bool) -> None:
        super().__init__()
        self.dropout = dropout
        self.untrained_as_oov = untrained_as_oov
        if untrained_as_oov:
            self.register_buffer("trained", torch.ones(item_vocab_size, dtype=torch.bool))

    def set_trained(self, trained: torch.Tensor) -> None:
        """Which item ids occur in the training split (their embeddings receive gradients)."""
        if self.untrained_as_oov:
            self.trained.copy_(trained.to(torch.bool))

    def forward(self, item: torch.Tensor) -> torch.Tensor:
        real = item >= RESERVED
        cold = torch.zeros_like(real)
        if self.untrained_as_oov:
            cold = real & ~self.trained[item]
        if self.training and self.dropout > 0:
            cold = cold | (real & (torch.rand(item.shape, device=item.device) < self.dropout))
        return torch.where(cold, torch.full_like(item, OOV), item)
