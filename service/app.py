"""The FastAPI app (docs/serving.md): `create_app(settings)` builds it; the lifespan loads the run.

Importing this module loads nothing. At start the run is loaded with training's own loader
(checksums, strict weights), warmed up through the real scoring path, and only then reported
ready; if that fails the process stays live and answers 503 (or exits, with fail_fast).
Scoring goes through the dynamic batcher, each request with the one model snapshot it read
when it arrived; `POST /admin/reload` (service/reloads.py) swaps in a new run atomically;
shutdown drains queued and running work before releasing the model. Auth (service/auth.py) is
checked before a body is read; every error body is rendered by service/errors.py, and an
unexpected error answers 500 with `Connection: close`.
"""

from __future__ import annotations

import gc
import logging
import math
import time
import uuid
from contextlib import asynccontextmanager

import numpy as np
import orjson
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from rotorec import __version__
from service.auth import PRINCIPAL, BearerAuth
from service.batcher import Batcher
from service.errors import ApiError, FeedError, declared, error_response, json_response
from service.feeds import ServedModel
from service.inference_protocol import install_v2_routes
from service.limits import BodySizeLimit, at_most
from service.reloads import reload as reload_run
from service.schemas import EventsRequest, OovCounts, RankRequest, RankResponse, ReloadRequest
from service.settings import ServiceSettings
from service.state import ServiceState, load_and_warm

log = logging.getLogger("rotorec.service")


def create_app(settings: ServiceSettings) -> FastAPI:
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.threads:
            torch.set_num_threads(settings.threads)
        state.batcher = Batcher(state.metrics, max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
                                max_batch_candidates=settings.max_batch_candidates, max_queue=settings.max_queue,
                                micro_batch=settings.micro_batch)
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
    app.add_middleware(BearerAuth, scoring_tokens=settings.scoring_tokens, admin_tokens=settings.admin_tokens)
    _install_error_handlers(app)
    _install_request_metrics(app, state)

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"], responses=declared(503))
    async def ready() -> dict:
        state.require_model()
        if state.draining:
            raise ApiError(503, "shutting down", {"Retry-After": "1"})
        return {"ready": True}

    @app.post("/v1/rank", response_model=RankResponse, tags=["scoring"], responses=declared(400, 401, 413, 503))
    async def rank(request: RankRequest) -> Response:
        model = state.require_model()
        at_most(len(request.candidates), settings.max_candidates, ("body", "candidates"), "candidates")
        feed = model.feed(request, settings.max_history)
        if model.streams:
            feed.cached = state.states.lookup(model.version, request.user_id, feed)
        (scored,) = await state.score(model, [feed])
        if scored.state is not None:
            state.states.store(request.user_id, scored.state)
        return Response(orjson.dumps(_rank_response(state, request, feed, scored.probabilities, model)),
                        media_type="application/json")

    @app.post("/v1/events", tags=["scoring"], responses=declared(400, 401, 409, 413, 503))
    async def events(body: EventsRequest) -> dict:
        """Append a user's new events to their cached state: O(1) per event and layer."""
        model = state.require_model()
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

    @app.post("/admin/reload", tags=["admin"], responses=declared(400, 401, 403, 404, 409, 413))
    async def reload(body: ReloadRequest, request: Request) -> dict:
        client = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        return await reload_run(state, body, who=request.scope["state"][PRINCIPAL], client=client)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    install_v2_routes(app, state)
    return app


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


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        """Starlette's own refusals (unknown path, wrong method, an undecodable body) in our shape."""
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        return _unprocessable(request, [{k: v for k, v in e.items() if k in ("type", "loc", "msg", "input")}
                                        for e in error.errors()])

    @app.exception_handler(FeedError)
    async def unreadable(request: Request, error: FeedError) -> Response:
        return _unprocessable(request, [{"type": "value_error", "loc": list(error.loc), "msg": error.message,
                                         "input": error.value}])

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> Response:
        """A server bug. The connection is closed after the answer: uvicorn drops it anyway once
        the error propagates, and a client told so in advance never loses its next request."""
        request_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error", extra={"request_id": request_id, "path": request.url.path})
        return error_response(500, f"internal error (request id {request_id})", {"Connection": "close"})


def _unprocessable(request: Request, details: list[dict]) -> Response:
    """422 in the shape of the route family: /v2 `{"error": "<loc>: <msg>"}` (first problem),
    elsewhere pydantic's list of details, each echoing its input."""
    if request.url.path.startswith("/v2"):
        first = details[0] if details else {"loc": (), "msg": "invalid request"}
        return error_response(422, f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
    return json_response({"detail": _jsonable(details)}, 422)


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
