"""The compact in-memory form of validated events.

Each event is a handful of integers (codes, int64 seconds, label bits), about 40-60 bytes,
whatever the raw log looked like; this is all that accumulates while a log streams through.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

MISSING_LABEL = -1
"""Label value for 'not observed': masked out of losses and metrics."""

NO_VALUE = -1
"""Code for 'no value' in categorical columns before vocabulary mapping."""


@dataclass
class EventColumns:
    """Column arrays of equal length; 2-D arrays are [events, labels/values]."""

    user: np.ndarray  # int64 running code
    item: np.ndarray  # int64 running code
    seconds: np.ndarray  # int64 UTC seconds (0 where has_time is False)
    has_time: np.ndarray  # bool
    offset_minutes: np.ndarray  # int16 explicit offset or NO_OFFSET
    row: np.ndarray  # int64 ordinal of the input row across all input files
    impression: np.ndarray  # int64 key: the raw integer id, or a running code for text ids
    has_impression: np.ndarray  # bool
    labels: np.ndarray  # int8 [n, tasks], MISSING_LABEL where unknown
    probabilities: np.ndarray  # float64 [n, tasks with a probability column], NaN if none
    categorical: dict[str, np.ndarray]  # field -> int64 [n, max_values], NO_VALUE padded

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> EventColumns:
        return EventColumns(
            **{
                f.name: (
                    {k: v[index] for k, v in getattr(self, f.name).items()} if f.name == "categorical" else getattr(self, f.name)[index]
                )
                for f in fields(self)
            }
        )

    @classmethod
    def concat(cls, parts: list[EventColumns]) -> EventColumns:
        if not parts:
            raise ValueError("no events to concatenate")
        return cls(
            **{
                f.name: (
                    {k: np.concatenate([p.categorical[k] for p in parts]) for k in parts[0].categorical}
                    if f.name == "categorical"
                    else np.concatenate([getattr(p, f.name) for p in parts])
                )
                for f in fields(cls)
            }
        )
