"""`POST /admin/reload` is confined to the runs root, reads nothing a crafted manifest points to
outside the run, never describes an outside file, and logs every attempt (who, what, outcome).

In-process (FastAPI's TestClient): the audit lines are read with caplog.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rotorec.service.app import create_app
from rotorec.service.settings import ServiceSettings

ADMIN = {"Authorization": "Bearer admin-token"}
SECRET = "do not read me\n" * 777  # 11,655 bytes

pytestmark = pytest.mark.slow  # every test uses the suite's run trained by a `rotorec train` subprocess


@pytest.fixture(scope="module")
def layout(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """root/{served, crafted, escaping, link -> outside/run}, outside/{run, secret.txt}."""
    base = tmp_path_factory.mktemp("reload_root")
    root, outside = base / "root", base / "outside"
    shutil.copytree(trained_run, root / "served", ignore=shutil.ignore_patterns("checkpoint", "tensorboard"))
    shutil.copytree(root / "served", outside / "run")
    (outside / "secret.txt").write_text(SECRET)
    crafted = root / "crafted"
    shutil.copytree(root / "served", crafted)
    manifest = json.loads((crafted / "manifest.json").read_text())
    manifest["files"][str(outside / "secret.txt")] = {"sha256": "0" * 64, "bytes": 1}
    manifest["files"]["../outside/secret.txt"] = {"sha256": "0" * 64, "bytes": 1}
    (crafted / "manifest.json").write_text(json.dumps(manifest))
    escaping = root / "escaping"
    shutil.copytree(root / "served", escaping)
    (escaping / "schema.json").unlink()
    (escaping / "schema.json").symlink_to(outside / "secret.txt")
    (root / "link").symlink_to(outside / "run")
    return {"root": root, "outside": outside}


def _app(run: Path, **settings):
    return create_app(ServiceSettings(run=run, device="cpu", admin_tokens=["admin-token"], **settings))


def _audit(caplog: pytest.LogCaptureFixture, *events: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rotorec.service.audit" and r.getMessage() in events]


def test_reloads_stay_inside_the_runs_root_and_every_attempt_is_logged(layout, caplog) -> None:
    root, outside = layout["root"], layout["outside"]
    refused = {  # run -> status
        "../outside/run": 404,
        str(outside / "run"): 404,
        f"/proc/self/root{outside / 'run'}": 404,
        "link": 404,
        "/etc": 404,
        "nonexistent": 404,
        "crafted": 409,
        "escaping": 409,
        "x\u0000y": 404,
        "\u1e70" * 2000: 404,
    }
    caplog.set_level(logging.INFO, logger="rotorec.service.audit")
    with TestClient(_app(root / "served")) as client:
        answers = {run: client.post("/admin/reload", json={"run": run}, headers=ADMIN) for run in refused}
        by_name = client.post("/admin/reload", json={"run": "served"}, headers=ADMIN)
        by_path = client.post("/admin/reload", json={"run": str(root / "served")}, headers=ADMIN)
        unauthorized = client.post("/admin/reload", json={"run": "served"}, headers={"Authorization": "Bearer guess"})
    for run, status in refused.items():
        response = answers[run]
        assert response.status_code == status, (run, response.text)
        text = response.json()["error"]
        assert "do not read" not in text and str(len(SECRET)) not in text and "bytes" not in text, text
    assert "not inside the runs root" in answers["../outside/run"].json()["error"]
    assert "secret.txt" in answers["crafted"].json()["error"] and "schema.json" in answers["escaping"].json()["error"]
    assert by_name.status_code == 200 and by_path.status_code == 200, (by_name.text, by_path.text)

    assert unauthorized.status_code == 401
    (turned_away,) = _audit(caplog, "admin request refused")
    assert turned_away.status == 401 and turned_away.path == "/admin/reload" and "guess" not in str(vars(turned_away))
    lines = _audit(caplog, "reload", "reload refused")
    assert len(lines) == len(refused) + 2
    assert all(line.who == "admin#1" and line.client for line in lines)
    assert [line.outcome for line in lines] == ["not_found" if s == 404 else "refused" for s in refused.values()] + ["ok", "ok"]
    assert [line.run for line in lines[:-2]] == list(refused)
    assert lines[-1].levelno == logging.INFO and lines[-1].current["version"] and lines[0].levelno == logging.WARNING


def test_runs_root_is_configurable(layout) -> None:
    root, outside = layout["root"], layout["outside"]
    with TestClient(_app(root / "served", runs_root=outside)) as client:
        assert client.post("/admin/reload", json={"run": "run"}, headers=ADMIN).status_code == 200
        assert client.post("/admin/reload", json={"run": str(root / "served")}, headers=ADMIN).status_code == 404
