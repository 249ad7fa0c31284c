"""The generative ranker: a pre-norm causal Transformer over a user's events.

Tokens are events: item embedding plus categorical embeddings (the content). What the user did
(the action) enters only attention values, so the prediction at position p sees item p's
content, p's time, and everything before p, never p's own labels. One logit per task per
position; an optional next-item head scores the catalogue for generative retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rotorec.model.config import ModelConfig
from rotorec.model.context import MixerContext
from rotorec.model.encodings import build_encoding
from rotorec.model.inputs import TimeInputs
from rotorec.model.cold_items import ColdItems
from rotorec.model.item_age import ItemAge
from rotorec.model.mixers import Mixer, build_mixer


@dataclass
class History:
    """A finished history, encoded once: per layer the keys/values candidates attend to."""

    layers: list  # per layer, what its mixer's attend_history reads
    valid: torch.Tensor  # bool [B, L]
    hidden: torch.Tensor  # [B, L, d] final hidden states (for the next-item query)


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.ffn_multiplier * config.d_model
        self.net = nn.Sequential(nn.Linear(config.d_model, width), nn.GELU(), nn.Linear(width, config.d_model), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """One pre-norm layer: the mixer's residual, then the feed-forward's."""

    def __init__(self, config: ModelConfig, mixer: str) -> None:
        super().__init__()
        self.mixer_norm = nn.LayerNorm(config.d_model)
        self.mixer: Mixer = build_mixer(mixer, config)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)

    def forward(self, hidden: torch.Tensor, action: torch.Tensor, context: MixerContext, cache=None) -> tuple[torch.Tensor, object]:
        """A sequence through the layer; also what later queries of this history read."""
        mixed, cache = self.mixer(self.mixer_norm(hidden), action, context, cache)
        hidden = hidden + mixed
        return hidden + self.ffn(self.ffn_norm(hidden)), cache

    def attend_history(self, hidden: torch.Tensor, context: MixerContext, cache, history_valid: torch.Tensor) -> torch.Tensor:
        """Candidates through the layer: each reads the history's cache and itself only."""
        hidden = hidden + self.mixer.attend_history(self.mixer_norm(hidden), context, cache, history_valid)
        return hidden + self.ffn(self.ffn_norm(hidden))


class Ranker(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.item_embedding = nn.Embedding(config.item_vocab_size, d, padding_idx=0)
        self.categorical_embeddings = nn.ModuleDict(
            {name: nn.Embedding(field.vocab_size, d, padding_idx=0) for name, field in config.categorical.items()}
        )
        self.item_age = ItemAge(config.item_vocab_size, d) if config.item_age else None
        cold = config.item_dropout > 0 or config.oov_untrained_items
        self.cold_items = ColdItems(config.item_vocab_size, config.item_dropout, config.oov_untrained_items) if cold else None
        self.position_embedding = nn.Embedding(config.max_seq_len + 1, d) if config.positions == "learned" else None
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.encoding = build_encoding(config)
        self.blocks = nn.ModuleList(Block(config, kind) for kind in config.mixers)
        self.final_norm = nn.LayerNorm(d)
        self.task_head = nn.Linear(d, len(config.tasks)) if config.tasks else None
        head = config.next_item
        self.next_item_query = nn.Linear(d, d) if head is not None and head.query_projection else None
        self.repeat_gate = nn.Linear(d, 1) if head is not None and head.repeat_bias else None
        nn.init.normal_(self.item_embedding.weight, std=d**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        if self.repeat_gate is not None:  # starts as no preference for or against repeats
            nn.init.zeros_(self.repeat_gate.weight)
            nn.init.zeros_(self.repeat_gate.bias)

    # -- shared pieces -------------------------------------------------------------------------

    def embed(self, item: torch.Tensor, categorical: dict[str, torch.Tensor], time: TimeInputs) -> torch.Tensor:
        """Content of events or candidates: item + mean of each categorical field's values (+ the
        item's age), ×√d with `embedding_scale` so content outweighs the position at unit-variance
        init, plus the slot's learned position (slots past max_seq_len share the last row)."""
        identity = item if self.cold_items is None else self.cold_items(item)
        tokens = self.item_embedding(identity)
        for name, table in self.categorical_embeddings.items():
            ids = categorical[name]
            present = (ids > 0).unsqueeze(-1).to(tokens.dtype)
            tokens = tokens + (table(ids) * present).sum(-2) / present.sum(-2).clamp(min=1)
        if self.item_age is not None:
            tokens = tokens + self.item_age(item, time)
        if self.config.embedding_scale:
            tokens = tokens * self.config.d_model**0.5
        if self.position_embedding is not None:
            tokens = tokens + self.position_embedding(time.slot.clamp(max=self.config.max_seq_len))
        return self.embedding_dropout(tokens)

    def context(self, time: TimeInputs, valid: torch.Tensor) -> MixerContext:
        """Angles once per forward, shared by every layer's mixer."""
        angles = self.encoding.angles(time)
        if angles is None:
            return MixerContext(time=time, valid=valid, cos=None, sin=None)
        return MixerContext(time=time, valid=valid, cos=torch.cos(angles).unsqueeze(1), sin=torch.sin(angles).unsqueeze(1))

    # -- sequences (training, history encoding) ------------------------------------------------

    @property
    def streams(self) -> bool:
        """True when every layer is recurrent, so a history can be continued from its caches."""
        return all(kind != "attention" for kind in self.config.mixers)

    def encode(self, item, categorical, action, time: TimeInputs, valid: torch.Tensor, caches: list | None = None) -> History:
        """Causal pass over event sequences [B, S]; returns hidden states and per-layer caches.

        With `caches` (recurrent models only) the events continue a history already read: their
        slots (time.slot) count on from the events the caches hold."""
        if caches is not None and not self.streams:
            raise ValueError("only models whose every layer is recurrent can continue from caches")
        context = self.context(time, valid)
        hidden = self.embed(item, categorical, time)
        layers = []
        for index, block in enumerate(self.blocks):
            hidden, cache = block(hidden, action, context, None if caches is None else caches[index])
            layers.append(cache)
        return History(layers=layers, valid=valid, hidden=self.final_norm(hidden))

    def forward(self, item, categorical, action, time: TimeInputs, valid: torch.Tensor):
        """The training entry point (what DistributedDataParallel wraps): hidden states, task
        logits, next-item queries and repeat offsets at every position (None for absent heads)."""
        hidden = self.encode(item, categorical, action, time, valid).hidden
        logits = self.task_head(hidden) if self.task_head is not None else None
        queries = self.next_item_embeddings(hidden) if self.has_next_item else None
        return hidden, logits, queries, self.repeat_offsets(hidden)

    def task_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.task_head is None:
            raise ValueError("this model has no task heads")
        return self.task_head(hidden)

    # -- candidates (serving) -------------------------------------------------------------------

    def candidate_hidden(self, history: History, item, categorical, time: TimeInputs) -> torch.Tensor:
        """Final hidden states of candidates [B, C]: each reads the history and itself only."""
        context = self.context(time, torch.ones_like(item, dtype=torch.bool))
        hidden = self.embed(item, categorical, time)
        for block, layer_cache in zip(self.blocks, history.layers):
            hidden = block.attend_history(hidden, context, layer_cache, history.valid)
        return self.final_norm(hidden)

    # -- next-item retrieval --------------------------------------------------------------------

    @property
    def has_next_item(self) -> bool:
        return self.config.next_item is not None

    @property
    def next_item_scale(self) -> float:
        """What multiplies query · item to give a softmax logit: 1/τ for cosine, 1 for dot."""
        head = self.config.next_item
        return 1.0 / head.temperature if head is not None and head.similarity == "cosine" else 1.0

    def next_item_embeddings(self, hidden: torch.Tensor) -> torch.Tensor:
        """Queries in the similarity space of `catalogue_embeddings` (unit length for cosine)."""
        if not self.has_next_item:
            raise ValueError("this model has no next-item head")
        query = self.next_item_query(hidden) if self.next_item_query is not None else hidden
        return F.normalize(query, dim=-1) if self.config.next_item.similarity == "cosine" else query

    def repeat_offsets(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """The logit added to items already in a query's history ([...] per hidden state), or None
        without the repeat gate (model/repeats.py)."""
        return None if self.repeat_gate is None else self.repeat_gate(hidden).squeeze(-1)

    def catalogue_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Output item embeddings, tied to the input table (all ids when `items` is None)."""
        weight = self.item_embedding.weight if items is None else self.item_embedding(items)
        cosine = self.config.next_item is not None and self.config.next_item.similarity == "cosine"
        return F.normalize(weight, dim=-1) if cosine else weight
