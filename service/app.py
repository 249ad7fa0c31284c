"""The FastAPI app (serving.md): `create_app(settings)` builds it; the lifespan loads the run.

Importing this module loads nothing. At start the run is loaded with training's own loader
(checksums, strict weights), warmed up through the real scoring path, and only then reported
ready; if that fails the process stays live and answers 503 (or exits, with fail_fast).
Scoring goes through the dynamic batcher; `POST /admin/reload` swaps in a new run atomically
between batches; shutdown drains queued and running work before releasing the model.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import math
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
import orjson
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rotorec import __version__
from service.batcher import Batcher, Overloaded
from service.feeds import FeedError, Scored, ServedModel
from service.limits import BodySizeLimit
from service.metrics import ServiceMetrics
from service.schemas import EventsRequest, OovCounts, RankRequest, RankResponse, ReloadRequest
from service.settings import ServiceSettings
from service.state_cache import StateCache
from service.warmup import warm_up

log = logging.getLogger("rotorec.service")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


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
        """Swap the served model: one reference assignment, read once per batch."""
        previous = self.model
        self.model = model
        if previous is not None:
            self.metrics.model_info.remove(previous.name, previous.version, _git(previous))
        self.metrics.model_info.labels(model.name, model.version, _git(model)).set(1)
        self.metrics.model_loaded.set(1)


def _git(model: ServedModel) -> str:
    return str(model.run.manifest.get("git_commit") or "unknown")[:12]


def load_and_warm(path, device: str) -> ServedModel:
    model = ServedModel.load(path, device)
    warm_up(model)
    return model


def create_app(settings: ServiceSettings) -> FastAPI:
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.threads:
            torch.set_num_threads(settings.threads)
        state.batcher = Batcher(lambda: state.model, state.metrics, max_batch_size=settings.max_batch_size,
                                max_wait_ms=settings.max_wait_ms, max_batch_candidates=settings.max_batch_candidates,
                                max_queue=settings.max_queue, micro_batch=settings.micro_batch)
        state.batcher.start()
        try:
            state.install(await state.batcher.run_in_inference_thread(load_and_warm, settings.run, state.device()))
            # Everything alive now (torch, the model, FastAPI) lives as long as the process: keep
            # the cyclic garbage collector from re-scanning it, which made 100+ ms latency tails.
            gc.collect()
            gc.freeze()
            log.info("model ready", extra={"run": str(settings.run), "version": state.model.version})
        except Exception as error:
            state.metrics.model_loaded.set(0)
            log.error("model failed to load", extra={"run": str(settings.run), "error": str(error)})
            if settings.fail_fast:
                raise
        yield
        await state.batcher.drain(settings.shutdown_timeout_s)
        state.model = None
        state.metrics.model_loaded.set(0)
        gc.unfreeze()

    app = FastAPI(title="rotorec", version=__version__, lifespan=lifespan,
                  description="Sequence ranking for recommender feeds: calibrated per-task probabilities and a ranking.")
    app.state.service = state
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    _install_error_handlers(app, state)
    _install_request_metrics(app, state)

    scoring = Depends(_authorizer(state, admin=False))
    admin = Depends(_authorizer(state, admin=True))

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"])
    async def ready() -> dict:
        _require_model(state)
        if state.draining:
            raise ApiError(503, "shutting down", {"Retry-After": "1"})
        return {"ready": True}

    @app.post("/v1/rank", response_model=RankResponse, dependencies=[scoring], tags=["scoring"])
    async def rank(request: RankRequest) -> Response:
        model = _require_model(state)
        if len(request.candidates) > settings.max_candidates:
            raise FeedError(("body", "candidates"), f"at most {settings.max_candidates} candidates are accepted",
                            len(request.candidates))
        feed = model.feed(request, settings.max_history)
        if model.streams:
            feed.cached = state.states.lookup(model.version, request.user_id, feed)
        scored, scored_by = await _score(state, feed)
        if scored.state is not None:
            state.states.store(request.user_id, scored.state)
        return Response(orjson.dumps(_rank_response(state, request, feed, scored.probabilities, scored_by)),
                        media_type="application/json")

    @app.post("/v1/events", dependencies=[scoring], tags=["scoring"])
    async def events(body: EventsRequest) -> dict:
        """Append a user's new events to their cached state: O(1) per event and layer."""
        model = _require_model(state)
        if not model.streams:
            raise ApiError(409, "per-user state needs a model whose every layer is recurrent (rotrnn/fprnn)")
        feed = model.events_feed(body.events, settings.max_history)
        before = state.states.get(model.version, body.user_id)
        if before is not None and int(feed.history_seconds[0]) < before.last_seconds:
            state.states.drop(model.version, body.user_id)
            return {"user_id": body.user_id, "model": {"name": model.name, "version": model.version},
                    "applied": 0, "events": 0, "dropped": True}
        after = await state.batcher.run_in_inference_thread(model.advance, before, feed)
        state.states.store(body.user_id, after)
        return {"user_id": body.user_id, "model": {"name": model.name, "version": model.version},
                "applied": len(feed.history_items), "events": after.events, "dropped": False}

    @app.post("/admin/reload", dependencies=[admin], tags=["admin"])
    async def reload(body: ReloadRequest) -> dict:
        return await _reload(state, body)

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    from service.inference_protocol import install_v2_routes
    install_v2_routes(app, state, scoring)
    return app


def _require_model(state: ServiceState) -> ServedModel:
    if state.model is None or state.batcher is None or not state.batcher.accepting:
        raise ApiError(503, "no model is loaded and ready", {"Retry-After": "1"})
    return state.model


async def _score(state: ServiceState, feed) -> tuple[Scored, ServedModel]:
    metrics = state.metrics
    metrics.candidates.observe(len(feed.candidate_items))
    metrics.history_events.observe(len(feed.history_items))
    for name, count in feed.oov.items():
        if count:
            metrics.oov.labels(field=name).inc(count)
    try:
        return await state.batcher.score(feed)
    except Overloaded as error:
        raise ApiError(503, str(error), {"Retry-After": "1"}) from None


def _rank_response(state: ServiceState, request: RankRequest, feed, probabilities: np.ndarray,
                   model: ServedModel) -> dict:
    """The RankResponse body as plain JSON types (its schema is RankResponse; built here without
    per-candidate model objects, which cost more than the scoring itself at 1,000 candidates)."""
    tasks = request.tasks or model.tasks
    chosen = probabilities[:, [model.tasks.index(t) for t in tasks]].astype(np.float64)
    blend = request.blend or {task: 1.0 for task in tasks}
    scores = chosen @ np.array([blend.get(task, 0.0) for task in tasks])
    ranking = np.lexsort((np.arange(len(scores)), -scores))[: request.top_k or len(scores)]
    for k, task in enumerate(tasks):
        state.metrics.predicted.observe_many(task, chosen[:, k])
    rows = chosen.tolist()
    return {
        "model": {"name": model.name, "version": model.version}, "request_time": feed.request_time,
        "scores": [{"index": i, "item_id": c.item_id, "probabilities": dict(zip(tasks, rows[i])), "score": float(scores[i])}
                   for i, c in enumerate(request.candidates)],
        "ranking": ranking.tolist(), "oov": OovCounts(**feed.oov).model_dump(), "history_truncated": feed.history_truncated}


async def _reload(state: ServiceState, body: ReloadRequest) -> dict:
    from pathlib import Path

    if state.reload_lock.locked():
        raise ApiError(409, "another reload is running")
    async with state.reload_lock:
        path = Path(body.run)
        try:
            exists = (path / "manifest.json").is_file()
        except (OSError, ValueError):  # a name too long or with NUL bytes: no such run either
            exists = False
        if not exists:
            state.metrics.reloads.labels(result="not_found").inc()
            raise ApiError(404, f"no run at {body.run}")
        try:
            candidate = await asyncio.to_thread(load_and_warm, path, state.device())
        except Exception as error:  # a corrupt or foreign artifact is refused; the old model keeps serving
            state.metrics.reloads.labels(result="refused").inc()
            raise ApiError(409, f"refused {body.run}: {error}") from None
        previous = state.model
        if body.expect_version is not None and candidate.version != body.expect_version:
            state.metrics.reloads.labels(result="refused").inc()
            raise ApiError(409, f"refused {body.run}: version {candidate.version} is not the expected {body.expect_version}")
        if previous is not None and candidate.tasks != previous.tasks:
            state.metrics.reloads.labels(result="refused").inc()
            raise ApiError(409, f"refused {body.run}: tasks {candidate.tasks} differ from the served {previous.tasks}")
        state.install(candidate)
        state.metrics.reloads.labels(result="ok").inc()
        return {"previous": None if previous is None else {"name": previous.name, "version": previous.version},
                "current": {"name": candidate.name, "version": candidate.version}}


def _authorizer(state: ServiceState, admin: bool):
    """Bearer tokens compared in constant time; admin routes are 404 when no admin token is set."""

    async def check(request: Request) -> None:
        settings = state.settings
        if admin and not settings.admin_tokens:
            raise ApiError(404, "not found")
        allowed = settings.admin_tokens if admin else settings.scoring_tokens + settings.admin_tokens
        if not allowed:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
        if any(hmac.compare_digest(token.encode(), t.encode()) for t in allowed):
            return
        if admin and any(hmac.compare_digest(token.encode(), t.encode()) for t in settings.scoring_tokens):
            raise ApiError(403, "this token may not use admin routes")
        raise ApiError(401, "invalid token", {"WWW-Authenticate": "Bearer"})

    return check


def _install_error_handlers(app: FastAPI, state: ServiceState) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        details = [{k: v for k, v in e.items() if k in ("type", "loc", "msg", "input")} for e in error.errors()]
        if request.url.path.startswith("/v2"):
            first = details[0] if details else {"loc": (), "msg": "invalid request"}
            return JSONResponse({"error": f"{'.'.join(map(str, first['loc']))}: {first['msg']}"}, status_code=422)
        return JSONResponse({"detail": _jsonable(details)}, status_code=422)

    @app.exception_handler(FeedError)
    async def unreadable(request: Request, error: FeedError) -> JSONResponse:
        if request.url.path.startswith("/v2"):
            return JSONResponse({"error": f"{'.'.join(map(str, error.loc))}: {error.message}"}, status_code=422)
        detail = {"type": "value_error", "loc": list(error.loc), "msg": error.message, "input": error.value}
        return JSONResponse({"detail": _jsonable([detail])}, status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error", extra={"request_id": request_id, "path": request.url.path})
        return JSONResponse({"error": f"internal error (request id {request_id})"}, status_code=500)


def _jsonable(value):
    """Validation inputs may hold NaN, bytes or other objects; echo them as text in the body."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _install_request_metrics(app: FastAPI, state: ServiceState) -> None:
    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.monotonic()
        state.metrics.inflight.inc()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            state.metrics.inflight.dec()
            # Routing sets scope["route"] inside call_next: label by the path template, never the path.
            template = getattr(request.scope.get("route"), "path", None) or "unmatched"
            state.metrics.requests.labels(route=template, status=str(status)).inc()
            state.metrics.request_seconds.labels(route=template).observe(time.monotonic() - started)
