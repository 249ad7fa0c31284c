"""Hot reload (docs/serving.md, Model snapshots and hot reload), confined to the runs root and audited.

`POST /admin/reload` names a run folder, absolute or relative to the runs root
(`--runs-root`, default the parent of the served run). The folder, after resolving symlinks,
must lie inside the root, and every file the loader will open (the manifest, the calibration
and each file the manifest lists) inside the folder: this is checked before any of them is
read, so a crafted path or manifest cannot make the service open, measure or describe a file
elsewhere. The run is then verified and warmed up beside the served one and swapped in with one
assignment. Every attempt is logged as one structured line: who, what, and the outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from rotorec.service.errors import ApiError
from rotorec.service.schemas import ReloadRequest
from rotorec.service.state import ServiceState, load_and_warm
from rotorec.training.run import CALIBRATION_FILE, MANIFEST_FILE

log = logging.getLogger("rotorec.service.audit")


class RunNotFound(LookupError):
    """No run folder by that name inside the runs root."""


class RunRefused(ValueError):
    """A run folder whose manifest points outside it."""


class ReloadFailed(ApiError):
    """A refused reload; `outcome` is its label in logs and `ranker_model_reloads_total`."""

    def __init__(self, status: int, outcome: str, message: str) -> None:
        super().__init__(status, message)
        self.outcome = outcome


def _inside(path: Path, folder: Path, *, file: bool = False) -> bool:
    """Whether `path`, symlinks resolved, lies inside `folder` (and is a regular file, if `file`);
    False for names the system cannot look up (too long, a NUL byte, a symlink loop)."""
    try:
        return path.resolve().is_relative_to(folder) and (not file or path.is_file())
    except (OSError, ValueError, RuntimeError):
        return False


def confined_run(requested: str, root: Path) -> Path:
    """The resolved run folder `requested` names, if it is a run inside `root` whose loader
    inputs all stay inside it; raises RunNotFound or RunRefused otherwise."""
    base = root.resolve()
    folder = base / requested
    if not _inside(folder, base):
        raise RunNotFound(f"{requested} is not inside the runs root {base}")
    folder = folder.resolve()
    if not _inside(folder / MANIFEST_FILE, folder, file=True):
        raise RunNotFound(f"no run at {requested} (no {MANIFEST_FILE} inside it)")
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunRefused(f"{MANIFEST_FILE} is not readable JSON") from None
    files = manifest.get("files", {}) if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise RunRefused(f"{MANIFEST_FILE} has no 'files' table")
    for name in [CALIBRATION_FILE, *files]:
        if not _inside(folder / name, folder):
            raise RunRefused(f"{MANIFEST_FILE} names {name!r}, which is not a file inside the run")
    return folder


async def reload(state: ServiceState, body: ReloadRequest, who: str, client: str) -> dict:
    attempt = {"who": who, "client": client, "run": body.run, "expect_version": body.expect_version}
    try:
        previous, current = await _swap(state, body)
    except ReloadFailed as failed:
        state.metrics.reloads.labels(result=failed.outcome).inc()
        log.warning("reload refused", extra={**attempt, "outcome": failed.outcome, "detail": failed.message})
        raise
    state.metrics.reloads.labels(result="ok").inc()
    before = None if previous is None else {"name": previous.name, "version": previous.version}
    after = {"name": current.name, "version": current.version}
    log.info("reload", extra={**attempt, "outcome": "ok", "folder": str(current.run.folder), "previous": before, "current": after})
    return {"previous": before, "current": after}


async def _swap(state: ServiceState, body: ReloadRequest):
    if state.reload_lock.locked():
        raise ReloadFailed(409, "busy", "another reload is running")
    async with state.reload_lock:
        try:
            folder = await asyncio.to_thread(confined_run, body.run, state.settings.reload_root)
        except RunNotFound as error:
            raise ReloadFailed(404, "not_found", str(error)) from None
        except RunRefused as error:
            raise ReloadFailed(409, "refused", f"refused {body.run}: {error}") from None
        try:
            candidate = await asyncio.to_thread(load_and_warm, folder, state.device())
        except Exception as error:  # a corrupt or foreign artifact is refused; the old model keeps serving
            raise ReloadFailed(409, "refused", f"refused {body.run}: {error}") from None
        previous = state.model
        if body.expect_version is not None and candidate.version != body.expect_version:
            raise ReloadFailed(409, "refused", f"refused {body.run}: version {candidate.version} is not the expected {body.expect_version}")
        if previous is not None and candidate.tasks != previous.tasks:
            raise ReloadFailed(409, "refused", f"refused {body.run}: tasks {candidate.tasks} differ from the served {previous.tasks}")
        state.install(candidate)
        return previous, candidate
