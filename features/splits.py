"""Train/valid/test protocols without leakage, as per-event phases over user-ordered events.

Every event gets a phase: CONTEXT (may be read as history, never predicted), TRAIN, VALID or
TEST. Phases never decrease along a user's time-ordered sequence, so each phase is a contiguous
range per user. A split's example for a user predicts that split's range and may read only the
events before it. Hence a valid/test target never appears in a training input, and a test
history holds the validation events (they happened earlier) but never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rotorec.features.localtime import SECONDS_PER_DAY

CONTEXT, TRAIN, VALID, TEST = 0, 1, 2, 3
SPLITS = {"train": TRAIN, "valid": VALID, "test": TEST}


@dataclass(frozen=True)
class Ranges:
    """Per-user [start, end) ranges (relative to the user's first event) for one phase."""

    start: np.ndarray
    end: np.ndarray


def leave_last_out_phases(user_starts: np.ndarray, user_lengths: np.ndarray, holdout: int = 1) -> np.ndarray:
    """Last `holdout` events -> TEST, the `holdout` before -> VALID, the rest -> TRAIN.

    Users with fewer than 2·holdout + 1 events only train (docs/evaluation_details.md, "Leave-last-out split")."""
    total = int(user_lengths.sum())
    position = np.arange(total) - np.repeat(user_starts, user_lengths)
    from_end = np.repeat(user_lengths, user_lengths) - position
    eligible = np.repeat(user_lengths >= 2 * holdout + 1, user_lengths)
    phase = np.full(total, TRAIN, dtype=np.int8)
    phase[eligible & (from_end <= holdout)] = TEST
    phase[eligible & (from_end > holdout) & (from_end <= 2 * holdout)] = VALID
    return phase


@dataclass(frozen=True)
class TemporalCutoffs:
    valid_start: int
    test_start: int

    @classmethod
    def last_days(cls, latest_second: int, valid_days: int = 1, test_days: int = 1) -> TemporalCutoffs:
        """Test = the last `test_days` UTC calendar days of the log, valid = the days before."""
        last_day = latest_second // SECONDS_PER_DAY
        test_start = (last_day - test_days + 1) * SECONDS_PER_DAY
        return cls(valid_start=test_start - valid_days * SECONDS_PER_DAY, test_start=test_start)


def impression_start_seconds(seconds: np.ndarray, impression: np.ndarray) -> np.ndarray:
    """Each event's time, or for an impression's events (a run of equal non-zero ids in the
    ordered log) the time of the run's first event, so that a temporal cutoff never splits a
    slate: its candidates are scored together at serving time and must land in one split."""
    if len(seconds) == 0:
        return seconds
    run_start = np.ones(len(seconds), dtype=bool)
    run_start[1:] = (impression[1:] != impression[:-1]) | (impression[1:] == 0)
    first = np.maximum.accumulate(np.where(run_start, np.arange(len(seconds)), 0))
    return seconds[first]


def temporal_phases(seconds: np.ndarray, has_time: np.ndarray, cutoffs: TemporalCutoffs) -> np.ndarray:
    """Phase by event time (see impression_start_seconds); events without a timestamp are
    history only (CONTEXT)."""
    phase = np.full(len(seconds), TRAIN, dtype=np.int8)
    phase[seconds >= cutoffs.valid_start] = VALID
    phase[seconds >= cutoffs.test_start] = TEST
    phase[~has_time] = CONTEXT
    return phase


def phase_ranges(phase: np.ndarray, user_starts: np.ndarray, user_lengths: np.ndarray, wanted: int) -> Ranges:
    """Each user's [start, end) of `wanted`, relying on phases being sorted within users."""
    drops = np.flatnonzero(np.diff(phase.astype(np.int16)) < 0) + 1
    if not np.all(np.isin(drops, user_starts)):  # a phase may fall only where the next user starts
        raise ValueError("phases must not decrease within a user's ordered events")
    before = _per_user_sum(phase < wanted, user_starts, user_lengths)
    inside = _per_user_sum(phase == wanted, user_starts, user_lengths)
    return Ranges(start=before, end=before + inside)


def _per_user_sum(flags: np.ndarray, user_starts: np.ndarray, user_lengths: np.ndarray) -> np.ndarray:
    if len(flags) == 0:
        return np.zeros(len(user_starts), dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return cumulative[user_starts + user_lengths] - cumulative[user_starts]
