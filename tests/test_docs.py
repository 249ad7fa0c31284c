"""The repository explains itself: every design note the code cites is in docs/, under the heading
the citation names, and nothing points at documents outside the checkout."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CITATION = re.compile(r'docs/(\w+\.md),?\s+"([^"]+)"')
MARKDOWN_NAME = re.compile(r"[\w./-]*\w\.md\b")
WRITTEN_BY_ROTOREC = {"report.md", "comparison.md"}  # `rotorec evaluate` outputs, not documents
TEAM_DATA_README = "../shared/data/README.md"  # the datasets' licences, which are never committed


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
    """Every Markdown file a tracked file names is one the repository holds (by path, by file name,
    or beside the citing file), an output rotorec writes, or the team data's README."""
    tracked = tracked_text_files()
    held = {path.relative_to(REPO).as_posix() for path in tracked if path.suffix == ".md"}
    offenders = []
    for path in tracked:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in MARKDOWN_NAME.findall(line):
                beside = (path.parent / name).resolve()
                if (
                    name in held
                    or name in WRITTEN_BY_ROTOREC
                    or name == TEAM_DATA_README
                    or any(h.endswith(f"/{name}") for h in held)
                    or (beside.is_file() and beside.is_relative_to(REPO))
                ):
                    continue
                offenders.append(f"{path.relative_to(REPO)}:{number}: {name}")
    assert not offenders, "\n".join(offenders)


def test_every_cited_docs_section_exists() -> None:
    known = {doc.name: headings(doc) for doc in (REPO / "docs").glob("*.md")}
    missing = []
    for path in tracked_text_files():
        text = " ".join(path.read_text(encoding="utf-8").split())  # citations may wrap across lines
        for doc, heading in CITATION.findall(text):
            if heading not in known.get(doc, set()):
                missing.append(f'{path.relative_to(REPO)} cites docs/{doc}, "{heading}"')
    assert not missing, "\n".join(sorted(set(missing)))


def test_the_readme_links_the_docs_index() -> None:
    assert "docs/README.md" in (REPO / "README.md").read_text(encoding="utf-8")
    for line in (REPO / "docs" / "README.md").read_text(encoding="utf-8").splitlines():
        for name in re.findall(r"\(?(\w+\.md)\)?", line):
            assert (REPO / "docs" / name).is_file() or name == "README.md", name
