"""The micro-batcher on its own, with stand-in models: a batch never mixes model snapshots, a
request is queued or refused as a whole, and work nobody awaits any more is never scored."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from rotorec.service.batcher import Batcher, Overloaded
from rotorec.service.metrics import ServiceMetrics


class Snapshot:
    """Scores a feed as (own name, feed); records every batch it was given."""

    def __init__(self, name: str) -> None:
        self.name, self.batches = name, []

    def score(self, feeds: list, micro_batch: int) -> list:
        self.batches.append([feed.label for feed in feeds])
        return [(self.name, feed.label) for feed in feeds]


def _feeds(*labels: str) -> list:
    return [SimpleNamespace(label=label, candidate_items=[0, 0]) for label in labels]


def _batcher(**limits) -> Batcher:
    settings = {"max_batch_size": 32, "max_wait_ms": 0, "max_batch_candidates": 8192, "max_queue": 64, "micro_batch": 256}
    return Batcher(ServiceMetrics(), **{**settings, **limits})


def test_a_batch_holds_one_snapshot_and_every_request_is_scored_by_its_own() -> None:
    async def scenario():
        batcher, old, new = _batcher(), Snapshot("old"), Snapshot("new")
        # Queued before the worker starts, so they could all have gone into one batch.
        plan = [(old, "o1"), (old, "o2"), (new, "n1"), (old, "o3"), (new, "n2"), (new, "n3")]
        requests = [asyncio.ensure_future(batcher.score(model, _feeds(label))) for model, label in plan]
        await asyncio.sleep(0)
        batcher.start()
        results = await asyncio.gather(*requests)
        await batcher.drain(1)
        return old, new, results, plan

    old, new, results, plan = asyncio.run(scenario())
    assert old.batches == [["o1", "o2"], ["o3"]] and new.batches == [["n1"], ["n2", "n3"]]
    assert results == [[(model.name, label)] for model, label in plan]


def test_a_request_is_queued_whole_or_refused_whole_and_gets_its_own_rows_back() -> None:
    async def scenario():
        batcher, model = _batcher(max_queue=1), Snapshot("m")
        first = asyncio.ensure_future(batcher.score(model, _feeds("a", "b", "c")))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.score(model, _feeds("x", "y"))
        queued = batcher.queue.qsize()
        batcher.start()
        rows = await first
        await batcher.drain(1)
        return queued, rows, model.batches

    queued, rows, batches = asyncio.run(scenario())
    assert queued == 1 and rows == [("m", "a"), ("m", "b"), ("m", "c")] and batches == [["a", "b", "c"]]


def test_a_request_nobody_awaits_is_never_scored() -> None:
    async def scenario():
        batcher, model = _batcher(), Snapshot("m")
        gone = asyncio.ensure_future(batcher.score(model, _feeds("gone")))
        kept = asyncio.ensure_future(batcher.score(model, _feeds("kept")))
        await asyncio.sleep(0)
        gone.cancel()  # the client went away
        batcher.start()
        result = await kept
        await batcher.drain(1)
        return result, model.batches

    result, batches = asyncio.run(scenario())
    assert result == [("m", "kept")] and batches == [["kept"]]
