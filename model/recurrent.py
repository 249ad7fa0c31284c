"""Pieces both recurrent mixers share: their per-user cache, elapsed time, reading by slot.

A recurrent mixer's output at event p reads the state *before* p's slot (model.inputs.
event_slots): the state after event slot_p − 1, or the cache it started from. So an event never
reads its own action or a slate-mate's, exactly like a serving candidate reading a finished
history's final state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class RecurrentCache:
    """A user's state after the last event a mixer has read (for candidates and streaming)."""

    state: torch.Tensor  # [B, ...] fp32 (complex64 for RotRNN)
    seconds: torch.Tensor  # int64 [B]: time of the last event
    has_time: torch.Tensor  # bool [B]
    count: torch.Tensor  # int64 [B]: events read so far (slots of later events count from here)
    output: torch.Tensor | None = None  # [B, n]: FP-RNN's internal output y at the last event

    @classmethod
    def empty(cls, state: torch.Tensor, output: torch.Tensor | None = None) -> RecurrentCache:
        batch = state.shape[0]
        zeros = torch.zeros(batch, dtype=torch.long, device=state.device)
        return cls(state=state, seconds=zeros, has_time=zeros.bool(), count=zeros, output=output)

    def after(self, state: torch.Tensor, context, lengths: torch.Tensor, output: torch.Tensor | None = None) -> RecurrentCache:
        """The cache once a chunk of `lengths` valid events has been read."""
        time = context.time
        return RecurrentCache(
            state=state,
            seconds=last_valid(time.seconds, lengths, self.seconds),
            has_time=last_valid(time.has_time, lengths, self.has_time),
            count=self.count + lengths,
            output=output,
        )

    @classmethod
    def stack(cls, caches: list[RecurrentCache]) -> RecurrentCache:
        """One cache for a batch from per-user caches (each of batch size 1)."""

        def cat(name):
            parts = [getattr(c, name) for c in caches]
            return None if parts[0] is None else torch.cat(parts)

        return cls(state=cat("state"), seconds=cat("seconds"), has_time=cat("has_time"), count=cat("count"), output=cat("output"))

    def row(self, index: int) -> RecurrentCache:
        pick = lambda x: None if x is None else x[index : index + 1].clone()  # noqa: E731
        return RecurrentCache(
            state=pick(self.state),
            seconds=pick(self.seconds),
            has_time=pick(self.has_time),
            count=pick(self.count),
            output=pick(self.output),
        )

    @property
    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size() for t in (self.state, self.seconds, self.has_time, self.count, self.output) if t is not None
        )

    def relative_slots(self, slot: torch.Tensor) -> torch.Tensor:
        """A chunk's slots counted from this cache's state (0 = the cached state itself)."""
        return (slot - self.count.unsqueeze(1)).clamp(min=0)


def state_dtype(z: torch.Tensor) -> torch.dtype:
    """Recurrent state and gates are fp32 under bf16 autocast too (docs/mixers.md, "Numerics"); a
    float64 model (the exactness tests) stays float64."""
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def decay_init(size: int, gamma_min: float, gamma_max: float) -> torch.Tensor:
    """ν with γ = exp(−e^ν) and log(−log γ) uniform between its values at γ_max and γ_min."""
    return torch.empty(size).uniform_(math.log(-math.log(gamma_max)), math.log(-math.log(gamma_min)))


def elapsed_exponent(
    seconds: torch.Tensor,
    has_time: torch.Tensor,
    earlier_seconds: torch.Tensor,
    earlier_has_time: torch.Tensor,
    kappa: float,
    unit: int,
    max_elapsed: int,
) -> torch.Tensor:
    """κ + clip(t − t_earlier, 0, Δt_max)/τ in fp32, from an int64 difference; 0 elapsed when
    either event has no timestamp (docs/mixers.md, "Time-conditioned RotRNN")."""
    known = has_time & earlier_has_time
    elapsed = torch.where(known, seconds - earlier_seconds, torch.zeros_like(seconds)).clamp(0, max_elapsed)
    return kappa + elapsed.to(torch.float32) / unit


def shifted(sequence: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """[B, S, ...] → the value before each step: initial at t = 0, sequence[t − 1] after."""
    return torch.cat([initial.unsqueeze(1), sequence], dim=1)[:, : sequence.shape[1]]


def before_slot(sequence: torch.Tensor, initial: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """For each token p, the value after event slot_p − 1 (`initial` when slot_p = 0)."""
    extended = torch.cat([initial.unsqueeze(1), sequence], dim=1)
    index = slot.reshape(*slot.shape, *([1] * (sequence.dim() - 2))).expand(*slot.shape, *sequence.shape[2:])
    return torch.gather(extended, 1, index)


def last_valid(sequence: torch.Tensor, lengths: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Each row's value at its last valid step (right padding), `fallback` for empty rows."""
    if sequence.shape[1] == 0:
        return fallback
    picked = sequence[torch.arange(sequence.shape[0], device=sequence.device), (lengths - 1).clamp(min=0)]
    return torch.where((lengths > 0).view(-1, *([1] * (picked.dim() - 1))), picked, fallback)
