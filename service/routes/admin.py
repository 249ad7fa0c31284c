"""`POST /admin/reload`, behind an admin token; what a reload checks is in service/reloads.py."""

from __future__ import annotations

from fastapi import APIRouter, Request

from rotorec.service.dependencies import Principal, State
from rotorec.service.errors import declared
from rotorec.service.reloads import reload as reload_run
from rotorec.service.schemas import ReloadRequest

router = APIRouter(tags=["admin"])


@router.post("/admin/reload", responses=declared(400, 401, 403, 404, 409, 413))
async def reload(body: ReloadRequest, request: Request, state: State, who: Principal) -> dict:
    client = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
    return await reload_run(state, body, who=who, client=client)
