"""Serve settings, declared once: each default and description lives here, and `rotorec serve`'s
flags (service/cli.py) are built from them, so a flag and the setting behind it cannot disagree.

Values come, first found first: a flag; a file named by `ROTOREC_<SETTING>_FILE` (the Docker and
Kubernetes secrets convention, which docker/compose.yaml uses for the tokens); the variable
`ROTOREC_<SETTING>`; a file named like that variable in the secrets directory
(`rotorec serve --secrets-dir`); the default. Tokens are one text, separated by commas or newlines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

Tokens = Annotated[list[str], NoDecode]  # one text from the environment or a file, split by the validator


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROTOREC_", extra="forbid")

    run: Path = Field(description="run folder written by `rotorec train`")
    runs_root: Path | None = Field(
        None, description="POST /admin/reload loads only run folders inside this one (default: the parent of the run)"
    )
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, description="port to listen on")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available")
    max_history: int = Field(2048, ge=0)
    max_candidates: int = Field(1000, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_batch_size: int = Field(32, ge=1, description="requests per forward pass (1 = no cross-request batching)")
    max_wait_ms: float = Field(2.0, ge=0, description="how long a batch waits for more requests (0 = never)")
    max_batch_candidates: int = Field(8192, ge=1)
    max_queue: int = Field(1024, ge=1)
    micro_batch: int = Field(256, ge=1, description="candidates per model call inside a forward pass")
    scoring_tokens: Tokens = Field(default_factory=list)
    admin_tokens: Tokens = Field(default_factory=list)
    state_cache_entries: int = Field(10_000, ge=0, description="users with a cached state (recurrent models)")
    state_cache_bytes: int = Field(256 * 1024 * 1024, ge=0)
    state_cache_ttl_s: float = Field(3600.0, gt=0)
    drain_s: float = Field(5.0, ge=0, description="seconds between SIGTERM and shutdown: readiness is 503, requests are still served")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="seconds to finish queued work on shutdown")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads for the inference thread")
    fail_fast: bool = Field(False, description="exit if the model cannot be loaded")

    @property
    def reload_root(self) -> Path:
        return self.runs_root if self.runs_root is not None else self.run.resolve().parent

    @field_validator("scoring_tokens", "admin_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [token.strip() for token in value.replace("\n", ",").split(",") if token.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, FileNamedByEnv(settings_cls), env_settings, file_secret_settings


class FileNamedByEnv(PydanticBaseSettingsSource):
    """`ROTOREC_<SETTING>_FILE`: the path of a file whose text is the setting's value."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        path = os.environ.get(f"{self.config.get('env_prefix', '')}{field_name}_FILE".upper())
        return (Path(path).read_text(encoding="utf-8").strip() if path else None), field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {name: self.get_field_value(info, name)[0] for name, info in self.settings_cls.model_fields.items()}
        return {name: value for name, value in values.items() if value is not None}
