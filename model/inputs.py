"""Model inputs from prepared batches (training) and from raw event fields (serving).

Local-time features are computed by the features stage's own function, so training data and
serving requests get hour-of-day and day-of-week from the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from rotorec.features.dataset import SequenceBatch
from rotorec.features.localtime import cyclic_features

if TYPE_CHECKING:
    from rotorec.model.ranker import History, Ranker


@dataclass
class TimeInputs:
    """What the encodings read per token ([B, S] unless noted). Times stay int64 seconds."""

    slot: torch.Tensor  # int64 event slot k (model.inputs.event_slots; candidates: after the history)
    seconds: torch.Tensor  # int64 UTC seconds
    has_time: torch.Tensor  # bool
    second_of_day: torch.Tensor  # int64, local
    day_of_week: torch.Tensor  # int64, local, Monday = 0
    categorical: dict[str, torch.Tensor]  # int64 [B, S, max_values]


def event_slots(impression: torch.Tensor | None, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Each event's slot [B, S]: its position, except that the events of one impression (a run
    of equal non-zero ids) all take the position of the run's first event.

    A slate is shown at once: at serving time its candidates see the history before it and
    never each other. Giving them one slot keeps training the same computation: an event reads
    only keys in earlier slots (so never a slate-mate's action) and its ordinal angle is the
    slate's, as a serving candidate's is the history length."""
    size, length = shape
    position = torch.arange(length, device=device).expand(size, length)
    if impression is None:
        return position
    run_start = torch.ones_like(impression, dtype=torch.bool)
    run_start[:, 1:] = (impression[:, 1:] != impression[:, :-1]) | (impression[:, 1:] == 0)
    return torch.where(run_start, position, torch.zeros_like(position)).cummax(dim=1).values


def batch_time(batch: SequenceBatch) -> TimeInputs:
    """Per-event time inputs of a training batch; the index is the event's slot in the window."""
    index = event_slots(batch.impression, batch.item.shape, batch.item.device)
    return TimeInputs(
        slot=index,
        seconds=batch.timestamp,
        has_time=batch.has_time,
        second_of_day=batch.second_of_day,
        day_of_week=batch.day_of_week,
        categorical=batch.categorical,
    )


def encode_batch(model: Ranker, batch: SequenceBatch) -> History:
    """The ranker's causal pass over a prepared batch: the one place a SequenceBatch becomes
    model inputs (training's forward goes through `batch_inputs` for DDP's sake)."""
    return model.encode(*batch_inputs(batch))


def batch_inputs(batch: SequenceBatch) -> tuple:
    """(item, categorical, action, time, valid): what `Ranker.encode` and `Ranker.forward` take."""
    return batch.item, batch.categorical, batch.action, batch_time(batch), batch.valid


def local_time(seconds: torch.Tensor, tz_offset_minutes: torch.Tensor, has_time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(second of day, day of week) in local time, via features.localtime on the CPU."""
    second_of_day, day_of_week = cyclic_features(
        seconds.cpu().numpy().astype(np.int64), tz_offset_minutes.cpu().numpy().astype(np.int16), has_time.cpu().numpy()
    )
    device = seconds.device
    return torch.from_numpy(second_of_day.astype(np.int64)).to(device), torch.from_numpy(day_of_week.astype(np.int64)).to(device)


@dataclass
class Events:
    """Padded events [B, L] as the scorer reads them (ids are vocabulary ids)."""

    item: torch.Tensor
    categorical: dict[str, torch.Tensor]  # [B, L, max_values]
    valid: torch.Tensor  # bool
    action: torch.Tensor | None = None  # history only
    timestamp: torch.Tensor | None = None  # history only (candidates take the request time)
    has_time: torch.Tensor | None = None
    tz_offset_minutes: torch.Tensor | None = None
    impression: torch.Tensor | None = None  # history only; 0 = none (see event_slots)

    def time(self, first_slot: torch.Tensor | None = None) -> TimeInputs:
        """History time inputs; slots as in training so history keys match (event_slots),
        counted from `first_slot` [B] when these events continue a cached history."""
        index = event_slots(self.impression, self.item.shape, self.item.device)
        if first_slot is not None:
            index = index + first_slot.unsqueeze(1)
        second_of_day, day_of_week = local_time(self.timestamp, self.tz_offset_minutes, self.has_time)
        return TimeInputs(
            slot=index,
            seconds=self.timestamp,
            has_time=self.has_time,
            second_of_day=second_of_day,
            day_of_week=day_of_week,
            categorical=self.categorical,
        )
