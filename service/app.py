"""The FastAPI app (docs/serving.md): `create_app(settings)` builds it; the lifespan loads the run.

Importing this module loads nothing. At start the run is loaded with training's own loader
(checksums, strict weights), warmed up through the real scoring path, and only then reported
ready; if that fails the process stays live and answers 503 (or exits, with fail_fast).
Scoring goes through the dynamic batcher, each request with the one model snapshot it read
when it arrived (service/dependencies.py); shutdown drains queued and running work before
releasing the model. The routes live in routers (service/routes/, service/inference_protocol.py);
here they are mounted behind the middlewares, outermost first: request metrics, bearer auth
(before a body is read), the body-size cap.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from rotorec import __version__
from rotorec.service import inference_protocol
from rotorec.service.auth import BearerAuth
from rotorec.service.batcher import Batcher
from rotorec.service.error_handlers import HANDLERS
from rotorec.service.limits import BodySizeLimit
from rotorec.service.metrics import request_metrics
from rotorec.service.routes import admin, events, health, rank
from rotorec.service.settings import ServiceSettings
from rotorec.service.state import ServiceState, load_and_warm

log = logging.getLogger("rotorec.service")
ROUTERS = (health.router, rank.router, events.router, admin.router, inference_protocol.router)


def create_app(settings: ServiceSettings) -> FastAPI:
    state = ServiceState(settings)
    app = FastAPI(
        title="rotorec",
        version=__version__,
        lifespan=_lifespan,
        exception_handlers=HANDLERS,
        description="Sequence ranking for recommender feeds: calibrated per-task probabilities and a ranking.",
    )
    app.state.service = state
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BearerAuth, scoring_tokens=settings.scoring_tokens, admin_tokens=settings.admin_tokens)
    app.middleware("http")(request_metrics(state.metrics))
    for router in ROUTERS:
        app.include_router(router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    state: ServiceState = app.state.service
    settings = state.settings
    if settings.threads:
        torch.set_num_threads(settings.threads)
    state.batcher = Batcher(
        state.metrics,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_batch_candidates=settings.max_batch_candidates,
        max_queue=settings.max_queue,
        micro_batch=settings.micro_batch,
    )
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
