"""The spill: running codes parked as int32 while they fit and read back as int64; runs written on
the spill's own thread (`prepare --threads`)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from rotorec.features.events import EventColumns
from rotorec.features.spill import EventSpill


def _events(users: np.ndarray, first_row: int) -> EventColumns:
    n = len(users)
    return EventColumns(
        user=users.astype(np.int64),
        item=(users * 7 + 3).astype(np.int64),
        seconds=np.arange(n, dtype=np.int64) + 1_700_000_000,
        has_time=np.ones(n, bool),
        offset_minutes=np.zeros(n, np.int16),
        row=np.arange(first_row, first_row + n, dtype=np.int64),
        impression=np.zeros(n, np.int64),
        has_impression=np.zeros(n, bool),
        labels=np.zeros((n, 1), np.int8),
        probabilities=np.zeros((n, 0)),
        categorical={"genre": np.stack([users % 5, np.full(n, -1)], axis=1).astype(np.int64)},
    )


@pytest.mark.parametrize("on_disk", [False, True])
def test_codes_beyond_int32_survive_the_spill(tmp_path: Path, on_disk: bool) -> None:
    """A batch whose codes fit int32 and one whose codes do not, in one run and in separate
    runs: every column comes back as int64 with the values that went in."""
    small = np.array([3, 1, 2, 1, 0], dtype=np.int64)
    huge = np.array([2**31 + 5, 2, 2**31 - 1, 2**40], dtype=np.int64)
    for memory_events in (3, 100):  # a run per batch, or both batches in one run
        spill = EventSpill(tmp_path / f"spill{memory_events}-{on_disk}", memory_events=memory_events)
        batches = [_events(small, 0), _events(huge, len(small))]
        for batch in batches:
            spill.append(batch, np.arange(len(batch), dtype=np.uint64))
        spill.finish(on_disk=on_disk)
        if memory_events == 3:  # the first run holds the small codes only: stored narrow
            assert np.load(spill.folder / "run000000" / "user.npy").dtype == np.int32
            assert np.load(spill.folder / "run000000" / "cat__genre.npy").dtype == np.int32
        everything = EventColumns.concat(batches)
        got = spill.read_events((0, 2**41), ["genre"], np.zeros(0, dtype=np.int64))
        order = np.lexsort((everything.row, everything.user))
        for name in ("user", "item", "row", "seconds"):
            assert getattr(got, name).dtype == np.int64
            np.testing.assert_array_equal(getattr(got, name), getattr(everything, name)[order])
        assert got.categorical["genre"].dtype == np.int64
        np.testing.assert_array_equal(got.categorical["genre"], everything.categorical["genre"][order])
        empty = spill.read((2**42, 2**43), ["user", "cat__genre", "row"])
        assert all(values.dtype == np.int64 and len(values) == 0 for values in empty.values())


def test_a_background_spill_reads_back_as_a_foreground_one(tmp_path: Path) -> None:
    """Runs sorted and written on the spill's thread equal runs written in line, read back
    group by group; the last run stays in memory either way."""
    rng = np.random.default_rng(3)
    batches = [_events(rng.integers(0, 40, 300), first_row=300 * k) for k in range(7)]
    spills = {}
    for background in (False, True):
        spill = EventSpill(tmp_path / str(background), memory_events=500, background=background)
        for events in batches:
            spill.append(events, events.row.astype(np.uint64) * 7)
        spill.finish(on_disk=False)
        spills[background] = spill
    assert len(list((tmp_path / "True").iterdir())) == len(list((tmp_path / "False").iterdir())) > 1
    for users in [(0, 10), (10, 11), (11, 40)]:
        got = spills[True].read(users, ["user", "row", "hash"])
        want = spills[False].read(users, ["user", "row", "hash"])
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_a_failing_spill_write_is_raised_and_the_thread_stops(tmp_path: Path, monkeypatch) -> None:
    def fail(batches, folder):
        raise OSError("No space left on device")

    monkeypatch.setattr("rotorec.features.spill._write_run", fail)
    spill = EventSpill(tmp_path, memory_events=10, background=True)
    with pytest.raises(OSError, match="No space"):
        for k in range(5):
            spill.append(_events(np.arange(20), first_row=20 * k), np.arange(20, dtype=np.uint64))
        spill.finish(on_disk=True)
    spill.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("spill")]
