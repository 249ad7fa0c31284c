"""Where `rotorec prepare` runs its per-group passes: in this process, or on a Dask cluster.

An engine maps a per-group function (`features/groups.py`) over the groups and yields the
results in group order, so the merge — and with it the output — is the same whichever engine
ran them. Dask fits here for its weight: pure Python, one `pip install`, a local cluster of
processes for one machine and the same code against a scheduler for many (docs/prepare_at_scale.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

ENGINES = ("local", "dask")


class Engine(Protocol):
    on_disk: bool
    """Whether workers read the spill from disk (then every run is written there)."""

    def map(
        self,
        function: Callable[..., Any],
        shared: tuple,
        items: Sequence,
        per_item: Sequence | None = None,
        sizes: Sequence[int] | None = None,
    ) -> Iterator[Any]:
        """function(*shared, item[, per_item[k]]) for every item, yielded in item order; `sizes`
        (events per item) lets an engine bound the events it holds at once."""
        ...

    def close(self) -> None: ...


class LocalEngine:
    """Groups in this process: one after another, or on `threads` threads. Threads pay here
    because the per-group work is numpy, pandas and Arrow kernels over large arrays, which run
    without the GIL. At most `threads` groups are out at a time, and no more than `budget` events
    among them (one group alone may exceed it: a user is never split), so memory stays where one
    thread with one group of `budget` events puts it; results still come back in group order."""

    on_disk = False

    def __init__(self, threads: int = 1, budget: int | None = None) -> None:
        self.threads = threads
        self.budget = budget
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="prepare-group") if threads > 1 else None

    def map(self, function, shared, items, per_item=None, sizes=None):
        def calls(k: int, item):
            return function(*shared, item) if per_item is None else function(*shared, item, per_item[k])

        if self._pool is None:
            for k, item in enumerate(items):
                yield calls(k, item)
            return
        pending: deque[tuple[Future, int]] = deque()
        held = 0  # events of the groups out
        try:
            for k, item in enumerate(items):
                size = 0 if sizes is None else int(sizes[k])
                while pending and (len(pending) >= self.threads or (self.budget is not None and held + size > self.budget)):
                    future, done = pending.popleft()
                    held -= done
                    yield future.result()
                pending.append((self._pool.submit(calls, k, item), size))
                held += size
            while pending:
                future, _ = pending.popleft()
                yield future.result()
        finally:  # the caller stopped early (an error): drop what has not started
            for future, _ in pending:
                future.cancel()

    def close(self) -> None:
        """Stop the group threads: each finishes the group it is on, the rest are dropped. The
        caller's way out closes the engine, not the map it was looping over (a progress bar
        wrapping that loop does not pass a close on)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class DaskEngine:
    """Groups as Dask tasks. `address` is a running scheduler ("tcp://host:8786"); without one a
    local cluster of `workers` single-threaded processes is started and closed with the engine.
    The spill and output folders must be on storage every worker can read (on one machine they
    are). At most `in_flight` groups are out at a time, so results wait in memory only that long."""

    on_disk = True

    def __init__(self, address: str | None = None, workers: int = 2, in_flight: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as error:  # an optional dependency: say how to get it
            raise RuntimeError("--engine dask needs Dask: pip install 'rotorec[dask]'") from error
        self._cluster = None
        if address is None:
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            address = self._cluster.scheduler_address
        self._client = Client(address)
        self.in_flight = in_flight or 2 * max(len(self._client.scheduler_info()["workers"]), 1)

    def map(self, function, shared, items, per_item=None, sizes=None):  # sizes unused: each worker holds its own groups
        shared = tuple(self._client.scatter(value, broadcast=True, hash=False) for value in shared)
        pending: deque = deque()
        for k, item in enumerate(items):
            extra = () if per_item is None else (per_item[k],)
            pending.append(self._client.submit(function, *shared, item, *extra, pure=False))
            if len(pending) >= self.in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def open_engine(name: str, address: str | None = None, workers: int = 2, threads: int = 1, budget: int | None = None) -> Engine:
    if name == "local":
        return LocalEngine(threads, budget)
    if name == "dask":
        return DaskEngine(address, workers)
    raise ValueError(f"unknown engine {name!r} (one of {', '.join(ENGINES)})")
