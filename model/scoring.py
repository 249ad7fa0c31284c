"""Scoring candidates for serving: the history is encoded once, candidates go in micro-batches.

Each candidate attends to the history and to itself, never to other candidates, so its score
does not depend on which candidates share its request or its micro-batch; 1,000 candidates
cost one history pass plus 1,000 single-token queries, not 1,000 forward passes.
"""

from __future__ import annotations

import torch

from rotorec.model.inputs import TimeInputs
from rotorec.model.inputs import Events, local_time
from rotorec.model.ranker import History, Ranker

DEFAULT_MICRO_BATCH = 256


def cached_events(caches: list | None) -> torch.Tensor | None:
    """How many events a history's caches already hold, [B] (None without caches)."""
    return None if caches is None else caches[0].count


def encode_history(model: Ranker, history: Events, caches: list | None = None) -> History:
    """Encode history events, continuing from per-layer caches (recurrent models) if given."""
    time = history.time(cached_events(caches))
    return model.encode(history.item, history.categorical, history.action, time, history.valid, caches)


def candidate_time(
    history: Events, candidates: Events, request_time: torch.Tensor, tz_offset_minutes: torch.Tensor, first_slot: torch.Tensor | None = None
) -> TimeInputs:
    """Candidates share the request time (user's zone) and the slot after the newest event,
    which is after every history slot, so they read the whole history and not each other."""
    size, count = candidates.item.shape
    seconds = request_time.view(size, 1).expand(size, count)
    has_time = torch.ones_like(seconds, dtype=torch.bool)
    offsets = tz_offset_minutes.view(size, 1).expand(size, count)
    second_of_day, day_of_week = local_time(seconds, offsets, has_time)
    next_slot = history.valid.sum(dim=1, keepdim=True)
    if first_slot is not None:
        next_slot = next_slot + first_slot.unsqueeze(1)
    next_slot = next_slot.expand(size, count)
    return TimeInputs(
        slot=next_slot,
        seconds=seconds,
        has_time=has_time,
        second_of_day=second_of_day,
        day_of_week=day_of_week,
        categorical=candidates.categorical,
    )


@torch.inference_mode()
def candidate_logits(
    model: Ranker,
    history: Events,
    candidates: Events,
    request_time: torch.Tensor,
    tz_offset_minutes: torch.Tensor,
    micro_batch: int = DEFAULT_MICRO_BATCH,
    caches: list | None = None,
) -> tuple[torch.Tensor, History]:
    """Uncalibrated task logits [B, C, T] of each candidate (what post-hoc calibration reads),
    and the encoded history (its per-layer caches continue it, for recurrent models).

    With `caches`, `history` holds only the events after those the caches have read."""
    encoded = encode_history(model, history, caches)
    time = candidate_time(history, candidates, request_time, tz_offset_minutes, cached_events(caches))
    pieces = []
    for start in range(0, candidates.item.shape[1], micro_batch):
        part = slice(start, start + micro_batch)
        piece_time = TimeInputs(
            slot=time.slot[:, part],
            seconds=time.seconds[:, part],
            has_time=time.has_time[:, part],
            second_of_day=time.second_of_day[:, part],
            day_of_week=time.day_of_week[:, part],
            categorical={k: v[:, part] for k, v in time.categorical.items()},
        )
        hidden = model.candidate_hidden(
            encoded, candidates.item[:, part], {k: v[:, part] for k, v in candidates.categorical.items()}, piece_time
        )
        pieces.append(model.task_logits(hidden))
    return torch.cat(pieces, dim=1), encoded
