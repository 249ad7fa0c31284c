"""Validated events parked on disk by user, so that featurization holds one group of users at a time.

Every read batch becomes one *run*: its events stably sorted by user code (so a user's events keep
their input-row order) and written as one .npy file per column. A group of consecutive user codes
is read back from every run with a binary search, runs in read order, so the group's events come
back in input-row order: exactly the events, in the order, that the whole log would give for
those users. Memory then depends on the largest group, not on the log (docs/prepare_at_scale.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import numpy as np

from rotorec.features.background import InOrder
from rotorec.features.events import EventColumns

CATEGORICAL_PREFIX = "cat__"


def _columns(events: EventColumns) -> dict[str, np.ndarray]:
    flat = {f.name: getattr(events, f.name) for f in fields(events) if f.name != "categorical"}
    flat.update({CATEGORICAL_PREFIX + name: codes for name, codes in events.categorical.items()})
    return {name: _narrowed(name, values) for name, values in flat.items()}


def _is_code(name: str) -> bool:
    return name in ("user", "item") or name.startswith(CATEGORICAL_PREFIX)


def _narrowed(name: str, values: np.ndarray) -> np.ndarray:
    """Running codes as int32 while they fit (in any log of fewer than 2^31 distinct keys): a sixth
    fewer bytes to sort, write and read back, and writing the spill is most of pass 1's kernel
    time. Read back as int64 (`EventSpill.read`)."""
    if _is_code(name) and values.dtype == np.int64 and (len(values) == 0 or int(values.max()) <= np.iinfo(np.int32).max):
        return values.astype(np.int32)
    return values


class EventSpill:
    """Runs of validated events (plus each event's duplicate-detection hash). Read batches are held
    in memory until they exceed `memory_events` events, then written under `folder` as one run;
    what is held when reading starts stays in memory as the last run (so a log that fits one group
    never touches the disk)."""

    def __init__(self, folder: Path, memory_events: int, background: bool = False) -> None:
        self.folder = folder
        self.memory_events = memory_events
        # With a spare core, a run is sorted and written on a thread while the next batches are
        # read and validated (numpy's sort, gather and file writes run without the GIL). One run
        # at most is being written, so memory holds at most two runs' worth of events.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="spill") if background else None
        self._writing = InOrder(self._pool) if self._pool is not None else None
        self._runs: list[Path] = []
        self._held: list[dict[str, np.ndarray]] = []  # batches not yet in a run, in read order
        self._held_events = 0
        self._memory_run: dict[str, np.ndarray] | None = None

    def append(self, events: EventColumns, hashes: np.ndarray) -> bool:
        """Hold a batch; True when the batches held so far went to a run (their memory is freed)."""
        if len(events) == 0:
            return False
        self._held.append({**_columns(events), "hash": hashes})
        self._held_events += len(events)
        if self._held_events > self.memory_events:
            self._write_held()
            return True
        return False

    def _write_held(self) -> None:
        """The batches held so far become one run on disk: fewer, larger runs keep the reads of
        each group to a few slices."""
        folder = self.folder / f"run{len(self._runs):06d}"
        self._runs.append(folder)
        held, self._held, self._held_events = self._held, [], 0
        if self._writing is None:
            _write_run(held, folder)
        else:
            self._writing.submit(_write_run, held, folder)

    def close(self) -> None:
        """Stop the writer thread (after its run), so nothing writes into a folder being removed."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._writing = None  # and the spill pickles again, for a distributed engine's workers

    def finish(self, on_disk: bool) -> None:
        """Reading is over: what is still held becomes the last run, in memory unless workers in
        other processes must read it (`on_disk`)."""
        if self._held and on_disk:
            self._write_held()
        elif self._held:
            self._memory_run = _sorted_by_user(self._held)
            self._held, self._held_events = [], 0
        if self._writing is not None:
            self._writing.wait()  # the last run's error, if any, is raised here
        self.close()

    def _all_runs(self) -> list[dict[str, np.ndarray] | Path]:
        if self._held or (self._writing is not None and self._writing.busy):
            raise RuntimeError("EventSpill.finish() must come before reading")
        return self._runs + ([self._memory_run] if self._memory_run is not None else [])

    @staticmethod
    def _column(run: dict[str, np.ndarray] | Path, name: str) -> np.ndarray:
        # On disk, memory-mapped: a binary search on the sorted user column touches a few pages.
        return np.load(run / f"{name}.npy", mmap_mode="r") if isinstance(run, Path) else run[name]

    def read(self, users: tuple[int, int], names: list[str]) -> dict[str, np.ndarray]:
        """Columns `names` of the events of user codes [first, end): by run, then user, then
        input row, so each user's events are in input-row order."""
        first, end = users
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for run in self._all_runs():
            lo, hi = np.searchsorted(self._column(run, "user"), [first, end])
            if hi == lo:
                continue
            for name in names:
                parts[name].append(_read_rows(run / f"{name}.npy", lo, hi) if isinstance(run, Path) else run[name][lo:hi])
        return {
            name: (np.concatenate(chunks, dtype=np.int64 if _is_code(name) else None) if chunks else self._empty(name))
            for name, chunks in parts.items()
        }

    def read_events(self, users: tuple[int, int], categorical: list[str], dropped: np.ndarray) -> EventColumns:
        """The events of user codes [first, end) but the input rows in `dropped`, grouped
        by user and in input-row order within each user."""
        names = [f.name for f in fields(EventColumns) if f.name != "categorical"]
        columns = self.read(users, [*names, *(CATEGORICAL_PREFIX + c for c in categorical)])
        # Runs follow the read order and each run's slice is in (user, row) order, so a stable
        # sort by user gives (user, row) order; a group held by one run is in that order already.
        user = columns["user"]
        order = None if np.all(user[1:] >= user[:-1]) else stable_user_order(user)
        if len(dropped):
            kept = ~np.isin(columns["row"] if order is None else columns["row"][order], dropped)
            order = np.flatnonzero(kept) if order is None else order[kept]
        pick = (lambda values: values) if order is None else (lambda values: np.take(values, order, axis=0))
        codes = {name: pick(columns.pop(CATEGORICAL_PREFIX + name)) for name in categorical}
        return EventColumns(**{name: pick(values) for name, values in columns.items()}, categorical=codes)

    def _empty(self, name: str) -> np.ndarray:
        template = self._column(self._all_runs()[0], name)
        return np.zeros((0, *template.shape[1:]), dtype=np.int64 if _is_code(name) else template.dtype)


def _read_rows(path: Path, lo: int, hi: int) -> np.ndarray:
    """Rows [lo, hi) of an .npy file, read straight into a new array. Not memory-mapped: mapped
    pages count as resident (the kernel maps well beyond a slice), and mapping and unmapping
    serialize the threads of a process on its memory map while they fault pages in."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        shape, fortran_order, dtype = (
            np.lib.format.read_array_header_1_0(file) if version == (1, 0) else np.lib.format.read_array_header_2_0(file)
        )
        if fortran_order:  # runs are written C-ordered; rows of another layout are not contiguous
            raise OSError(f"{path}: not a C-ordered array")
        values = np.empty((hi - lo, *shape[1:]), dtype=dtype)
        if values.nbytes == 0:  # a column of no values per event (no probability columns)
            return values
        file.seek(values.nbytes // (hi - lo) * lo, 1)  # whence 1: from the end of the header
        if file.readinto(memoryview(values).cast("B")) != values.nbytes:
            raise OSError(f"{path}: rows {lo}..{hi} of {shape[0]} could not be read")
    return values


def user_groups(events_per_user: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive user-code ranges of at most `budget` events each (one user alone may exceed it),
    covering every code."""
    users = len(events_per_user)
    if users == 0:
        return []
    bounds = [0]
    total = np.cumsum(events_per_user)
    while bounds[-1] < users:
        start = bounds[-1]
        already = total[start - 1] if start else 0
        end = int(np.searchsorted(total, already + budget, side="right"))
        bounds.append(max(end, start + 1))
    return list(zip(bounds[:-1], bounds[1:]))


def stable_user_order(user: np.ndarray) -> np.ndarray:
    """The stable argsort of non-negative user codes, as a least-significant-digit radix sort on
    16-bit digits: numpy's stable sort of a 16-bit key is a linear-time radix sort, of a 64-bit key
    a merge sort (1.4× slower at 2M events here). Logs under 65,536 users take one pass."""
    order = np.argsort(user.astype(np.uint16), kind="stable")  # the low digit (astype keeps the low 16 bits)
    shift, top = 16, int(user.max()) if len(user) else 0
    while top >> shift:
        digit = (np.take(user, order) >> shift).astype(np.uint16)
        order = np.take(order, np.argsort(digit, kind="stable"))
        shift += 16
    return order


def _write_run(batches: list[dict[str, np.ndarray]], folder: Path) -> None:
    run = _sorted_by_user(batches)
    folder.mkdir(parents=True)
    for name, values in run.items():
        np.save(folder / f"{name}.npy", values)


def _sorted_by_user(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Batches in read order as one run sorted by user; stable, so each user's events keep their
    input-row order."""
    columns = {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}
    order = stable_user_order(columns["user"])
    return {name: np.take(values, order, axis=0) for name, values in columns.items()}
