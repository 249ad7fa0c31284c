"""Errors the features stage raises on purpose.

They carry a one-line message that the CLI prints without a traceback: a user who points
`rotorec prepare` at the wrong file needs to know which file and what is wrong with it, not
where in our code the problem surfaced.
"""

from __future__ import annotations

from pathlib import Path


class FeaturesError(Exception):
    """Base class: anything the CLI reports as `rotorec: error: <message>`."""


class LogReadError(FeaturesError):
    """The input is not a readable event log (wrong format, corrupt, missing columns)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class SchemaError(FeaturesError):
    """A log schema (YAML or CLI flags) is inconsistent or names something that does not exist."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The gist of a library error, safe to print on one terminal line."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
