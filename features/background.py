"""Work beside the main thread for `rotorec prepare --threads`: reading one item ahead, and pieces
of work run in order, one out at a time. NumPy, pandas and Arrow release the GIL over large
arrays, so a thread is a core here, and nothing is copied between processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


def read_ahead(items: Iterable[T]) -> Iterator[T]:
    """`items`, with the next one read on a thread while the caller works on the current one:
    Arrow decodes Parquet and parses text without the GIL, so on a spare core reading costs the
    caller nothing. One item is read ahead, no more, so memory grows by one batch."""
    items = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        upcoming = pool.submit(next, items, _END)
        while (item := upcoming.result()) is not _END:
            upcoming = pool.submit(next, items, _END)
            yield item


class InOrder:
    """Pieces of work on `pool`, one out at a time: submitting waits for the piece before, so they
    run in the order given (a file's row groups, the spill's runs) and memory holds at most the
    piece being done and the one being prepared. A piece's error is raised at the next submit or
    wait."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._pending: Future | None = None

    @property
    def busy(self) -> bool:
        return self._pending is not None

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(function, *args, **kwargs)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
