"""Shared fixtures: a tiny synthetic feed and its prepared form, real-data location, CLI runner,
a real `rotorec serve` process (Server, with the `calibrated_run` and `server` fixtures of the service tests),
and `ranks_against`, the numpy full-catalogue rank the retrieval tests check the package's against."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels run in Triton's CPU interpreter (read when they are
    # defined, so before any test imports them); with one they are compiled and run for real.
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROTOREC_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of a team dataset, or skip the test with the reason it cannot run."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"needs the team dataset {path} (../shared/data is absent on this machine)")
    return path


def ranks_against(scores: np.ndarray, target_scores: np.ndarray, is_target: np.ndarray | None = None) -> np.ndarray:
    """r = 1 + #{s_j > s_t} + #{j ≠ t: s_j = s_t} per row of `scores` [N, V]: ties count against."""
    at_least = (scores >= target_scores[:, None]).sum(axis=1)
    return at_least if is_target is None else at_least - is_target.sum(axis=1) + 1


def run_rotorec(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess, as a user would."""
    # One thread per job: the suite already runs one worker per core (pytest -n 2).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "rotorec", "--log-level", "WARNING", *args], capture_output=True, text=True, cwd=REPO, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"rotorec {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def tiny_feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rotorec.features.synth.config import SynthConfig
    from rotorec.features.synth.writer import write_feed

    out = tmp_path_factory.mktemp("tiny_feed")
    write_feed(SynthConfig.from_preset("tiny", seed=7), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_prepared(tiny_feed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rotorec.features.adapters.events import events_source
    from rotorec.features.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("tiny_prepared") / "data"
    prepare(events_source(tiny_feed), out, PrepareOptions(max_len=50, windows="all", progress=False))
    return out


@pytest.fixture(scope="session")
def trained_run(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained run on the tiny feed (a real `rotorec train`, not a fixture model)."""
    out = tmp_path_factory.mktemp("run") / "run"
    run_rotorec(
        "train",
        "--data",
        str(tiny_prepared),
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "train.max_steps=30",
        "--set",
        "train.eval_every=15",
        "--set",
        "model.d_model=32",
        "--set",
        "train.batch_size=16",
        "--set",
        "model.item_age=true",  # so the service tests score item ages through the whole path
    )
    return out


SCORING, ADMIN = "scoring-token", "admin-token"
AUTH = {"Authorization": f"Bearer {SCORING}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`rotorec serve` in a subprocess; stopped with SIGTERM, which must end it cleanly. Its
    output goes to a file, not a pipe: a server logging many errors must fail a test, not block
    on a full pipe nobody reads."""

    def __init__(self, run: Path, *extra: str, drain: float = 0.2) -> None:
        from rotorec.service.sample import wait_until_ready  # imported when a test starts a server, not by every test

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ROTOREC_SCORING_TOKENS": SCORING, "ROTOREC_ADMIN_TOKENS": ADMIN}
        self.output = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rotorec",
                "--log-level",
                "WARNING",
                "serve",
                "--run",
                str(run),
                "--port",
                str(self.port),
                "--threads",
                "1",
                "--drain",
                str(drain),
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until_ready(self.url, 90, alive=lambda: self.process.poll() is None)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"server did not become ready: {self.log()}") from None

    def log(self) -> str:
        self.output.seek(0)
        return self.output.read()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.process.kill()


@pytest.fixture(scope="module")
def calibrated_run(trained_run: Path, tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("served") / "run"
    shutil.copytree(trained_run, run)
    run_rotorec("evaluate", "--run", str(run), "--data", str(tiny_prepared), "--out", str(run.parent / "report"))
    return run


@pytest.fixture(scope="module")
def server(calibrated_run: Path):
    server = Server(calibrated_run, "--max-batch-size", "16", "--max-wait-ms", "5")
    yield server
    assert server.stop() == 0
