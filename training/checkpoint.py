"""Atomic, pickle-free checkpoints.

A checkpoint is a folder: `model.safetensors`, `optimizer.safetensors` (every optimizer tensor,
flattened by key) and `state.json` (step, schedule, optimizer hyper-parameters, RNG states).
It is written to a staging folder, flushed to disk, and swapped in by rename, so a job killed at
any instant leaves either the previous checkpoint or the new one, never a torn one. Loading
reads tensors with safetensors only; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rotorec.features.files import replace_folder

STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


def stage_json(path: Path, payload: dict) -> Path:
    """Write `payload` beside `path` under a temporary name, flushed to disk, for os.replace to
    put in place: staging every file of a group first keeps the moment they disagree short."""
    staging = path.with_name(f".{path.name}.tmp")
    with staging.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return staging


def write_json_atomic(path: Path, payload: dict) -> None:
    os.replace(stage_json(path, payload), path)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{param_id}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda{index}"] = value
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    return tensors, {
        "python": [python_state[0], list(python_state[1]), python_state[2]],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    extra: dict,
) -> None:
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, staging / MODEL_FILE)
    optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer)
    random_tensors, random_meta = rng_state()
    save_file({**optimizer_tensors, **random_tensors}, staging / OPTIMIZER_FILE)
    (staging / STATE_FILE).write_text(
        json.dumps(
            {
                "step": step,
                "scheduler": scheduler.state_dict(),
                "optimizer": optimizer_meta,
                "rng": random_meta,
                **extra,
            },
            indent=2,
            default=str,
        )
        + "\n",
        encoding="utf-8",
    )
    replace_folder(staging, folder)


def read_state(folder: Path) -> dict:
    """state.json alone: what a resume is checked against before any tensor is loaded."""
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
) -> dict:
    """Restore everything saved by save_checkpoint; returns state.json's content."""
    state = read_state(folder)
    device = next(model.parameters()).device
    model.load_state_dict(load_file(folder / MODEL_FILE, device=str(device)), strict=True)
    tensors = load_file(folder / OPTIMIZER_FILE)
    optimizer_tensors = {k: v.to(device) if not k.endswith(".step") else v for k, v in tensors.items() if not k.startswith("rng.")}
    optimizer.load_state_dict(_optimizer_state(optimizer_tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    restore_rng({k: v for k, v in tensors.items() if k.startswith("rng.")}, state["rng"])
    return state
