"""What a route may ask FastAPI for: the app's state, the model snapshot it serves the request
with, and who is calling.

`Model` is read once per request, when FastAPI resolves the route's dependencies, and is the
snapshot that featurizes, scores and labels that request to the end, whatever a hot reload
swaps in meanwhile (503 while none is ready). The caller is authenticated by a middleware
(service/auth.py) before the body is read, which no dependency could do; `Principal` is who it
found.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rotorec.service.auth import PRINCIPAL
from rotorec.service.scoring import ServedModel
from rotorec.service.state import ServiceState


def service_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(service_state)]


def model_snapshot(state: State) -> ServedModel:
    return state.require_model()


Model = Annotated[ServedModel, Depends(model_snapshot)]


def principal(request: Request) -> str:
    return request.scope["state"][PRINCIPAL]


Principal = Annotated[str, Depends(principal)]
