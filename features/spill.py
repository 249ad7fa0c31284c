"""Validated events parked on disk by user, so that featurization holds one group of users at a time.

Every read batch becomes one *run*: its events stably sorted by user code (so a user's events keep
their input-row order) and written as one .npy file per column. A group of consecutive user codes
is read back from every run with a binary search, runs in read order, so the group's events come
back in input-row order: exactly the events, in the order, that the whole log would give for
those users. Memory then depends on the largest group, not on the log (docs/prepare_at_scale.md).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from rotorec.features.events import EventColumns

CATEGORICAL_PREFIX = "cat__"


def _columns(events: EventColumns) -> dict[str, np.ndarray]:
    flat = {f.name: getattr(events, f.name) for f in fields(events) if f.name != "categorical"}
    flat.update({CATEGORICAL_PREFIX + name: codes for name, codes in events.categorical.items()})
    return flat


class EventSpill:
    """Runs of validated events (plus each event's duplicate-detection hash) under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._runs: list[Path] = []

    def append(self, events: EventColumns, hashes: np.ndarray) -> None:
        if len(events) == 0:
            return
        order = np.argsort(events.user, kind="stable")
        run = self.folder / f"run{len(self._runs):06d}"
        run.mkdir()
        for name, values in {**_columns(events), "hash": hashes}.items():
            np.save(run / f"{name}.npy", values[order])
        self._runs.append(run)

    def read(self, users: tuple[int, int], names: list[str]) -> dict[str, np.ndarray]:
        """Columns `names` of the events of user codes [first, end): by run, then user, then
        input row, so each user's events are in input-row order."""
        first, end = users
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for run in self._runs:
            # The sorted user column is searched where it lies on disk: a few pages per run, so
            # memory does not grow with the number of events spilled.
            lo, hi = np.searchsorted(np.load(run / "user.npy", mmap_mode="r"), [first, end])
            if hi == lo:
                continue
            for name in names:
                parts[name].append(np.load(run / f"{name}.npy", mmap_mode="r")[lo:hi])
        return {name: (np.concatenate(chunks) if chunks else self._empty(name)) for name, chunks in parts.items()}

    def read_events(self, users: tuple[int, int], categorical: list[str]) -> tuple[EventColumns, np.ndarray]:
        """The whole events of user codes [first, end) and their hashes, in input-row order."""
        names = [f.name for f in fields(EventColumns) if f.name != "categorical"]
        columns = self.read(users, [*names, *(CATEGORICAL_PREFIX + c for c in categorical), "hash"])
        hashes = columns.pop("hash")
        codes = {name: columns.pop(CATEGORICAL_PREFIX + name) for name in categorical}
        events = EventColumns(**columns, categorical=codes)
        by_row = np.argsort(events.row)
        return events.take(by_row), hashes[by_row]

    def _empty(self, name: str) -> np.ndarray:
        template = np.load(self._runs[0] / f"{name}.npy", mmap_mode="r")
        return np.zeros((0, *template.shape[1:]), dtype=template.dtype)


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
