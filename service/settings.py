"""Service settings: limits, batching, auth. From `rotorec serve` flags and the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def tokens_from_env(name: str) -> list[str]:
    """Comma-separated tokens from $NAME, or from the file named by $NAME_FILE (secrets mounts)."""
    path = os.environ.get(f"{name}_FILE")
    text = Path(path).read_text(encoding="utf-8") if path else os.environ.get(name, "")
    return [token.strip() for token in text.replace("\n", ",").split(",") if token.strip()]


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: Path
    runs_root: Path | None = Field(None, description="/admin/reload loads only runs inside this folder "
                                                     "(default: the parent of `run`)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_history: int = Field(2048, ge=0)
    max_candidates: int = Field(1000, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_batch_size: int = Field(32, ge=1, description="requests per forward pass (1 = no cross-request batching)")
    max_wait_ms: float = Field(2.0, ge=0, description="how long a batch waits for more requests (0 = never)")
    max_batch_candidates: int = Field(8192, ge=1)
    max_queue: int = Field(1024, ge=1)
    micro_batch: int = Field(256, ge=1, description="candidates per model call inside a forward pass")
    scoring_tokens: list[str] = Field(default_factory=list)
    admin_tokens: list[str] = Field(default_factory=list)
    state_cache_entries: int = Field(10_000, ge=0, description="users with a cached state (recurrent models)")
    state_cache_bytes: int = Field(256 * 1024 * 1024, ge=0)
    state_cache_ttl_s: float = Field(3600.0, gt=0)
    drain_s: float = Field(5.0, ge=0, description="after SIGTERM: not ready, still serving, for this long")
    shutdown_timeout_s: float = Field(30.0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads")
    fail_fast: bool = False

    @property
    def reload_root(self) -> Path:
        return self.runs_root if self.runs_root is not None else self.run.resolve().parent

    @classmethod
    def from_env(cls, **values: object) -> ServiceSettings:
        values.setdefault("scoring_tokens", tokens_from_env("ROTOREC_SCORING_TOKENS"))
        values.setdefault("admin_tokens", tokens_from_env("ROTOREC_ADMIN_TOKENS"))
        return cls.model_validate(values)
