"""What `rotorec train --resume` may change: a resumed run must go on with the run it resumes.

Every checkpoint records the run's settings as they were resolved (the model config as built
from the data, the `train` and `optim` sections) and a fingerprint of the prepared data it
trains on. `--resume` compares them with the new invocation before anything is loaded and
refuses every difference outside RESUMABLE, so the manifest describes the run that was really
trained, and other data is refused in one line instead of failing deep inside
`load_state_dict` (or, with equal shapes, being trained on silently).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from pydantic import BaseModel

from rotorec.features.artifacts import split_files
from rotorec.features.files import file_digest
from rotorec.model.config import ModelConfig
from rotorec.training.config import ConfigError, RunConfig

RESUMABLE = {
    "train.max_steps": "where the run stops (a cosine decay is stretched to the new total from the step resumed at)",
    "train.patience": "the early-stopping rule",
    "train.eval_every": "when validation runs (the weights do not depend on it)",
    "train.eval_batch_size": "how validation is batched",
    "train.checkpoint_every": "how often the checkpoint is written",
    "train.log_every": "how often the journal is written",
    "train.tensorboard": "whether TensorBoard scalars are written",
    "train.device": "the machine the run continues on",
}
"""Settings a resume may change, and why each leaves the steps already taken valid. Everything
else (model, optimizer, schedule, batch size, seed, bf16) shapes the run and is refused."""

CONTRACT_KEY = "resume_contract"
"""Where save_checkpoint's extra state holds the contract."""


def data_fingerprint(data: Path) -> dict[str, str]:
    """SHA-256 of every prepared file training reads: the schema, the train and valid splits, the
    catalogue and the vocabularies (the test split and stats.json, with its timings, are not)."""
    files = [
        data / "schema.json",
        *split_files(data, "train"),
        *split_files(data, "valid"),
        data / "items.parquet",
        *sorted((data / "vocab").glob("*.parquet")),
    ]
    return {str(path.relative_to(data)): file_digest(path)["sha256"] for path in files}


def run_contract(config: RunConfig, model_config: ModelConfig, data: Path) -> dict:
    """What a checkpoint records and a resume must match (JSON-ready)."""
    settings = {"model": model_config.model_dump(mode="json"), **config.model_dump(mode="json", exclude={"model"})}
    return {"settings": _flatten(settings), "data": data_fingerprint(data)}


def check_resume(saved: dict | None, current: dict, out: Path, data: Path) -> None:
    """Raise ConfigError (one line, naming what differs) unless `current` continues `saved`."""
    if saved is None:
        raise ConfigError(
            f"{out}: its checkpoint records no settings or data fingerprint (an older rotorec wrote "
            f"it), so --resume cannot check that it continues the same run; start a new run folder"
        )
    files = sorted(set(saved["data"]) | set(current["data"]))
    other = [name for name in files if saved["data"].get(name) != current["data"].get(name)]
    if other:
        raise ConfigError(f"{out}: --resume on other data: {data} differs from the data this run was trained on in {', '.join(other)}")
    keys = sorted(set(saved["settings"]) | set(current["settings"]))
    changed = [key for key in keys if key not in RESUMABLE and _saved_value(saved["settings"], key) != current["settings"].get(key)]
    if changed:
        shown = ", ".join(
            f"{key} ({_text(_saved_value(saved['settings'], key))} -> {_text(current['settings'].get(key))})" for key in changed
        )
        raise ConfigError(
            f"{out}: --resume cannot change {shown}; only {', '.join(RESUMABLE)} may change (start a new run folder for the others)"
        )


def _saved_value(settings: dict, key: str) -> object:
    """A setting added to rotorec after the checkpoint was written reads as its default, which is
    what the older code did without it."""
    return settings[key] if key in settings else _default(key)


def _default(key: str) -> object:
    """The declared default of a flattened setting ("model.next_item.repeat_bias"), or None."""
    section, *path = key.split(".")
    owner = ModelConfig if section == "model" else _model_class(getattr(RunConfig.model_fields.get(section), "annotation", None))
    for name in path[:-1]:
        field = owner.model_fields.get(name) if owner is not None else None
        owner = _model_class(field.annotation) if field is not None else None
    field = owner.model_fields.get(path[-1]) if owner is not None and path else None
    return None if field is None or field.is_required() else _json(field.get_default(call_default_factory=True))


def _model_class(annotation: object) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `NextItemConfig | None`."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _json(value: object) -> object:
    return json.loads(json.dumps(value.model_dump(mode="json") if isinstance(value, BaseModel) else value))


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat.update(_flatten(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return flat


def _text(value: object, limit: int = 40) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"
