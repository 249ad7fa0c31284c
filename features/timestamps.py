"""Turning whatever a log calls a timestamp into int64 UTC seconds.

Logs store time as Unix seconds, milliseconds, microseconds or nanoseconds (ints or floats), as
Arrow timestamps, or as ISO-8601 strings with or without an offset. Everything downstream works
on integer seconds only (fp32 Unix seconds have a 128 s step), so this is the one place where
units and formats are resolved. The numeric unit is detected once, from the first values seen,
and then held fixed so that one stray value cannot flip the unit of a whole batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

NO_OFFSET = np.iinfo(np.int16).min
"""Sentinel in offset arrays: this event carries no explicit UTC offset."""

_UNIT_DIVISOR = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_INT64_MAX = np.iinfo(np.int64).max
_PANDAS_SECONDS = 9_000_000_000
"""|seconds| below this (years 1685–2255) fit pandas' nanosecond timestamps."""
_INT64_MAX_TEXT = str(_INT64_MAX)
_INTEGER_TEXT = r"^\s*[+-]?\d+\s*$"
NUMBER_TEXT = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
"""A plain decimal number (so 'NaN', 'inf' and words are not numbers)."""
_ISO_OFFSET = r"[T ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)$"
_NOT_A_TIME = r"(?i)^\s*(now|today|tomorrow|yesterday)\s*$"
"""Words pandas would turn into the wall-clock time of the run: never reproducible, so rejected."""


def detect_unit(magnitudes: np.ndarray) -> str:
    """Pick s/ms/us/ns from the median magnitude of epoch values.

    Present-day instants are ~1.7e9 s, 1.7e12 ms, 1.7e15 us and 1.7e18 ns; the thresholds sit
    between those decades (1e11 s is the year 5138, 1e11 ms is 1973), so any plausible log
    lands unambiguously in one unit.
    """
    median = float(np.median(np.abs(magnitudes)))
    if median < 1e11:
        return "s"
    if median < 1e14:
        return "ms"
    if median < 1e17:
        return "us"
    return "ns"


@dataclass
class ParsedTimes:
    """Per-row outcome of timestamp parsing.

    `present` is False where the cell is null (an event without a timestamp, allowed and
    masked downstream); `valid` is False where a value was given but could not be read (a
    quarantine reason). `offset_minutes` holds ISO-8601 offsets, NO_OFFSET where none was given.
    """

    seconds: np.ndarray
    present: np.ndarray
    valid: np.ndarray
    offset_minutes: np.ndarray


class TimestampParser:
    """Parses timestamp columns batch after batch with one consistently resolved unit."""

    NUMERIC_UNITS: ClassVar[tuple[str, ...]] = ("s", "ms", "us", "ns")

    def __init__(self, unit: str = "auto", naive_offset_minutes: int | None = 0, naive_zone: str | None = None) -> None:
        self.requested_unit = unit
        self.numeric_unit: str | None = unit if unit in self.NUMERIC_UNITS else None
        self.naive_offset_minutes = naive_offset_minutes
        self.naive_zone = naive_zone

    @property
    def resolved_unit(self) -> str:
        """What the log turned out to use, for stats.json."""
        return self.numeric_unit or ("iso" if self.requested_unit in ("iso", "auto") else self.requested_unit)

    def parse(self, column: pa.Array | pa.ChunkedArray) -> ParsedTimes:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        n = len(column)
        present = column.is_valid().to_numpy(zero_copy_only=False)
        seconds = np.zeros(n, dtype=np.int64)
        valid = np.zeros(n, dtype=bool)
        offsets = np.full(n, NO_OFFSET, dtype=np.int16)
        kind = column.type
        if pa.types.is_timestamp(kind):
            raw = column.cast(pa.int64()).fill_null(0).to_numpy()
            seconds = np.floor_divide(raw, _UNIT_DIVISOR[kind.unit])
            valid = present.copy()
            if kind.tz is not None:  # the column's zone is each event's local time, DST included
                offsets = _zone_offsets(column, seconds, present)
        elif pa.types.is_integer(kind):
            # uint64 values above 2^63 − 1 cannot be an instant in any unit: present but invalid.
            fits = present if kind != pa.uint64() else present & mask_of(pc.less_equal(column, pa.scalar(_INT64_MAX, pa.uint64())))
            self._numeric(column.cast(pa.int64(), safe=False).fill_null(0).to_numpy(), fits, seconds, valid)
        elif pa.types.is_floating(kind):
            self._numeric(column.cast(pa.float64()).fill_null(0.0).to_numpy(), present, seconds, valid)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            self._text(column.cast(pa.string()), present, seconds, valid, offsets)
        else:
            # Anything else (lists, structs, binary) cannot be a time: every present value is bad.
            pass
        return ParsedTimes(seconds=seconds, present=present, valid=valid & present, offset_minutes=offsets)

    # -- numeric ----------------------------------------------------------------------------

    def _numeric(self, values: np.ndarray, rows: np.ndarray, seconds: np.ndarray, valid: np.ndarray) -> None:
        """Fill `seconds`/`valid` at `rows` from epoch numbers (ints exactly, floats floored)."""
        selected = values[rows] if rows.dtype == bool else values
        if selected.dtype.kind == "f":
            finite = np.isfinite(selected)
        else:
            finite = np.ones(selected.shape, dtype=bool)
        if self.numeric_unit is None:
            if not finite.any():
                return
            self.numeric_unit = detect_unit(selected[finite].astype(np.float64))
        divisor = _UNIT_DIVISOR[self.numeric_unit]
        if selected.dtype.kind == "f":
            with np.errstate(invalid="ignore", over="ignore"):
                scaled = np.floor(np.where(finite, selected, 0.0) / divisor)
            in_range = finite & (np.abs(scaled) < 2**62)
            converted = np.where(in_range, scaled, 0).astype(np.int64)
            ok = in_range
        else:
            converted = np.floor_divide(selected.astype(np.int64), divisor)
            ok = finite
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows
        seconds[idx] = converted
        valid[idx] = ok

    # -- text --------------------------------------------------------------------------------

    def _text(self, text: pa.Array, present: np.ndarray, seconds: np.ndarray, valid: np.ndarray, offsets: np.ndarray) -> None:
        """Fills `seconds`, `valid` and `offsets` in place, and clears `present` for blank cells."""
        is_integer = mask_of(pc.match_substring_regex(text, _INTEGER_TEXT))
        is_number = mask_of(pc.match_substring_regex(text, NUMBER_TEXT))
        # Integers beyond int64 are numbers (never ISO) that fit no unit: present, never valid.
        usable = is_integer.copy()
        if is_integer.any():
            usable[is_integer] = ~_beyond_int64(text.filter(pa.array(is_integer)))
        numeric_allowed = self.requested_unit != "iso"
        if numeric_allowed and usable.any():
            ints = pc.cast(_without_plus(text.filter(pa.array(usable))), pa.int64()).to_numpy()
            self._numeric(ints, np.flatnonzero(usable), seconds, valid)
        floats_only = is_number & ~is_integer
        if numeric_allowed and floats_only.any():
            floats = pc.cast(pc.utf8_trim_whitespace(text.filter(pa.array(floats_only))), pa.float64()).to_numpy()
            self._numeric(floats, np.flatnonzero(floats_only), seconds, valid)
        iso_rows = present & ~is_number
        if iso_rows.any():
            # A blank cell is a missing timestamp in every format, as an empty CSV cell (read as
            # null) always was. Only non-numbers are looked at, so numeric logs pay nothing.
            candidates = np.flatnonzero(iso_rows)
            blank = candidates[mask_of(pc.match_substring_regex(text.filter(pa.array(iso_rows)), r"^\s*$"))]
            present[blank] = iso_rows[blank] = False
        if iso_rows.any():
            self._iso(text.filter(pa.array(iso_rows)), np.flatnonzero(iso_rows), seconds, valid, offsets)

    def _iso(self, text: pa.Array, rows: np.ndarray, seconds: np.ndarray, valid: np.ndarray, offsets: np.ndarray) -> None:
        """ISO-8601 strings: explicit offsets are honoured and remembered for local time;
        naive wall-clock strings are read in the schema's default zone."""
        zone = pc.extract_regex(text, _ISO_OFFSET)
        zone_text = pc.struct_field(zone, "zone") if len(zone) else pa.array([], pa.string())
        has_zone = zone.is_valid().to_numpy(zero_copy_only=False)
        parsed = pd.to_datetime(pd.Series(text.to_pandas()), utc=True, format="ISO8601", errors="coerce")
        ok = parsed.notna().to_numpy() & ~mask_of(pc.match_substring_regex(text, _NOT_A_TIME))
        wall = parsed.dt.tz_convert(None).to_numpy()
        epoch = _datetime64_to_seconds(wall)

        # Explicit offsets: minutes east of UTC, as written.
        zone_minutes = _offset_text_to_minutes(zone_text, has_zone)
        naive = ok & ~has_zone
        if naive.any():
            if self.naive_zone is not None:
                local = pd.DatetimeIndex(wall[naive]).tz_localize(
                    self.naive_zone, ambiguous=np.zeros(int(naive.sum()), dtype=bool), nonexistent="shift_forward"
                )
                epoch[naive] = _datetime64_to_seconds(local.tz_convert(None).to_numpy())
            else:
                epoch[naive] -= 60 * int(self.naive_offset_minutes or 0)
        seconds[rows] = np.where(ok, epoch, 0)
        valid[rows] = ok
        offsets[rows] = np.where(ok & has_zone, zone_minutes, NO_OFFSET)


def _beyond_int64(integers: pa.Array) -> np.ndarray:
    """Which integer strings lie outside ±(2^63 − 1), compared as digit strings: one such value
    would make the cast of its whole batch fail. Only strings long enough to overflow are
    looked at closely."""
    beyond = np.zeros(len(integers), dtype=bool)
    long = mask_of(pc.greater_equal(pc.utf8_length(integers), len(_INT64_MAX_TEXT)))
    if long.any():
        digits = pc.replace_substring_regex(pc.utf8_trim_whitespace(integers.filter(pa.array(long))), r"^[+-]?0*", "")
        length = pc.utf8_length(digits)
        longer = pc.greater(length, len(_INT64_MAX_TEXT))
        larger = pc.and_(pc.equal(length, len(_INT64_MAX_TEXT)), pc.greater(digits, _INT64_MAX_TEXT))
        beyond[long] = mask_of(pc.or_(longer, larger))
    return beyond


def _without_plus(integers: pa.Array) -> pa.Array:
    """Trimmed integer strings without a leading '+', which Arrow's cast to int64 refuses."""
    return pc.replace_substring_regex(pc.utf8_trim_whitespace(integers), r"^\+", "")


def zone_offsets_minutes(seconds: np.ndarray, zone: str) -> np.ndarray:
    """UTC offset (minutes east) of an IANA zone at each instant, daylight saving included."""
    if len(seconds) == 0:
        return np.zeros(0, dtype=np.int16)
    utc = pd.to_datetime(seconds, unit="s", utc=True)
    local_wall = utc.tz_convert(zone).tz_localize(None)
    delta = local_wall.to_numpy().astype("datetime64[s]").astype(np.int64) - seconds
    return (delta // 60).astype(np.int16)


def _zone_offsets(column: pa.TimestampArray, seconds: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Minutes east of UTC of each instant in the column's own zone, daylight saving included.

    Arrow reads only the operating system's zone database; where that lacks the zone (a slim
    image without /usr/share/zoneinfo), pandas, which also knows the `tzdata` package, answers
    for the instants it can represent (about 1685–2255; others are implausible anyway). A zone
    neither knows leaves NO_OFFSET: those events take the schema's default zone."""
    zone = column.type.tz
    offsets = np.full(len(column), NO_OFFSET, dtype=np.int16)
    if zone.upper() in ("Z", "UTC"):
        offsets[present] = 0
        return offsets
    try:
        local = pc.local_timestamp(column)
    except pa.ArrowInvalid:
        representable = present & (np.abs(seconds) < _PANDAS_SECONDS)
        try:
            offsets[representable] = zone_offsets_minutes(seconds[representable], zone)
        except KeyError:  # pytz's and zoneinfo's "unknown zone" errors are KeyErrors
            log.warning("unknown time zone %r in a timestamp column: its events take the default zone", zone)
        return offsets
    ticks = pc.subtract(local.cast(pa.int64()), column.cast(pa.int64())).fill_null(0).to_numpy()
    offsets[present] = (ticks // (60 * _UNIT_DIVISOR[column.type.unit]))[present]
    return offsets


def mask_of(flags: pa.Array) -> np.ndarray:
    """A boolean Arrow array as NumPy, nulls as False."""
    return np.asarray(pc.fill_null(flags, False).to_numpy(zero_copy_only=False), dtype=bool)


def _datetime64_to_seconds(values: np.ndarray) -> np.ndarray:
    unit, _ = np.datetime_data(values.dtype)
    ticks = values.view(np.int64)
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    return np.floor_divide(ticks, per_second)


def _offset_text_to_minutes(zone_text: pa.Array, has_zone: np.ndarray) -> np.ndarray:
    """'Z' -> 0, '+05:30'/'+0530'/'+05' -> 330, '-08:00' -> -480."""
    out = np.zeros(len(zone_text), dtype=np.int16)
    if not has_zone.any():
        return out
    cleaned = pc.replace_substring(pc.fill_null(zone_text, "Z"), ":", "")
    cleaned = pc.replace_substring_regex(cleaned, "^[Zz]$", "+0000")
    cleaned = pc.utf8_rpad(cleaned, 5, "0")
    sign = np.where(pc.equal(pc.utf8_slice_codeunits(cleaned, 0, 1), "-").to_numpy(zero_copy_only=False), -1, 1)
    hours = pc.cast(pc.utf8_slice_codeunits(cleaned, 1, 3), pa.int16()).to_numpy()
    minutes = pc.cast(pc.utf8_slice_codeunits(cleaned, 3, 5), pa.int16()).to_numpy()
    out[:] = sign * (hours * 60 + minutes)
    return out
