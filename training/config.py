"""Run configuration: a YAML file plus `--set key=value` overrides, validated before any work.

`--set` values are parsed as YAML, so `--set model.mixers=[attention,attention]` and
`--set train.max_steps=500` both work. Unknown keys anywhere are rejected with the key's dotted
path. Model fields that come from the data (vocabulary sizes, tasks by default) are filled in
from the prepared folder's schema when the model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from rotorec.features.strict import StrictModel, first_validation_error
from rotorec.model.config import ModelConfig

DATA_DERIVED = {"item_vocab_size", "action_vocab_size", "categorical"}


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names the offending key."""


class OptimConfig(StrictModel):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["cosine", "constant"] = Field("cosine", description="after warmup: cosine decay or constant")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine decays to lr·ratio")
    grad_clip: float = Field(1.0, gt=0)


class TrainLoopConfig(StrictModel):
    batch_size: int = Field(256, ge=1)
    max_steps: int = Field(1_000, ge=1)
    eval_every: int = Field(200, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    log_every: int = Field(20, ge=1)
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = Field(True, description="bf16 autocast on GPU (ignored on CPU)")
    cpu_bf16: bool = Field(False, description="bf16 autocast on CPUs that compute bf16 natively (AVX-512 BF16, AMX)")
    eval_batch_size: int = Field(512, ge=1)
    tensorboard: bool = Field(True, description="also write train_log.jsonl's numbers as TensorBoard scalars")


class RunConfig(StrictModel):
    model: dict[str, Any] = Field(default_factory=dict)
    train: TrainLoopConfig = Field(default_factory=TrainLoopConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)

    def model_config_for(self, schema) -> ModelConfig:
        """The ModelConfig for prepared data (features.artifacts.FeatureSchema)."""
        try:
            config = ModelConfig.from_feature_schema(schema, **self.model)
        except ValidationError as exc:
            raise ConfigError(_first_error(exc, prefix="model")) from exc
        unknown = [t for t in config.tasks if t not in schema.tasks]
        if unknown:
            raise ConfigError(f"model.tasks: {unknown} are not labels of the data (it has {schema.tasks})")
        return config


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    where, message = first_validation_error(exc)
    return f"{'.'.join(part for part in (prefix, where) if part)}: {message}"


def _set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def load_run_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        key, separator, text = item.partition("=")
        if not separator or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            _set(raw, key.strip(), yaml.safe_load(text))
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: {str(exc).splitlines()[0]}") from exc
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from exc
    unknown = set(config.model) - (set(ModelConfig.model_fields) - DATA_DERIVED)
    if unknown:
        raise ConfigError(f"model.{sorted(unknown)[0]}: unknown model key")
    return config
