"""Loading a trained run: the one loader used by `rotorec evaluate` and by the service.

Every file listed in the manifest is checked (size, then SHA-256) before anything is parsed;
weights come from safetensors only (no pickle); the saved model config rebuilds the model and
`load_state_dict(strict=True)` must match it exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from features.artifacts import FeatureSchema
from model.config import ModelConfig
from model.ranker import Ranker

SUPPORTED_ARTIFACT_FORMATS = (1,)
CALIBRATION_FILE = "calibration.json"


class RunError(ValueError):
    """A run folder that cannot be used (missing, corrupt, or made for other data)."""


@dataclass
class LoadedRun:
    folder: Path
    manifest: dict
    schema: FeatureSchema
    model: Ranker
    calibration: dict[str, dict[str, float]]
    """task -> {'scale', 'bias'}: p = sigmoid(scale·logit + bias); empty when not fitted."""

    def calibrated(self, task: str, logits: torch.Tensor) -> torch.Tensor:
        fit = self.calibration.get(task)
        return logits if fit is None else logits * fit["scale"] + fit["bias"]


def _verify_files(folder: Path, manifest: dict) -> None:
    for name, expected in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise RunError(f"{folder}: {name} is listed in the manifest but missing")
        if path.stat().st_size != expected["bytes"]:
            raise RunError(f"{folder}: {name} has {path.stat().st_size} bytes, the manifest says {expected['bytes']}")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected["sha256"]:
            raise RunError(f"{folder}: {name} does not match its SHA-256 in the manifest")


def load_run(folder: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise RunError(f"{folder}: no manifest.json (not a run folder, or training did not finish)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("artifact_format") not in SUPPORTED_ARTIFACT_FORMATS:
        raise RunError(f"{folder}: artifact_format {manifest.get('artifact_format')} is not supported "
                       f"(supported: {SUPPORTED_ARTIFACT_FORMATS})")
    _verify_files(folder, manifest)
    schema = FeatureSchema.load(folder)
    model = Ranker(ModelConfig.model_validate(manifest["model"]))
    try:
        model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    except RuntimeError as exc:
        raise RunError(f"{folder}: weights do not fit the saved model config ({str(exc).splitlines()[0]})") from exc
    calibration = _load_calibration(folder / CALIBRATION_FILE, model.config.tasks)
    return LoadedRun(folder, manifest, schema, model.to(device).eval(), calibration)


def _load_calibration(path: Path, tasks: list[str]) -> dict[str, dict[str, float]]:
    """`rotorec evaluate` writes this after training, so the manifest cannot vouch for it: check
    it here, or a damaged file would silently skew every served probability."""
    if not path.is_file():
        return {}
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable calibration ({exc})") from exc
    if not isinstance(calibration, dict):
        raise RunError(f"{path}: expected an object of task -> {{scale, bias}}")
    for task, fit in calibration.items():
        if task not in tasks:
            raise RunError(f"{path}: calibration for {task!r}, which is not a task of the model ({tasks})")
        if not (isinstance(fit, dict) and set(fit) == {"scale", "bias"}
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in fit.values())):
            raise RunError(f"{path}: {task!r} needs finite 'scale' and 'bias' numbers, got {fit!r}")
    return calibration


def check_data_matches(run: LoadedRun, data_schema: FeatureSchema, data_folder: Path) -> None:
    """A model reads only data prepared exactly like its training data (same vocab and fields)."""
    if data_schema.fingerprint() != run.schema.fingerprint():
        differences = [k for k in ("tasks", "item_vocab_size", "actions", "categorical", "max_len", "source_format")
                       if getattr(data_schema, k) != getattr(run.schema, k)]
        raise RunError(f"{data_folder}: prepared differently from {run.folder}'s training data "
                       f"(differs in: {', '.join(differences) or 'schema details'})")
