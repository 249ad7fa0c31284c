"""Cutting each user's target range into model-sized windows.

A window is a contiguous slice of a user's ordered events, at most `max_len` long, whose tail
holds the events to predict (the `target` mask) and whose head, if any, is earlier context.
`recent` keeps one window per user ending at the last target (the most recent `max_len`
events); `all` tiles the whole target range from the newest end so every target is predicted
exactly once, the oldest window topped up with earlier context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rotorec.features.splits import Ranges

WindowMode = Literal["recent", "all"]


@dataclass(frozen=True)
class Windows:
    """Windows in global event indices: events [start, start + length), targets from `target_from`."""

    user: np.ndarray
    start: np.ndarray
    length: np.ndarray
    target_from: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def flat_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(global event index per slot, list offsets, target flag per slot), all vectorised."""
        offsets = np.concatenate([[0], np.cumsum(self.length, dtype=np.int64)])
        total = int(offsets[-1])
        within = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], self.length)
        index = np.repeat(self.start, self.length) + within
        target = within >= np.repeat(self.target_from, self.length)
        return index, offsets, target


def plan_windows(user_starts: np.ndarray, ranges: Ranges, max_len: int, mode: WindowMode) -> Windows:
    if max_len < 1:
        raise ValueError("max_len must be at least 1")
    users = np.flatnonzero(ranges.end > ranges.start)
    first, last = ranges.start[users], ranges.end[users]
    if mode == "recent":
        chunks = np.ones(len(users), dtype=np.int64)
    elif mode == "all":
        chunks = -(-(last - first) // max_len)
    else:
        raise ValueError(f"unknown window mode {mode!r}")
    owner = np.repeat(np.arange(len(users)), chunks)
    # Chunk j counted from the newest end; emit oldest first so windows read chronologically.
    offsets = np.concatenate([[0], np.cumsum(chunks)])
    from_newest = (offsets[owner + 1] - 1) - np.arange(len(owner))
    end = last[owner] - from_newest * max_len
    start = np.maximum(0, end - max_len)
    target_from = np.maximum(first[owner], start) - start
    base = user_starts[users][owner]
    return Windows(user=users[owner], start=base + start, length=end - start, target_from=target_from)
