"""Bearer-token auth (docs/serving.md, Auth), checked before a request body is read or parsed.

A pure ASGI middleware in front of the body-size limit: an unauthenticated client can make the
service neither buffer nor parse anything (a FastAPI dependency would run only after the body
was read and decoded). Which token a route needs follows from its path alone: scoring tokens
guard /v1/* and /v2/models/* (except readiness), admin tokens guard /admin/*, which is 404 when
no admin token is configured. Tokens are compared in constant time and never logged; the
caller is recorded as `admin#k` / `scoring#k` (the token's position) for audit logs.
"""

from __future__ import annotations

import hmac
import logging
from typing import Literal

from rotorec.service.errors import ApiError, error_response

log = logging.getLogger("rotorec.service.audit")
Role = Literal["scoring", "admin"]
PRINCIPAL = "principal"  # key in the ASGI scope's "state": who made the request


def required_role(path: str) -> Role | None:
    if path.startswith("/admin/"):
        return "admin"
    if path.startswith("/v1/") or (path.startswith("/v2/models/") and not path.endswith("/ready")):
        return "scoring"
    return None


def _match(token: str, tokens: list[str]) -> int | None:
    """Position of `token` in `tokens`, comparing every entry in constant time."""
    found = None
    for k, candidate in enumerate(tokens):
        if hmac.compare_digest(token.encode(), candidate.encode()):
            found = k
    return found


class BearerAuth:
    def __init__(self, app, scoring_tokens: list[str], admin_tokens: list[str]) -> None:
        self.app, self.scoring_tokens, self.admin_tokens = app, scoring_tokens, admin_tokens

    async def __call__(self, scope, receive, send) -> None:
        role = required_role(scope["path"]) if scope["type"] == "http" else None
        if role is not None:
            try:
                principal = self._principal(role, dict(scope.get("headers") or []).get(b"authorization", b""))
            except ApiError as refused:
                if role == "admin":  # part of the reload audit trail: who was turned away
                    host, port = scope.get("client") or ("unknown", 0)
                    log.warning(
                        "admin request refused",
                        extra={"path": scope["path"], "client": f"{host}:{port}", "status": refused.status, "detail": refused.message},
                    )
                return await error_response(refused.status, refused.message, refused.headers)(scope, receive, send)
            scope.setdefault("state", {})[PRINCIPAL] = principal
        await self.app(scope, receive, send)

    def _principal(self, role: Role, header: bytes) -> str:
        """Who is calling (`admin#k`, `scoring#k`, or `anonymous` where scoring is open)."""
        if role == "admin" and not self.admin_tokens:
            raise ApiError(404, "not found")
        if role == "scoring" and not (self.scoring_tokens or self.admin_tokens):
            return "anonymous"
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
        admin, scoring = _match(token, self.admin_tokens), _match(token, self.scoring_tokens)
        if admin is not None:
            return f"admin#{admin + 1}"
        if scoring is None:
            raise ApiError(401, "invalid token", {"WWW-Authenticate": "Bearer"})
        if role == "admin":
            raise ApiError(403, "this token may not use admin routes")
        return f"scoring#{scoring + 1}"
