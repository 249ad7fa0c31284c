"""Where a benchmark ran: device, date, commit, torch and threads, written beside its results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def current_commit() -> str:
    """ROTOREC_COMMIT if set (a copy of the tree without .git, as on the GPU machine), else git's
    HEAD, else empty."""
    if os.environ.get("ROTOREC_COMMIT"):
        return os.environ["ROTOREC_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
        ).stdout.strip()
    except OSError:  # no git at all
        return ""


def write_report(name: str, device: torch.device, rows: list[dict], path: Path, **extra: object) -> None:
    commit = current_commit()
    report = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d"),
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "commit": commit,
        **extra,
        "results": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
