"""Repeat awareness for next-item retrieval: how likely the next item is one the user already has.

A dot-product query sits close to the embeddings of the items it was built from, so without help
the model ranks the user's own history near the top. Whether that is right depends on the data:
on Amazon reviews or MovieLens ratings a user almost never repeats an item, in a music or news
feed repeats are common. The repeat gate (`next_item.repeat_bias`) learns it from training
targets: one logit offset per query, a linear function of the query's hidden state, added to
every catalogue item present in that query's history — RepeatNet's repeat-or-explore decision
(Ren et al., AAAI 2019) reduced to a single learned gate. The evaluation protocol is unchanged:
nothing is filtered, the model's own scores decide (docs/evaluation.md).

A query at (window w, position p) reads the events of window w at positions ≤ p; its history is
their valid item ids ≥ FIRST_ITEM_ID. Catalogue columns index item ids from FIRST_ITEM_ID.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rotorec.features.vocab import RESERVED as FIRST_ITEM_ID


def query_histories(item: torch.Tensor, valid: torch.Tensor, window: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """[N, S] item ids of each query's history, -1 where a slot is after the query, padding or OOV."""
    history = item[window]
    slots = torch.arange(item.shape[1], device=item.device)
    held = (slots[None, :] <= position[:, None]) & valid[window] & (history >= FIRST_ITEM_ID)
    return torch.where(held, history, torch.full_like(history, -1))


def history_columns(histories: torch.Tensor, catalogue_size: int) -> torch.Tensor:
    """bool [N, catalogue_size]: which catalogue columns each query's history holds (dense, for a
    softmax over the whole catalogue)."""
    seen = torch.zeros(len(histories), catalogue_size + 1, dtype=torch.bool, device=histories.device)
    columns = torch.where(histories >= 0, histories - FIRST_ITEM_ID, catalogue_size)  # absent slots → a spare column
    seen.scatter_(1, columns, True)
    return seen[:, :catalogue_size]


def history_contains(histories: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """bool [N, K]: whether each query's history holds each of `items` ([N, K] ids, or [K] shared by
    every query). Memory O(N·(S + K)) however large the catalogue (sampled softmax over millions of
    items): per-row items are found by binary search in each sorted history; shared items are
    deduplicated once and each history slot looked up among them."""
    if items.dim() == 2:
        ordered = histories.sort(dim=1).values
        at = torch.searchsorted(ordered, items).clamp(max=ordered.shape[1] - 1)
        return ordered.gather(1, at) == items
    distinct, inverse = items.unique(return_inverse=True)
    at = torch.searchsorted(distinct, histories).clamp(max=len(distinct) - 1)
    found = distinct[at] == histories
    held = torch.zeros(len(histories), len(distinct) + 1, dtype=torch.bool, device=histories.device)
    held.scatter_(1, torch.where(found, at, len(distinct)), True)  # misses land in a spare column
    return held[:, inverse]


@dataclass
class RepeatOffsets:
    """The repeat gate's output for N queries: what to add to the logit of each item their
    histories hold."""

    offset: torch.Tensor  # [N] logits
    histories: torch.Tensor  # [N, S] from query_histories

    @classmethod
    def at(cls, offsets: torch.Tensor, item: torch.Tensor, valid: torch.Tensor, rows: torch.Tensor) -> RepeatOffsets:
        """For the queries at `rows` (bool [B, S - 1], position p reading events ≤ p); offsets [B, S]."""
        window, position = rows.nonzero(as_tuple=True)
        return cls(offset=offsets[:, :-1][rows], histories=query_histories(item, valid, window, position))

    def add_to_catalogue(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` [N, catalogue] (column = id − FIRST_ITEM_ID) with each held item's raised by its
        row's offset: one scatter of O(N·S) values, each item once however often it was read."""
        ordered = self.histories.sort(dim=1).values
        first = torch.ones_like(ordered, dtype=torch.bool)
        first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        keep = first & (ordered >= 0)
        columns = torch.where(keep, ordered - FIRST_ITEM_ID, 0)  # the rest add 0 to column 0
        return logits.scatter_add(1, columns, self.offset.unsqueeze(1).to(logits.dtype) * keep.to(logits.dtype))

    def over(self, items: torch.Tensor) -> torch.Tensor:
        """[N, K] additive logits for `items` ([N, K], or [K] shared by every query)."""
        return self.offset.unsqueeze(1) * history_contains(self.histories, items).to(self.offset.dtype)
