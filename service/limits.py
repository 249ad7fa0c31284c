"""Request size limits (docs/serving.md, Limits): the body cap, and how much work one request may ask for.

The body cap is answered with 413 before parsing, from Content-Length and while reading. The
work caps (candidates, history events) hold per request in total, whatever the route: a
/v2 request with many rows counts the sum over its rows, as one /v1/rank request would.
"""

from __future__ import annotations

from rotorec.service.errors import FeedError, error_response


def at_most(count: int, limit: int, loc: tuple, what: str) -> None:
    """Refuse (422, naming the field) a request that carries more than `limit` of `what`."""
    if count > limit:
        raise FeedError(loc, f"at most {limit} {what} are accepted per request, got {count}", count)


class BodySizeLimit:
    """Pure ASGI middleware: reads the body up to the cap, then replays it to the app."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large()(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._too_large()(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self):
        return error_response(413, f"request body exceeds {self.max_bytes} bytes")
