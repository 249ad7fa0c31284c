"""Timestamp parsing: units, ISO-8601 offsets, naive strings, garbage (property-based), values
beyond int64; plausibility bounds given as YAML dates."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_rotorec
from rotorec.features.schema import LogSchema
from rotorec.features.timestamps import NO_OFFSET, TimestampParser, detect_unit

PLAUSIBLE = st.integers(min_value=631_152_000, max_value=4_102_444_799)  # 1990 .. 2099
OFFSETS = st.integers(min_value=-840, max_value=840)


@given(PLAUSIBLE, st.sampled_from(["s", "ms", "us", "ns"]), st.integers(0, 999))
def test_every_unit_is_detected_and_floored_to_the_same_second(second: int, unit: str, extra: int) -> None:
    scale = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    value = second * scale + (extra % scale)
    parser = TimestampParser()
    parsed = parser.parse(pa.array([value], pa.int64()))
    assert parser.resolved_unit == unit
    assert parsed.seconds.tolist() == [second] and parsed.valid.all()


@given(st.lists(PLAUSIBLE, min_size=1, max_size=20))
def test_text_integers_and_native_integers_agree(seconds: list[int]) -> None:
    native = TimestampParser().parse(pa.array(seconds, pa.int64()))
    text = TimestampParser().parse(pa.array([f" {s} " for s in seconds]))
    assert np.array_equal(native.seconds, text.seconds) and text.valid.all()


@given(PLAUSIBLE, OFFSETS, st.booleans())
def test_iso_with_offset_gives_the_instant_and_remembers_the_offset(second: int, offset: int, colon: bool) -> None:
    zone = dt.timezone(dt.timedelta(minutes=offset))
    text = dt.datetime.fromtimestamp(second, zone).isoformat()
    if not colon and offset != 0:
        text = text[:-3] + text[-2:]
    parsed = TimestampParser().parse(pa.array([text]))
    assert parsed.valid.all()
    assert parsed.seconds[0] == second
    assert parsed.offset_minutes[0] == offset


@given(PLAUSIBLE)
def test_zulu_suffix_means_utc(second: int) -> None:
    text = dt.datetime.fromtimestamp(second, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    parsed = TimestampParser().parse(pa.array([text]))
    assert parsed.seconds[0] == second and parsed.offset_minutes[0] == 0


@given(PLAUSIBLE, OFFSETS)
def test_naive_strings_are_read_in_the_fixed_default_offset(second: int, offset: int) -> None:
    wall = dt.datetime.fromtimestamp(second, dt.timezone(dt.timedelta(minutes=offset))).replace(tzinfo=None)
    parsed = TimestampParser(naive_offset_minutes=offset).parse(pa.array([wall.isoformat()]))
    assert parsed.seconds[0] == second
    assert parsed.offset_minutes[0] == NO_OFFSET  # not explicit: local time falls back to the default zone


@settings(max_examples=200)
@given(
    st.datetimes(min_value=dt.datetime(1995, 1, 1), max_value=dt.datetime(2090, 1, 1)),
    st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney"]),
)
def test_naive_strings_in_an_iana_zone_follow_daylight_saving(wall: dt.datetime, zone: str) -> None:
    wall = wall.replace(microsecond=0)
    reference = wall.replace(tzinfo=ZoneInfo(zone), fold=0)
    # Walls inside a spring-forward gap do not exist; the parser shifts them forward instead.
    roundtrip = reference.astimezone(dt.timezone.utc).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    if roundtrip != wall:
        return
    ambiguous = wall.replace(tzinfo=ZoneInfo(zone), fold=1).utcoffset() != reference.utcoffset()
    parsed = TimestampParser(naive_offset_minutes=None, naive_zone=zone).parse(pa.array([wall.isoformat()]))
    expected = wall.replace(tzinfo=ZoneInfo(zone), fold=1 if ambiguous else 0)  # ambiguous -> standard time
    assert parsed.seconds[0] == int(expected.timestamp())


def test_fractional_float_seconds_floor_and_nan_inf_are_invalid() -> None:
    parsed = TimestampParser().parse(pa.array([1_700_000_000.9, float("nan"), float("inf"), None]))
    assert parsed.seconds[0] == 1_700_000_000
    assert parsed.valid.tolist() == [True, False, False, False]
    assert parsed.present.tolist() == [True, True, True, False]


def test_garbage_text_is_present_but_invalid() -> None:
    parsed = TimestampParser().parse(pa.array(["abc", "NaN", "2024-13-45T99:00:00Z", None]))
    assert parsed.present.tolist() == [True, True, True, False]
    assert not parsed.valid.any()


def test_unit_is_fixed_after_the_first_batch() -> None:
    parser = TimestampParser()
    parser.parse(pa.array([1_700_000_000_000]))  # milliseconds
    later = parser.parse(pa.array([1_700_000_000]))  # read as ms too: 1970, implausible downstream
    assert parser.resolved_unit == "ms" and later.seconds[0] == 1_700_000


def test_arrow_timestamp_columns_keep_their_unit() -> None:
    column = pa.array([dt.datetime(2024, 3, 1, 12, 0, 0, 999000, tzinfo=dt.timezone.utc)], pa.timestamp("ms", tz="UTC"))
    parsed = TimestampParser().parse(column)
    assert parsed.seconds[0] == int(dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc).timestamp())
    assert parsed.offset_minutes[0] == 0


def test_detect_unit_thresholds() -> None:
    assert [detect_unit(np.array([v])) for v in (1.7e9, 1.7e12, 1.7e15, 1.7e18)] == ["s", "ms", "us", "ns"]


def test_zone_aware_arrow_timestamps_carry_their_zones_offset_per_instant() -> None:
    winter, summer = (dt.datetime(2024, month, 15, 12, tzinfo=dt.timezone.utc) for month in (1, 7))
    placeholder = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)  # quarantined later as implausible
    for zone, offsets in (
        ("Europe/Berlin", [60, 120, 60]),
        ("America/New_York", [-300, -240, -300]),
        ("+05:30", [330] * 3),
        ("+0530", [330] * 3),
        ("UTC", [0] * 3),
        ("Nowhere/City", [NO_OFFSET] * 3),
    ):  # unknown: the default zone applies later
        parsed = TimestampParser().parse(pa.array([winter, summer, placeholder, None], pa.timestamp("ms", tz=zone)))
        assert parsed.seconds[:3].tolist() == [int(t.timestamp()) for t in (winter, summer, placeholder)]
        assert parsed.offset_minutes.tolist() == [*offsets, NO_OFFSET], zone


def test_blank_text_is_a_missing_timestamp_like_an_empty_csv_cell() -> None:
    parsed = TimestampParser().parse(pa.array(["", "   ", "1700000000", None, "abc"]))
    assert parsed.present.tolist() == [False, False, True, False, True]
    assert parsed.valid.tolist() == [False, False, True, False, False]


def test_zone_offsets_fall_back_to_pandas_where_arrow_lacks_the_zone_database(monkeypatch) -> None:
    def no_database(column):
        raise pa.ArrowInvalid("Cannot locate or parse timezone")

    monkeypatch.setattr(pc, "local_timestamp", no_database)  # as on an image without /usr/share/zoneinfo
    instants = [
        dt.datetime(2024, 1, 15, 12, tzinfo=dt.timezone.utc),
        dt.datetime(2024, 7, 15, 12, tzinfo=dt.timezone.utc),
        dt.datetime(9999, 12, 31, tzinfo=dt.timezone.utc),
    ]
    berlin = TimestampParser().parse(pa.array([*instants, None], pa.timestamp("s", tz="Europe/Berlin")))
    assert berlin.offset_minutes.tolist() == [60, 120, NO_OFFSET, NO_OFFSET]  # 9999: beyond pandas, implausible anyway
    unknown = TimestampParser().parse(pa.array(instants, pa.timestamp("s", tz="Nowhere/City")))
    assert unknown.offset_minutes.tolist() == [NO_OFFSET] * 3


def test_basic_format_offsets_apply_once_and_words_are_not_times() -> None:
    parsed = TimestampParser(naive_offset_minutes=330).parse(
        pa.array(["20240603T083000+0200", "2024-06-03T08+02:00", "20240603T083000Z", "now", "Today"])
    )
    assert parsed.seconds[:3].tolist() == [1_717_396_200, 1_717_394_400, 1_717_403_400]
    assert parsed.offset_minutes[:3].tolist() == [120, 120, 0]
    assert parsed.valid.tolist() == [True, True, True, False, False]


@pytest.mark.slow
def test_timestamps_beyond_int64_are_invalid_rows_not_a_crash(tmp_path: Path) -> None:
    text = TimestampParser().parse(
        pa.array(["99999999999999999999999", "9223372036854775808", "+1700000000", " 00000000000000000001700000001 ", "-1700000002"])
    )
    assert text.valid.tolist() == [False, False, True, True, True] and text.present.all()
    assert text.seconds[2:].tolist() == [1_700_000_000, 1_700_000_001, -1_700_000_002]
    unsigned = TimestampParser().parse(pa.array([2**64 - 1, 1_700_000_000, None], pa.uint64()))
    assert unsigned.valid.tolist() == [False, True, False] and unsigned.present.tolist() == [True, True, False]
    (tmp_path / "log.csv").write_text(
        "user_id,item_id,timestamp,click\nu,a,99999999999999999999999,1\nu,b,1700000000,0\nu,c,1700000100,1\n"
    )
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"), "--no-progress")
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    kept = pq.read_table(tmp_path / "o" / "quarantine.parquet").to_pylist()
    assert stats["quarantined"] == 1 and [(row["reason"], row["timestamp"]) for row in kept] == [
        ("bad_timestamp", "99999999999999999999999")
    ]


def test_unquoted_yaml_dates_are_accepted_as_bounds(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("timestamp_min: 2015-01-01\ntimestamp_max: 2030-01-01T00:00:00\n")
    schema = LogSchema.from_yaml(tmp_path / "s.yaml")
    assert schema.timestamp_min == 1_420_070_400 and schema.timestamp_max == 1_893_456_000
