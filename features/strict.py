"""The pydantic conventions shared by every settings file, artifact and request body rotorec reads.

A misspelt key in a config, schema or manifest must be an error rather than a silently ignored
setting, and a bad value must reach the user as one line naming the field, not a traceback.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


def first_validation_error(exc: ValidationError) -> tuple[str, str]:
    """(dotted location, message) of the first problem pydantic found; the location is empty
    when the whole object is wrong."""
    first = exc.errors()[0]
    return ".".join(str(part) for part in first["loc"]), first["msg"]
