"""No Docker engine runs here: the images are checked by review and by this test, which makes
sure every file they copy, every file compose mounts from the repo, and every command line
they run exist and parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from rotorec.cli import build_parser

DOCKER = REPO / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_existing_paths_runs_as_non_root_and_checks_readiness(dockerfile: Path) -> None:
    steps = _instructions(dockerfile)
    for kind, argument in steps:
        if kind == "COPY":
            for source in shlex.split(argument)[:-1]:
                assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, which is not in the repo"
    users = [argument for kind, argument in steps if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = " ".join(argument for kind, argument in steps if kind == "HEALTHCHECK")
    assert "/v2/health/ready" in health
    command = next(argument for kind, argument in reversed(steps) if kind == "CMD")
    words = [w.strip('"') for w in re.findall(r'"[^"]*"', command)]
    assert words[0] == "rotorec"
    args = build_parser().parse_args(words[1:])  # every flag exists and parses
    assert args.command == "serve" and str(args.run) == "/srv/run"


def test_compose_references_existing_files_and_the_cpu_image() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    ranker = compose["services"]["ranker"]
    assert (DOCKER / ranker["build"]["context"] / ranker["build"]["dockerfile"]).is_file()
    assert ranker["deploy"]["replicas"] >= 2
    for volume in compose["services"]["lb"]["volumes"]:
        assert (DOCKER / volume.split(":")[0]).is_file(), volume
    for secret in compose["secrets"].values():
        assert (DOCKER / (secret["file"] + ".example")).is_file(), f"{secret['file']} has no .example template"
    assert "rankers" in (DOCKER / "nginx.conf").read_text()
