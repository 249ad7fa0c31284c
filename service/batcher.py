"""Dynamic micro-batching across concurrent requests (docs/serving.md, "Micro-batching").

Requests wait in an asyncio queue; one worker takes the first, then gathers more for up to
`max_wait_ms` (0: only what is already queued) until `max_batch_size` feeds or
`max_batch_candidates` candidates, and runs one forward pass in the single inference thread,
so the event loop never blocks on compute.

A queued request carries the model snapshot that featurized it (vocabulary ids are only
meaningful to that model), and is scored by exactly that snapshot: a batch holds requests of
one snapshot only, and a request of another snapshot (one that arrived after a hot reload)
starts the next batch. A request is one queue entry however many feeds (v2 rows) it has, so it
is accepted or refused as a whole; a request nobody awaits any more (its client went away) is
dropped before it costs a forward pass.
Padding is fully masked and candidates never see each other, so batching cannot change a score.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rotorec.service.featurize import Feed
from rotorec.service.metrics import ServiceMetrics
from rotorec.service.scoring import Scored, ServedModel


class Overloaded(RuntimeError):
    """The queue is full or the service is draining: answer 503 and let the client retry."""


@dataclass
class Pending:
    model: ServedModel
    feeds: list[Feed]
    future: asyncio.Future
    enqueued: float

    @property
    def candidates(self) -> int:
        return sum(len(feed.candidate_items) for feed in self.feeds)


class Batcher:
    def __init__(
        self,
        metrics: ServiceMetrics,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_batch_candidates: int,
        max_queue: int,
        micro_batch: int,
    ) -> None:
        self.metrics = metrics
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.max_batch_candidates, self.micro_batch = max_batch_candidates, micro_batch
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(maxsize=max_queue)
        self.held: Pending | None = None  # taken from the queue, but made by another snapshot than its batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.accepting = True
        self.worker: asyncio.Task | None = None
        self.busy = 0

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._run())

    def run_in_inference_thread(self, fn, *args):
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def score(self, model: ServedModel, feeds: list[Feed]) -> list[Scored]:
        """Score one request's feeds with `model`, the snapshot that built them."""
        if not self.accepting:
            raise Overloaded("the service is shutting down")
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(Pending(model, feeds, future, time.monotonic()))
        except asyncio.QueueFull:
            raise Overloaded("the scoring queue is full") from None
        self.metrics.queue_depth.set(self.queue.qsize())
        return await future  # a cancelled await cancels the future: the worker then skips the request

    async def _next(self, deadline: float | None) -> Pending | None:
        """The held-back request, else the next queued one (waiting until `deadline`, or forever)."""
        if self.held is not None:
            pending, self.held = self.held, None
            return pending
        if deadline is None:
            return await self.queue.get()
        remaining = deadline - time.monotonic()
        try:
            return self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.queue.get(), remaining)
        except (asyncio.QueueEmpty, TimeoutError):
            return None

    async def _gather(self) -> list[Pending]:
        """Requests of one model snapshot, up to the batch limits; the first is always taken whole."""
        first = await self._next(None)
        batch, feeds, candidates = [first], len(first.feeds), first.candidates
        deadline = time.monotonic() + self.max_wait
        while feeds < self.max_batch_size and candidates < self.max_batch_candidates:
            pending = await self._next(deadline)
            if pending is None:
                break
            if pending.model is not first.model:
                self.held = pending
                break
            batch.append(pending)
            feeds, candidates = feeds + len(pending.feeds), candidates + pending.candidates
        return [pending for pending in batch if not pending.future.done()]

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            if not batch:
                continue
            self.busy = len(batch)
            self.metrics.queue_depth.set(self.queue.qsize())
            started = time.monotonic()
            for pending in batch:
                self.metrics.queue_wait.observe(started - pending.enqueued)
            self.metrics.batch_size.observe(len(batch))
            model = batch[0].model
            try:
                results = await self.run_in_inference_thread(model.score, [f for p in batch for f in p.feeds], self.micro_batch)
                self.metrics.inference_seconds.observe(time.monotonic() - started)
                start = 0
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_result(results[start : start + len(pending.feeds)])
                    start += len(pending.feeds)
            except Exception as error:  # the requests fail; the worker must survive to serve the next batch
                self.metrics.inference_errors.labels(reason=type(error).__name__).inc()
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
            finally:
                self.busy = 0

    async def drain(self, timeout: float) -> None:
        """Stop taking requests, finish what is queued or running, then stop the worker."""
        self.accepting = False
        deadline = time.monotonic() + timeout
        while (self.queue.qsize() or self.held is not None or self.busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.worker is not None:
            self.worker.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)
