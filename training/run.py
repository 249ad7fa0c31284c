"""Loading a trained run: the one loader used by `rotorec evaluate` and by the service.

Every file listed in the manifest is checked (size, then SHA-256) before anything is parsed,
and every file the loader reads is listed: the post-hoc calibration too, which `rotorec
evaluate` fits after training and records in the manifest as it writes it (save_calibration).
Weights come from safetensors only (no pickle); the saved model config rebuilds the model and
`load_state_dict(strict=True)` must match it exactly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from rotorec.features.artifacts import FeatureSchema
from rotorec.features.files import file_digest
from rotorec.model.config import ModelConfig
from rotorec.model.ranker import Ranker
from rotorec.training.checkpoint import stage_json

SUPPORTED_ARTIFACT_FORMATS = (1,)
MANIFEST_FILE = "manifest.json"
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


def _verify_files(folder: Path, manifest: dict, skip: tuple[str, ...]) -> None:
    for name, expected in manifest.get("files", {}).items():
        if name in skip:
            continue
        path = folder / name
        if not path.is_file():
            raise RunError(f"{folder}: {name} is listed in the manifest but missing")
        if path.stat().st_size != expected["bytes"]:
            raise RunError(f"{folder}: {name} has {path.stat().st_size} bytes, the manifest says {expected['bytes']}")
        if file_digest(path)["sha256"] != expected["sha256"]:
            raise RunError(f"{folder}: {name} does not match its SHA-256 in the manifest")


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise RunError(f"{folder}: no {MANIFEST_FILE} (not a run folder, or training did not finish)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise RunError(f"{path}: expected a JSON object")
    if manifest.get("artifact_format") not in SUPPORTED_ARTIFACT_FORMATS:
        raise RunError(
            f"{folder}: artifact_format {manifest.get('artifact_format')} is not supported (supported: {SUPPORTED_ARTIFACT_FORMATS})"
        )
    return manifest


def load_run(folder: str | Path, device: str | torch.device = "cpu", with_calibration: bool = True) -> LoadedRun:
    """The verified run. `rotorec evaluate` fits a new calibration, so it loads without the
    stored one (`with_calibration=False`): that also lets it repair a run whose calibration and
    manifest disagree (a crash between their writes, or a --resume after the last fit)."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    _verify_files(folder, manifest, skip=() if with_calibration else (CALIBRATION_FILE,))
    schema = FeatureSchema.load(folder)
    model = Ranker(ModelConfig.model_validate(manifest["model"]))
    try:
        model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    except RuntimeError as exc:
        raise RunError(f"{folder}: weights do not fit the saved model config ({str(exc).splitlines()[0]})") from exc
    calibration = _load_calibration(folder / CALIBRATION_FILE, manifest, model.config.tasks) if with_calibration else {}
    return LoadedRun(folder, manifest, schema, model.to(device).eval(), calibration)


def save_calibration(folder: Path, calibration: dict[str, dict[str, float]]) -> None:
    """Write calibration.json and record its SHA-256 in the manifest. Both are staged and flushed
    first, then renamed one after the other; a load between the two renames (or after a crash
    there) sees a mismatch and refuses the run, and the next `rotorec evaluate` repairs it."""
    manifest = _read_manifest(folder)
    staged_calibration = stage_json(folder / CALIBRATION_FILE, calibration)
    manifest["files"][CALIBRATION_FILE] = file_digest(staged_calibration)
    staged_manifest = stage_json(folder / MANIFEST_FILE, manifest)
    os.replace(staged_calibration, folder / CALIBRATION_FILE)
    os.replace(staged_manifest, folder / MANIFEST_FILE)


def _load_calibration(path: Path, manifest: dict, tasks: list[str]) -> dict[str, dict[str, float]]:
    """The checksum (verified with the other files) vouches for the bytes; the checks here keep a
    file that was never written by save_calibration from skewing every served probability."""
    if not path.is_file():
        return {}
    if path.name not in manifest.get("files", {}):
        raise RunError(
            f"{path}: not covered by the manifest's checksums (written by hand or by an older rotorec); "
            f"run `rotorec evaluate` again to refit it"
        )
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable calibration ({exc})") from exc
    if not isinstance(calibration, dict):
        raise RunError(f"{path}: expected an object of task -> {{scale, bias}}")
    for task, fit in calibration.items():
        if task not in tasks:
            raise RunError(f"{path}: calibration for {task!r}, which is not a task of the model ({tasks})")
        if not (
            isinstance(fit, dict)
            and set(fit) == {"scale", "bias"}
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in fit.values())
        ):
            raise RunError(f"{path}: {task!r} needs finite 'scale' and 'bias' numbers, got {fit!r}")
    return calibration


def check_data_matches(run: LoadedRun, data_schema: FeatureSchema, data_folder: Path) -> None:
    """A model reads only data prepared exactly like its training data (same vocab and fields)."""
    if data_schema.fingerprint() != run.schema.fingerprint():
        differences = [
            k
            for k in ("tasks", "item_vocab_size", "actions", "categorical", "max_len", "source_format")
            if getattr(data_schema, k) != getattr(run.schema, k)
        ]
        raise RunError(
            f"{data_folder}: prepared differently from {run.folder}'s training data "
            f"(differs in: {', '.join(differences) or 'schema details'})"
        )
