"""What a training run records as it goes: `train_log.jsonl` for scripts, TensorBoard for people.

Both get the same numbers at the same steps, so a curve seen in TensorBoard can be re-plotted
exactly from the JSON lines. Only the leader process of a distributed job keeps a journal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TextIO

from torch.utils.tensorboard import SummaryWriter

LOG_FILE = "train_log.jsonl"
TENSORBOARD_FOLDER = "tensorboard"


class TrainingJournal:
    """Appends (a resumed run continues the same log and the same TensorBoard run)."""

    def __init__(self, run: Path, tensorboard: bool = True) -> None:
        self._lines: TextIO = (run / LOG_FILE).open("a", encoding="utf-8")
        self._board = SummaryWriter(str(run / TENSORBOARD_FOLDER)) if tensorboard else None

    def step(self, step: int, record: dict[str, float]) -> None:
        """A logged training step: loss, its parts, learning rate, throughput."""
        self._write({"step": step, **record})
        self._scalars("train", step, record)

    def validation(self, step: int, metrics: dict[str, float], best_step: int) -> None:
        self._write({"step": step, "validation": metrics, "best_step": best_step})
        self._scalars("valid", step, metrics)

    def close(self) -> None:
        self._lines.close()
        if self._board is not None:
            self._board.close()

    def _write(self, line: dict) -> None:
        self._lines.write(json.dumps(line) + "\n")
        self._lines.flush()

    def _scalars(self, section: str, step: int, values: dict[str, float]) -> None:
        if self._board is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._board.add_scalar(f"{section}/{name}", value, step)
        self._board.flush()
