"""What one app instance holds while it serves: settings, metrics, the current model snapshot,
the batcher and the per-user state cache, plus the two steps every scoring route shares
(take the current snapshot; score feeds with it).

A route gets `require_model()` once, as its `Model` dependency (service/dependencies.py), and
uses that snapshot for everything the request does: featurizing (vocabulary ids), scoring and
the version in the response. A hot reload replaces `model` with one assignment; requests
already holding the previous snapshot finish with it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rotorec.service.batcher import Batcher, Overloaded
from rotorec.service.errors import ApiError
from rotorec.service.featurize import Feed
from rotorec.service.metrics import ServiceMetrics
from rotorec.service.scoring import Scored, ServedModel
from rotorec.service.settings import ServiceSettings
from rotorec.service.state_cache import StateCache
from rotorec.service.warmup import warm_up


def load_and_warm(path: str | Path, device: str) -> ServedModel:
    model = ServedModel.load(path, device)
    warm_up(model)
    return model


@dataclass
class ServiceState:
    settings: ServiceSettings
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    model: ServedModel | None = None
    batcher: Batcher | None = None
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    states: StateCache | None = None
    draining: bool = False  # set on SIGTERM: readiness answers 503 while requests are still served

    def __post_init__(self) -> None:
        s = self.settings
        self.states = StateCache(s.state_cache_entries, s.state_cache_bytes, s.state_cache_ttl_s, self.metrics)

    def device(self) -> str:
        if self.settings.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.settings.device

    def install(self, model: ServedModel) -> None:
        """Swap the served model: one reference assignment, read once per request."""
        previous = self.model
        self.model = model
        if previous is not None:
            self.metrics.model_info.remove(previous.name, previous.version, _git(previous))
        self.metrics.model_info.labels(model.name, model.version, _git(model)).set(1)
        self.metrics.model_loaded.set(1)

    def require_model(self) -> ServedModel:
        """The snapshot this request will use from start to end (503 when none is ready)."""
        if self.model is None or self.batcher is None or not self.batcher.accepting:
            raise ApiError(503, "no model is loaded and ready", {"Retry-After": "1"})
        return self.model

    async def score(self, model: ServedModel, feeds: list[Feed]) -> list[Scored]:
        """Score one request's feeds with the snapshot that built them, as one unit of queued work."""
        metrics = self.metrics
        for feed in feeds:
            metrics.candidates.observe(len(feed.candidate_items))
            metrics.history_events.observe(len(feed.history_items))
            for name, count in feed.oov.items():
                if count:
                    metrics.oov.labels(field=name).inc(count)
        try:
            return await self.batcher.score(model, feeds)
        except Overloaded as error:
            raise ApiError(503, str(error), {"Retry-After": "1"}) from None


def _git(model: ServedModel) -> str:
    return str(model.run.manifest.get("git_commit") or "unknown")[:12]
