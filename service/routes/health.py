"""Routes for orchestrators and scrapers, open without a token: liveness, readiness, metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rotorec.service.dependencies import State, model_snapshot
from rotorec.service.errors import ApiError, declared

router = APIRouter(tags=["health"])


@router.get("/v2/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/v2/health/ready", responses=declared(503), dependencies=[Depends(model_snapshot)])
async def ready(state: State) -> dict:
    if state.draining:
        raise ApiError(503, "shutting down", {"Retry-After": "1"})
    return {"ready": True}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
