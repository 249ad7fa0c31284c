"""Exception handlers: every failure a route raises becomes an error body of service/errors.py.

`ApiError` carries its status; Starlette's own refusals (unknown path, wrong method, an
undecodable body) and validation errors are answered in the same shapes; anything else is a
bug, logged with a request id and answered 500 with `Connection: close`.
"""

from __future__ import annotations

import logging
import math
import uuid

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from rotorec.service.errors import ApiError, FeedError, error_response, json_response

log = logging.getLogger("rotorec.service")


async def api_error(request: Request, error: ApiError) -> Response:
    return error_response(error.status, error.message, error.headers)


async def http_error(request: Request, error: HTTPException) -> Response:
    return error_response(error.status_code, str(error.detail), error.headers)


async def invalid(request: Request, error: RequestValidationError) -> Response:
    return _unprocessable(request, [{k: v for k, v in e.items() if k in ("type", "loc", "msg", "input")} for e in error.errors()])


async def unreadable(request: Request, error: FeedError) -> Response:
    return _unprocessable(request, [{"type": "value_error", "loc": list(error.loc), "msg": error.message, "input": error.value}])


async def bug(request: Request, error: Exception) -> Response:
    """The connection is closed after the answer: uvicorn drops it anyway once the error
    propagates, and a client told so in advance never loses its next request."""
    request_id = uuid.uuid4().hex[:12]
    log.exception("unhandled error", extra={"request_id": request_id, "path": request.url.path})
    return error_response(500, f"internal error (request id {request_id})", {"Connection": "close"})


HANDLERS = {ApiError: api_error, HTTPException: http_error, RequestValidationError: invalid, FeedError: unreadable, Exception: bug}


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
