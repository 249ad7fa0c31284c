"""The sequence-mixer slot of each layer, chosen per layer by `model.mixers`.

A mixer reads the pre-normed hidden states of a user's events and fills the layer's residual
slot. It must be strictly causal in the label-safe sense: the output at p may use events < p
(content and actions) and event p's own content, never p's action. Two calls make up the
contract:

- `forward(z, action, context, cache=None) -> (y, cache)`: a whole sequence [B, S, d] with its
  MixerContext (angles, times, slots, validity); the output at p reads events in earlier
  slots only (model.inputs.event_slots); `cache` is whatever later queries need from this
  history (keys/values for attention, the final state for a recurrent mixer).
- `attend_history(z, context, cache, history_valid) -> y`: queries [B, C, d] (serving
  candidates) that read a finished history and their own content only, never each other.
"""

from __future__ import annotations

from typing import Any, Protocol, get_args

import torch
from torch import nn

from rotorec.model.attention import LabelSafeAttention
from rotorec.model.config import MixerKind, ModelConfig
from rotorec.model.context import MixerContext
from rotorec.model.fprnn import FixedPointRNN
from rotorec.model.rotrnn import RotRNN


class Mixer(Protocol):
    """What every mixer provides (see the module docstring); `cache` is the mixer's own type:
    (keys, values) for attention, a RecurrentCache for the recurrent mixers."""

    def __call__(self, z: torch.Tensor, action: torch.Tensor, context: MixerContext, cache: Any = None) -> tuple[torch.Tensor, Any]: ...

    def attend_history(self, z: torch.Tensor, context: MixerContext, cache: Any, history_valid: torch.Tensor) -> torch.Tensor: ...


MIXERS: dict[str, type[nn.Module]] = {"attention": LabelSafeAttention, "rotrnn": RotRNN, "fprnn": FixedPointRNN}
assert set(MIXERS) == set(get_args(MixerKind))


def build_mixer(kind: str, config: ModelConfig) -> nn.Module:
    if kind not in MIXERS:
        raise ValueError(f"mixer {kind!r} is not available (implemented: {sorted(MIXERS)})")
    return MIXERS[kind](config)
