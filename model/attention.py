"""Causal attention in which an event's own outcome never reaches its own prediction.

Each query p attends to two kinds of keys: every event j in an earlier slot (slot_j < slot_p;
the slot is the position, shared by the events of one impression, see model.inputs.event_slots),
whose value carries the event's content *and* its action embedding (what the user did), and p
itself, whose value carries content only. This is one SDPA call over the concatenated key sets with a boolean
mask, so every query has at least one key (itself) and no row is ever fully masked.

A serving candidate is the same kind of query: its keys are the whole history plus itself and
never the other candidates (target-aware masking as in HSTU's M-FALCON, arXiv 2402.17152), so
training-time predictions and serving scores are the same computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.context import MixerContext
from model.rotary import rotate_pairs


def label_safe_attention(
    query: torch.Tensor,
    history_keys: torch.Tensor,
    history_values: torch.Tensor,
    self_keys: torch.Tensor,
    self_values: torch.Tensor,
    history_mask: torch.Tensor,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """query/self_* [B, H, Q, d_k]; history_* [B, H, K, d_k]; history_mask bool [B, 1, Q, K]."""
    n_queries = query.shape[-2]
    own = torch.eye(n_queries, dtype=torch.bool, device=query.device).expand(*history_mask.shape[:-1], n_queries)
    keys = torch.cat([history_keys, self_keys], dim=-2)
    values = torch.cat([history_values, self_values], dim=-2)
    mask = torch.cat([history_mask, own], dim=-1)
    return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, dropout_p=dropout_p)


def attend_history_and_self(query: torch.Tensor, history_keys: torch.Tensor, history_values: torch.Tensor,
                            self_keys: torch.Tensor, self_values: torch.Tensor, history_valid: torch.Tensor) -> torch.Tensor:
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

    def forward(self, z: torch.Tensor, action: torch.Tensor, context: MixerContext
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Causal pass over a sequence; also returns (keys, values) that later queries read."""
        query, key, value = self.project(z, context)
        history_values = value + self._split_heads(self.action_values(action))
        earlier = context.slot[:, None, :] < context.slot[:, :, None]
        history_mask = (earlier & context.valid[:, None, :]).unsqueeze(1)
        attended = label_safe_attention(query, key, history_values, key, value, history_mask,
                                        self.dropout if self.training else 0.0)
        return self.merge(attended), (key, history_values)

    def attend_history(self, z: torch.Tensor, context: MixerContext, history: tuple[torch.Tensor, torch.Tensor],
                       history_valid: torch.Tensor) -> torch.Tensor:
        """Queries that read a finished history and themselves only (serving candidates)."""
        query, key, value = self.project(z, context)
        return self.merge(attend_history_and_self(query, history[0], history[1], key, value, history_valid))
