"""Local time and cyclic features against Python's datetime/zoneinfo as the reference."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rotorec.features.localtime import SECONDS_PER_WEEK, cyclic_features, resolve_offsets, zone_offsets_minutes
from rotorec.features.timestamps import NO_OFFSET

SECONDS = st.integers(min_value=631_152_000, max_value=4_102_444_799)
OFFSETS = st.integers(min_value=-840, max_value=840)


@given(st.lists(st.tuples(SECONDS, OFFSETS), min_size=1, max_size=30))
def test_cyclic_features_match_datetime(pairs: list[tuple[int, int]]) -> None:
    seconds = np.array([s for s, _ in pairs], dtype=np.int64)
    offsets = np.array([o for _, o in pairs], dtype=np.int16)
    second_of_day, day_of_week = cyclic_features(seconds, offsets, np.ones(len(pairs), bool))
    for k, (s, o) in enumerate(pairs):
        local = dt.datetime.fromtimestamp(s, dt.timezone(dt.timedelta(minutes=o)))
        assert second_of_day[k] == local.hour * 3600 + local.minute * 60 + local.second
        assert day_of_week[k] == local.weekday()


@given(SECONDS, OFFSETS, st.integers(min_value=-500, max_value=500))
def test_whole_week_shifts_leave_cyclic_features_unchanged(second: int, offset: int, weeks: int) -> None:
    base = cyclic_features(np.array([second]), np.array([offset], np.int16), np.array([True]))
    shifted = cyclic_features(np.array([second + weeks * SECONDS_PER_WEEK]), np.array([offset], np.int16), np.array([True]))
    assert base[0][0] == shifted[0][0] and base[1][0] == shifted[1][0]


@given(
    st.lists(SECONDS, min_size=1, max_size=40), st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata"])
)
def test_iana_offsets_follow_daylight_saving(seconds: list[int], zone: str) -> None:
    got = zone_offsets_minutes(np.array(seconds, dtype=np.int64), zone)
    expected = [dt.datetime.fromtimestamp(s, ZoneInfo(zone)).utcoffset() // dt.timedelta(minutes=1) for s in seconds]
    assert got.tolist() == expected


def test_dst_switch_moves_the_local_hour() -> None:
    # Europe/Berlin switched to summer time at 2024-03-31 01:00 UTC: 00:30 UTC is 01:30 local,
    # 01:30 UTC is 03:30 local.
    seconds = np.array([1711845000, 1711848600], dtype=np.int64)
    offsets = resolve_offsets(seconds, np.ones(2, bool), np.full(2, NO_OFFSET, np.int16), None, "Europe/Berlin")
    second_of_day, _ = cyclic_features(seconds, offsets, np.ones(2, bool))
    assert offsets.tolist() == [60, 120]
    assert (second_of_day // 3600).tolist() == [1, 3]


def test_explicit_offsets_win_over_the_default_zone() -> None:
    seconds = np.array([1_700_000_000, 1_700_000_000], dtype=np.int64)
    offsets = resolve_offsets(seconds, np.ones(2, bool), np.array([330, NO_OFFSET], np.int16), -300, None)
    assert offsets.tolist() == [330, -300]


def test_events_without_time_get_zero_features() -> None:
    second_of_day, day_of_week = cyclic_features(np.array([1_700_000_123]), np.array([0], np.int16), np.array([False]))
    assert second_of_day[0] == 0 and day_of_week[0] == 0
