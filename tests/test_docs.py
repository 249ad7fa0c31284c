"""The repository explains itself: every design note the code cites is in docs/, under the heading
the citation names, and nothing points at documents outside the checkout."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CITATION = re.compile(r'docs/(\w+\.md),?\s+"([^"]+)"')
OUTSIDE = re.compile(r"\b(siren_rope|recurrent_mixers|scan_kernels)\.md|shared/specs|(?<![/\w])(serving|evaluation)\.md")


def tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    suffixes = {".py", ".md", ".yaml", ".yml", ".cpp", ".sh", ".toml"}
    return [REPO / name for name in listed.splitlines() if Path(name).suffix in suffixes and (REPO / name).is_file()]


def headings(doc: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in doc.read_text(encoding="utf-8").splitlines() if line.startswith("#")}


def test_no_file_cites_a_document_outside_the_repository() -> None:
    offenders = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                 for path in tracked_text_files() if path.parent.name != "docs" and path.name != "test_docs.py"
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if OUTSIDE.search(line)]
    assert not offenders, "\n".join(offenders)


def test_every_cited_docs_section_exists() -> None:
    known = {doc.name: headings(doc) for doc in (REPO / "docs").glob("*.md")}
    missing = []
    for path in tracked_text_files():
        text = " ".join(path.read_text(encoding="utf-8").split())  # citations may wrap across lines
        for doc, heading in CITATION.findall(text):
            if heading not in known.get(doc, set()):
                missing.append(f"{path.relative_to(REPO)} cites docs/{doc}, \"{heading}\"")
    assert not missing, "\n".join(sorted(set(missing)))


def test_the_readme_links_the_docs_index() -> None:
    assert "docs/README.md" in (REPO / "README.md").read_text(encoding="utf-8")
    for line in (REPO / "docs" / "README.md").read_text(encoding="utf-8").splitlines():
        for name in re.findall(r"\(?(\w+\.md)\)?", line):
            assert (REPO / "docs" / name).is_file() or name == "README.md", name
