"""Local time of each event, and the cyclic features derived from it with integer arithmetic.

Hour-of-day and day-of-week only mean something in the user's own clock, so each event gets a
UTC offset: its own `tz_offset_minutes` when the log has one, else the offset written in its
ISO-8601 timestamp (or the zone of a zone-aware Arrow timestamp column), else the schema's
default zone. An IANA default zone (say Europe/Berlin) is resolved per event, so events on
either side of a daylight-saving switch get their true offset.
"""

from __future__ import annotations

import numpy as np

from rotorec.features.timestamps import NO_OFFSET, zone_offsets_minutes

SECONDS_PER_DAY = 86_400
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY
EPOCH_WEEKDAY = 3
"""1970-01-01 was a Thursday; with Monday = 0 the epoch day has weekday 3."""

MAX_OFFSET_MINUTES = 840
"""UTC+14:00 (Kiribati) and UTC-12:00 bound every real offset; ±14 h is the usual cap."""


def resolve_offsets(
    seconds: np.ndarray,
    has_time: np.ndarray,
    event_offsets: np.ndarray,
    fixed_default: int | None,
    zone_default: str | None,
) -> np.ndarray:
    """Pick each event's offset: explicit per-event value first, then the default zone."""
    out = event_offsets.astype(np.int16, copy=True)
    missing = out == NO_OFFSET
    if not missing.any():
        return out
    if fixed_default is not None:
        out[missing] = fixed_default
    else:
        out[missing] = 0
        rows = missing & has_time
        out[rows] = zone_offsets_minutes(seconds[rows], zone_default or "UTC")
    return out


def cyclic_features(seconds: np.ndarray, offsets_minutes: np.ndarray, has_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seconds since local midnight and local weekday (Monday = 0), from integer seconds.

    Pure integer arithmetic (floor-mod), so shifting an instant by whole weeks leaves both
    features unchanged exactly; events without a timestamp get 0 and are masked downstream.
    """
    local = seconds + offsets_minutes.astype(np.int64) * 60
    second_of_day = np.mod(local, SECONDS_PER_DAY).astype(np.int32)
    day_of_week = np.mod(np.floor_divide(local, SECONDS_PER_DAY) + EPOCH_WEEKDAY, 7).astype(np.int8)
    second_of_day[~has_time] = 0
    day_of_week[~has_time] = 0
    return second_of_day, day_of_week
