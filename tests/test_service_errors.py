"""Error answers: a server bug is a 500 that closes the connection, and every error body,
whoever renders it, survives text that cannot be encoded."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from rotorec.service.app import create_app
from rotorec.service.errors import error_response, json_bytes
from rotorec.service.settings import ServiceSettings


def test_an_unexpected_error_is_a_500_that_closes_the_connection() -> None:
    app = create_app(ServiceSettings(run=Path("unused"), device="cpu"))  # the lifespan (model load) never runs

    @app.get("/broken")
    async def broken() -> dict:
        raise RuntimeError("a bug")

    response = TestClient(app, raise_server_exceptions=False).get("/broken")
    assert response.status_code == 500 and response.headers["connection"] == "close"
    assert response.json()["error"].startswith("internal error (request id ")


def test_error_bodies_replace_what_utf8_cannot_encode() -> None:
    assert json_bytes({"error": "bad \ud800 text"}) == b'{"error":"bad ? text"}'
    response = error_response(422, "input: \udc00")
    assert response.status_code == 422 and response.body == b'{"error":"input: ?"}'
