"""Dynamic micro-batching across concurrent requests (serving.md §6).

Requests wait in an asyncio queue; one worker takes the first, then gathers more for up to
`max_wait_ms` (0: only what is already queued) until `max_batch_size` requests or
`max_batch_candidates` candidates, and runs one forward pass in the single inference thread,
so the event loop never blocks on compute. Each batch reads the model reference once, at its
start: a hot reload never mixes versions inside a batch, and every result names its model.
Padding is fully masked and candidates never see each other, so batching cannot change a score.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.feeds import Feed, Scored, ServedModel
from service.metrics import ServiceMetrics


class Overloaded(RuntimeError):
    """The queue is full or the service is draining: answer 503 and let the client retry."""


@dataclass
class Pending:
    feed: Feed
    future: asyncio.Future
    enqueued: float


class Batcher:
    def __init__(self, current_model: Callable[[], ServedModel | None], metrics: ServiceMetrics, *,
                 max_batch_size: int, max_wait_ms: float, max_batch_candidates: int, max_queue: int,
                 micro_batch: int) -> None:
        self.current_model = current_model
        self.metrics = metrics
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.max_batch_candidates, self.micro_batch = max_batch_candidates, micro_batch
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(maxsize=max_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.accepting = True
        self.worker: asyncio.Task | None = None
        self.busy = 0

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._run())

    def run_in_inference_thread(self, fn, *args):
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def score(self, feed: Feed) -> tuple[Scored, ServedModel]:
        if not self.accepting:
            raise Overloaded("the service is shutting down")
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(Pending(feed, future, time.monotonic()))
        except asyncio.QueueFull:
            raise Overloaded("the scoring queue is full") from None
        self.metrics.queue_depth.set(self.queue.qsize())
        return await future

    async def _gather(self) -> list[Pending]:
        batch = [await self.queue.get()]
        candidates = len(batch[0].feed.candidate_items)
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size and candidates < self.max_batch_candidates:
            remaining = deadline - time.monotonic()
            try:
                item = self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.queue.get(), remaining)
            except (asyncio.QueueEmpty, TimeoutError):
                break
            batch.append(item)
            candidates += len(item.feed.candidate_items)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            self.busy = len(batch)
            self.metrics.queue_depth.set(self.queue.qsize())
            started = time.monotonic()
            for item in batch:
                self.metrics.queue_wait.observe(started - item.enqueued)
            self.metrics.batch_size.observe(len(batch))
            model = self.current_model()
            try:
                if model is None:
                    raise Overloaded("no model is loaded")
                results = await self.run_in_inference_thread(model.score, [p.feed for p in batch], self.micro_batch)
                self.metrics.inference_seconds.observe(time.monotonic() - started)
                for item, scored in zip(batch, results):
                    if not item.future.done():
                        item.future.set_result((scored, model))
            except Exception as error:  # the requests fail; the worker must survive to serve the next batch
                self.metrics.inference_errors.labels(reason=type(error).__name__).inc()
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
            finally:
                self.busy = 0

    async def drain(self, timeout: float) -> None:
        """Stop taking requests, finish what is queued or running, then stop the worker."""
        self.accepting = False
        deadline = time.monotonic() + timeout
        while (self.queue.qsize() or self.busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.worker is not None:
            self.worker.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)
