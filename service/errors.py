"""How the service reports failures (docs/serving.md, Errors): error types, one safe JSON renderer, and the
error responses each route declares in its OpenAPI document.

Every error body is rendered here, whether it comes from a route, a validation handler or an
ASGI middleware that answers before routing (auth, body size). The renderer never fails on
what a client sent: echoed text that cannot be encoded as UTF-8 (a lone surrogate decoded from
a JSON escape) is replaced, so a hostile input can never turn a 4xx into a 500.
"""

from __future__ import annotations

import json

from pydantic import BaseModel
from starlette.responses import Response


class ApiError(Exception):
    """A refusal with its HTTP status, a message naming what failed, and optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class FeedError(ValueError):
    """A request the model cannot read; `loc` names the failing field as pydantic would."""

    def __init__(self, loc: tuple, message: str, value: object = None) -> None:
        super().__init__(message)
        self.loc, self.message, self.value = loc, message, value


def json_bytes(content: object) -> bytes:
    """JSON for an error body; unencodable characters become '?' instead of raising."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8", "replace")


def json_response(content: object, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json_bytes(content), status_code=status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


class ErrorBody(BaseModel):
    """The body of every error except /v1 validation errors (which list pydantic's details)."""

    error: str


_MEANING = {
    400: "the body is not decodable JSON",
    401: "missing or invalid bearer token (WWW-Authenticate: Bearer)",
    403: "a scoring token on an admin route",
    404: "unknown model, version or run",
    409: "refused: a reload that failed verification, another reload running, or a model without per-user state",
    413: "request body larger than the configured limit",
    422: "invalid request: the message names the failing field",
    503: "no model loaded, shutting down, or the scoring queue is full (Retry-After)",
}


def declared(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for a route's error statuses, all with the `{"error": ...}` body."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]} for status in statuses}
