"""Ordering, truncation, windows and split leakage, checked on random logs through `prepare`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotorec.features.adapters.events import events_source
from rotorec.features.prepare import PrepareOptions, prepare
from rotorec.features.schema import LogSchema
from rotorec.features.splits import (
    TEST,
    TRAIN,
    VALID,
    Ranges,
    TemporalCutoffs,
    impression_start_seconds,
    leave_last_out_phases,
    temporal_phases,
)
from rotorec.features.windows import plan_windows

DAY = 86_400
BASE = 1_704_067_200  # 2024-01-01 00:00 UTC

event_lists = st.lists(
    st.tuples(
        st.integers(0, 5),  # user
        st.integers(0, 30),  # item
        st.one_of(st.none(), st.integers(0, 9)),  # time slot (None: no timestamp); few slots -> many ties
        st.integers(0, 1),  # click
    ),
    min_size=1,
    max_size=120,
)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write_log(folder: Path, events: list[tuple], impressions: bool) -> None:
    table = pa.table(
        {
            "user_id": pa.array([f"u{u}" for u, _, _, _ in events]),
            "item_id": pa.array([f"i{i}" for _, i, _, _ in events]),
            "timestamp": pa.array([None if t is None else BASE + t * DAY // 3 for _, _, t, _ in events], pa.int64()),
            "impression_id": pa.array([f"{u}-{t}" if t is not None else None for u, _, t, _ in events]),
            "click": pa.array([c for *_, c in events], pa.int8()),
            "seq": pa.array(np.arange(len(events))),  # makes every row distinct: no duplicates here
        }
    )
    if not impressions:
        table = table.drop_columns(["impression_id"])
    pq.write_table(table, folder / "events.parquet")


def _prepare(folder: Path, events: list[tuple], impressions: bool, **options) -> dict:
    _write_log(folder, events, impressions)
    schema = LogSchema(
        impression_id="impression_id" if impressions else None, labels={"click": {}}, categorical={"seq": {"level": "event"}}
    )
    return prepare(events_source(folder / "events.parquet", schema), folder / "out", PrepareOptions(progress=False, **options))


def _windows(folder: Path, split: str) -> list[dict]:
    return pq.read_table(folder / "out" / f"{split}.parquet").to_pylist()


def _expected_order(events: list[tuple]) -> dict[str, list[int]]:
    """Reference order per user: untimed first in file order, then by (time, file order)."""
    per_user: dict[str, list[int]] = {}
    for row in sorted(range(len(events)), key=lambda r: (events[r][2] is not None, events[r][2] or 0, r)):
        per_user.setdefault(f"u{events[row][0]}", []).append(row)
    return per_user


@SETTINGS
@given(events=event_lists, max_len=st.integers(1, 12))
def test_loo_order_truncation_and_no_leakage(tmp_path_factory, events: list[tuple], max_len: int) -> None:
    folder = tmp_path_factory.mktemp("loo")
    _prepare(folder, events, impressions=False, max_len=max_len, windows="recent")
    order = _expected_order(events)
    train, valid, test = (_windows(folder, s) for s in ("train", "valid", "test"))
    held_out = set()
    for user, rows in order.items():
        if len(rows) >= 3:
            held_out |= {rows[-1], rows[-2]}
    for window in train:
        rows = order[window["user"]]
        assert window["row"] == rows[: len(rows) - (2 if len(rows) >= 3 else 0)][-max_len:]  # newest max_len, in order
        assert not held_out & set(window["row"])  # no valid/test event is a training input
    for window in valid:
        rows = order[window["user"]]
        assert window["row"] == rows[:-1][-max_len:] and window["target"] == [False] * (len(window["row"]) - 1) + [True]
        assert rows[-1] not in window["row"]  # the test target is not a validation input
    for window in test:
        rows = order[window["user"]]
        assert window["row"] == rows[-max_len:] and window["target"][-1] and sum(window["target"]) == 1


@SETTINGS
@given(events=event_lists, max_len=st.integers(1, 12))
def test_temporal_split_windows_cover_targets_once_without_future_inputs(tmp_path_factory, events: list[tuple], max_len: int) -> None:
    if all(t is None for _, _, t, _ in events):
        return
    folder = tmp_path_factory.mktemp("temporal")
    stats = _prepare(folder, events, impressions=True, max_len=max_len, windows="all")
    valid_start, test_start = stats["split"]["valid_start"], stats["split"]["test_start"]
    time_of = {r: (None if t is None else BASE + t * DAY // 3) for r, (_, _, t, _) in enumerate(events)}
    seen_targets: list[int] = []
    for split, (low, high) in {"train": (None, valid_start), "valid": (valid_start, test_start), "test": (test_start, None)}.items():
        for window in _windows(folder, split):
            assert 1 <= len(window["row"]) <= max_len
            for row, is_target in zip(window["row"], window["target"]):
                t = time_of[row]
                if high is not None and t is not None:
                    assert t < high, "an input or target from the future of this split"
                if is_target:
                    assert t is not None and (low is None or t >= low)
                    seen_targets.append(row)
            flags = window["target"]
            assert flags == sorted(flags), "context comes before targets"
    timed = [r for r, t in time_of.items() if t is not None]
    assert sorted(seen_targets) == sorted(timed)  # every timed event predicted exactly once


def test_windows_all_tiles_from_the_newest_end() -> None:
    windows = plan_windows(np.array([100]), Ranges(start=np.array([2]), end=np.array([9])), max_len=3, mode="all")
    assert windows.start.tolist() == [100, 103, 106] and windows.length.tolist() == [3, 3, 3]
    assert windows.target_from.tolist() == [2, 0, 0]  # the oldest window: events 0-1 are context


def test_leave_last_out_holdout_and_short_users() -> None:
    phase = leave_last_out_phases(np.array([0, 4]), np.array([4, 2]), holdout=1)
    assert phase.tolist() == [1, 1, 2, 3, TRAIN, TRAIN]


def test_time_and_cyclic_columns(tmp_path: Path) -> None:
    events = [(0, 1, 0, 0), (0, 2, 3, 1), (0, 3, None, 0), (0, 4, 6, 0)]
    _prepare(tmp_path, events, impressions=False, max_len=10)
    window = _windows(tmp_path, "test")[0]
    assert window["row"] == [2, 0, 1, 3]
    assert window["has_time"] == [False, True, True, True]
    assert window["day_of_week"][1:] == [0, 1, 2]  # 2024-01-01 was a Monday


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3), st.one_of(st.none(), st.integers(-3, 5)), st.integers(0, 4)), min_size=1, max_size=80))
def test_impressions_are_numbered_per_user_and_key(tmp_path_factory, events: list[tuple]) -> None:
    """Same (user, impression id) -> same number, even when the impression's events are not adjacent."""
    folder = tmp_path_factory.mktemp("impressions")
    table = pa.table(
        {
            "user_id": [f"u{u}" for u, _, _ in events],
            "item_id": [f"i{k}" for k in range(len(events))],
            "timestamp": pa.array([BASE + t * 60 for *_, t in events], pa.int64()),
            "impression_id": pa.array([i for _, i, _ in events], pa.int64()),
        }
    )
    pq.write_table(table, folder / "events.parquet")
    prepare(
        events_source(folder / "events.parquet", LogSchema(impression_id="impression_id")),
        folder / "out",
        PrepareOptions(progress=False, split="loo", max_len=200, windows="all"),
    )
    number_of: dict[tuple, int] = {}
    for split in ("train", "valid", "test"):
        for window in _windows(folder, split):
            for row, number in zip(window["row"], window["impression"]):
                user, impression, _ = events[row]
                assert (number == 0) == (impression is None)
                if impression is not None:
                    assert number_of.setdefault((user, impression), number) == number
    assert len(set(number_of.values())) == len(number_of)  # different (user, id) -> different numbers


def test_temporal_cutoff_never_splits_an_impression() -> None:
    """A slate whose events straddle the cutoff goes wholly to the split of its first event."""
    seconds = np.array([100, 190, 200, 210, 220, 300])
    impression = np.array([0, 7, 7, 7, 0, 0])
    start = impression_start_seconds(seconds, impression)
    assert start.tolist() == [100, 190, 190, 190, 220, 300]
    phase = temporal_phases(start, np.ones(6, dtype=bool), TemporalCutoffs(valid_start=200, test_start=300))
    assert phase.tolist() == [TRAIN, TRAIN, TRAIN, TRAIN, VALID, TEST]


def test_phase_ranges_refuse_phases_falling_inside_a_user() -> None:
    from rotorec.features.splits import phase_ranges

    starts, lengths = np.array([0, 3]), np.array([3, 3])
    ranges = phase_ranges(np.array([0, 1, 2, 0, 0, 2], dtype=np.int8), starts, lengths, 2)  # falls only where user 2 starts
    np.testing.assert_array_equal(ranges.start, [2, 2])  # within each user's events
    np.testing.assert_array_equal(ranges.end, [3, 3])
    with pytest.raises(ValueError, match="must not decrease"):
        phase_ranges(np.array([0, 2, 1, 0, 1, 2], dtype=np.int8), starts, lengths, 2)
