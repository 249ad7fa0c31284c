"""What every mixer may read besides the hidden states, computed once per forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rotorec.model.inputs import TimeInputs


@dataclass
class MixerContext:
    """Per-token geometry for one pass over events or candidates ([B, S] unless noted).

    `time.slot` is each token's slot (model.inputs.event_slots): a token reads only tokens in
    earlier slots. cos/sin are the rotary angles [B, 1, S, pairs] (None without an encoding)."""

    time: TimeInputs
    valid: torch.Tensor  # bool
    cos: torch.Tensor | None
    sin: torch.Tensor | None

    @property
    def slot(self) -> torch.Tensor:
        return self.time.slot
