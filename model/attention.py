"""Causal attention in which an event's own outcome never reaches its own prediction.

Each query p attends to two kinds of keys: every event j in an earlier slot (slot_j < slot_p;
the slot is the position, shared by the events of one impression, see model.inputs.event_slots),
whose value carries the event's content *and* its action embedding (what the user did), and p
itself, whose value carries content only. Both kinds share one [S, S] score matrix (an event's own
key is its history key), so every query has at least one key (itself) and no row is ever fully masked.

A serving candidate is the same kind of query: its keys are the whole history plus itself and
never the other candidates (target-aware masking as in HSTU's M-FALCON, arXiv 2402.17152), so
training-time predictions and serving scores are the same computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rotorec.model.config import ModelConfig
from rotorec.model.context import MixerContext
from rotorec.model.rotary import rotate_pairs


def label_safe_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    action_values: torch.Tensor,
    earlier: torch.Tensor,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """query/keys/values/action_values [B, H, S, d_k]; earlier bool [B, 1, S, S] marks the keys in
    earlier slots (padding excluded). Query p reads those with their actions (V_j + A_j) and
    itself without (V_p).

    An event's own key is the same vector as its history key, and the history copy is never
    visible to itself (slot_p < slot_p is false), so the key set is one [S, S] matrix with the
    diagonal allowed; the diagonal's weight then multiplies V_p alone, so p's action never enters
    p's output, not even as a rounding error. That is half the scores of attending to
    [history | self] keys side by side (tested equal)."""
    scale = query.shape[-1] ** -0.5
    own = torch.eye(query.shape[-2], dtype=torch.bool, device=query.device)
    scores = (query @ keys.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~(earlier | own), float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    own_weight = weights.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)
    return weights.masked_fill(own, 0.0) @ (values + action_values) + own_weight * values


def attend_history_and_self(
    query: torch.Tensor,
    history_keys: torch.Tensor,
    history_values: torch.Tensor,
    self_keys: torch.Tensor,
    self_values: torch.Tensor,
    history_valid: torch.Tensor,
) -> torch.Tensor:
    """The same attention as `label_safe_attention` for queries that share one history: each
    query's own key is one extra score instead of a masked [Q, Q] block, so C candidates cost
    C × (L + 1) scores, not C × (L + C). query/self_* [B, H, C, d_k]; history_* [B, H, L, d_k]."""
    scale = query.shape[-1] ** -0.5
    history_scores = (query @ history_keys.transpose(-1, -2)) * scale
    history_scores = history_scores.masked_fill(~history_valid[:, None, None, :], float("-inf"))
    own_score = (query * self_keys).sum(-1, keepdim=True) * scale
    weights = torch.softmax(torch.cat([history_scores, own_score], dim=-1).float(), dim=-1).to(query.dtype)
    return weights[..., :-1] @ history_values + weights[..., -1:] * self_values


class LabelSafeAttention(nn.Module):
    """The attention mixer: fills a pre-norm residual slot, z [B, S, d] -> y [B, S, d]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.query_key_value = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.action_values = nn.Embedding(config.action_vocab_size, config.d_model, padding_idx=0)
        self.output = nn.Linear(config.d_model, config.d_model)
        self.output_dropout = nn.Dropout(config.dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def project(self, z: torch.Tensor, context: MixerContext) -> tuple[torch.Tensor, ...]:
        """Rotated queries and keys and content values, each [B, H, S, d_k]."""
        query, key, value = (self._split_heads(t) for t in self.query_key_value(z).chunk(3, dim=-1))
        if context.cos is not None:
            query, key = rotate_pairs(query, context.cos, context.sin), rotate_pairs(key, context.cos, context.sin)
        return query, key, value

    def merge(self, attended: torch.Tensor) -> torch.Tensor:
        batch, heads, length, head_dim = attended.shape
        return self.output_dropout(self.output(attended.transpose(1, 2).reshape(batch, length, heads * head_dim)))

    def forward(
        self, z: torch.Tensor, action: torch.Tensor, context: MixerContext, cache: None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Causal pass over a sequence; also returns (keys, values) that later queries read.
        Attention cannot continue a history from a cache (`cache` must be None): it rereads it."""
        if cache is not None:
            raise ValueError("attention re-reads the whole history; it cannot continue from a cache")
        query, key, value = self.project(z, context)
        action_values = self._split_heads(self.action_values(action))
        earlier = context.slot[:, None, :] < context.slot[:, :, None]
        history_mask = (earlier & context.valid[:, None, :]).unsqueeze(1)
        attended = label_safe_attention(query, key, value, action_values, history_mask, self.dropout if self.training else 0.0)
        return self.merge(attended), (key, value + action_values)

    def attend_history(
        self, z: torch.Tensor, context: MixerContext, history: tuple[torch.Tensor, torch.Tensor], history_valid: torch.Tensor
    ) -> torch.Tensor:
        """Queries that read a finished history and themselves only (serving candidates)."""
        query, key, value = self.project(z, context)
        return self.merge(attend_history_and_self(query, history[0], history[1], key, value, history_valid))
