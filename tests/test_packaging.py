"""The install: rotorec's folders are importable only as rotorec.*, from anywhere, and claim no generic names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GENERIC = ("features", "model", "training", "service")


@pytest.mark.slow
def test_the_packages_import_as_rotorec_subpackages_from_outside_the_checkout(tmp_path: Path) -> None:
    probe = (
        "import importlib.util, rotorec, rotorec.features.prepare, rotorec.model.ranker, rotorec.training.trainer, "
        "rotorec.service.app; "
        f"print(rotorec.__version__); print([n for n in {GENERIC!r} if importlib.util.find_spec(n) is not None])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    version, claimed = done.stdout.split("\n")[:2]
    assert claimed == "[]", f"top-level modules installed under generic names: {claimed}"
    from importlib.metadata import version as installed_version

    assert version == installed_version("rotorec") and version[0].isdigit()


def test_no_code_imports_the_folders_by_their_bare_names() -> None:
    """`import model` works only by accident of the working directory; every import names rotorec.*."""
    repo = Path(__file__).resolve().parents[1]
    offenders = []
    for path in repo.glob("**/*.py"):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in GENERIC:
                offenders.append(f"{path.relative_to(repo)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
