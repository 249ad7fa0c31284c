"""The pieces `rotorec prepare --threads N` runs beside its main thread, each against the plain
sequential form it replaces (whole-prepare equality is in test_prepare_reference.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotorec.features.background import read_ahead
from rotorec.features.engines import LocalEngine
from rotorec.features.spill import _read_rows


def _slow_square(delay: float, item: int, extra: int = 0) -> int:
    time.sleep(delay * ((item * 7) % 3))  # later items often finish first
    return item * item + extra


@pytest.fixture
def engines():
    """LocalEngine(...) closed after the test, so no group thread lingers into the next one."""
    made: list[LocalEngine] = []

    def make(threads: int, budget: int | None = None) -> LocalEngine:
        made.append(LocalEngine(threads, budget))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_the_local_engine_yields_in_item_order_whatever_finishes_first(engines, threads: int) -> None:
    engine = engines(threads)
    assert list(engine.map(_slow_square, (0.002,), range(12))) == [k * k for k in range(12)]
    assert list(engine.map(_slow_square, (0.002,), range(5), per_item=[10, 20, 30, 40, 50])) == [10, 21, 34, 49, 66]


def test_the_local_engine_keeps_at_most_threads_groups_out(engines) -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def work(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.005)
        with lock:
            running -= 1
        return item

    assert list(engines(3).map(work, (), range(20))) == list(range(20))
    assert 2 <= most <= 3


def test_the_local_engine_holds_no_more_events_than_its_budget(engines) -> None:
    """Groups of one large user each (a user is never split) wait for each other; groups within
    the budget run side by side."""
    running, most = 0, 0
    lock = threading.Lock()

    def work(item: int, size: int) -> int:
        nonlocal running, most
        with lock:
            running += size
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= size
        return item

    big = [1_500_000] * 6
    assert list(engines(4, budget=2_000_000).map(work, (), range(6), per_item=big, sizes=big)) == list(range(6))
    assert most == 1_500_000
    most = 0
    small = [500_000] * 12
    assert list(engines(4, budget=2_000_000).map(work, (), range(12), per_item=small, sizes=small)) == list(range(12))
    assert 1_000_000 <= most <= 2_000_000


def test_a_failing_group_raises_in_order_and_later_groups_are_not_started(engines) -> None:
    started: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        if item == 3:
            raise ValueError("group 3 is bad")
        return item

    results = engines(2).map(work, (), range(50))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="group 3"):
        next(results)
    results.close()
    assert max(started) <= 5  # two out at a time: nothing far past the failure ran


def test_read_ahead_yields_every_item_once_in_order() -> None:
    seen_on: set[str] = set()

    def produce():
        for k in range(7):
            seen_on.add(threading.current_thread().name)
            yield k

    assert list(read_ahead(produce())) == list(range(7))
    assert all(name.startswith("read-ahead") for name in seen_on)  # the caller's thread read none
    assert list(read_ahead(iter([]))) == []


def test_read_ahead_raises_the_readers_error_where_the_item_would_be() -> None:
    def produce():
        yield 1
        yield 2
        raise OSError("truncated file")

    items = read_ahead(produce())
    assert next(items) == 1
    assert next(items) == 2
    with pytest.raises(OSError, match="truncated"):
        next(items)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 60),
    width=st.sampled_from([(), (0,), (1,), (3,)]),
    dtype=st.sampled_from(["int64", "int16", "bool", "float64", "uint64"]),
    bounds=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_reading_rows_of_an_npy_file_equals_slicing_it(tmp_path_factory, rows: int, width: tuple, dtype: str, bounds) -> None:
    """The spill reads a run's slice with one read() into a new array instead of a memory map."""
    folder: Path = tmp_path_factory.mktemp("npy")
    values = (np.arange(rows * int(np.prod(width, dtype=int))) * 2654435761 % 1000).astype(dtype).reshape(rows, *width)
    np.save(folder / "column.npy", values)
    lo, hi = sorted(int(b * rows) for b in bounds)
    if hi == lo:
        hi = lo + 1 if lo < rows else lo
        lo = hi - 1
    got = _read_rows(folder / "column.npy", lo, hi)
    assert got.dtype == values.dtype and got.shape == values[lo:hi].shape
    np.testing.assert_array_equal(got, values[lo:hi])


def test_reading_past_the_end_of_a_truncated_run_is_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "column.npy", np.arange(100))
    data = (tmp_path / "column.npy").read_bytes()
    (tmp_path / "column.npy").write_bytes(data[:-80])  # the last 10 int64 values gone
    np.testing.assert_array_equal(_read_rows(tmp_path / "column.npy", 0, 90), np.arange(90))
    with pytest.raises(OSError, match="could not be read"):
        _read_rows(tmp_path / "column.npy", 85, 100)


def test_no_thread_outlives_a_failed_prepare(tmp_path: Path, monkeypatch) -> None:
    """An error in the main thread while groups are out (here: merging the second group) is
    raised, and every group, spill, encoder and read-ahead thread is stopped before prepare
    returns — also when the loop's wrapper (a visible progress bar) does not pass a close on."""
    from rotorec.features import prepare as prepare_module
    from rotorec.features.adapters.events import events_source
    from rotorec.features.schema import LogSchema

    log = tmp_path / "log.parquet"
    rng = np.random.default_rng(0)
    n = 3000
    pq.write_table(
        pa.table({"user_id": rng.integers(0, 60, n), "item_id": rng.integers(0, 90, n), "timestamp": 1_700_000_000 + np.arange(n) * 60}),
        log,
    )
    merged = []

    def merge_then_fail(*args, **kwargs):
        merged.append(1)
        if len(merged) == 2:
            raise RuntimeError("merge failed")

    monkeypatch.setattr(prepare_module, "_merge_group", merge_then_fail)
    monkeypatch.setattr(prepare_module, "_progress", lambda results, *args: (result for result in results))
    options = prepare_module.PrepareOptions(threads=3, group_events=300, batch_rows=500, split="loo", progress=False)
    names = ("prepare-group", "spill", "encode", "read-ahead")
    try:
        prepare_module.prepare(events_source(log, LogSchema()), tmp_path / "out", options)
    except RuntimeError as error:  # looked at while the traceback (and every frame in it) is alive
        assert "merge failed" in str(error)
        alive = [t.name for t in threading.enumerate() if t.name.startswith(names)]
    else:
        pytest.fail("prepare did not raise")
    assert not alive
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.parquet"]  # no output, staging or spill left
