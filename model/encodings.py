"""Rotary angle encodings, chosen by `model.encoding`: none, rope, to_rope, siren_rope.

Each encoding maps per-token time inputs to one angle per rotary pair, [B, S, d_k/2] in fp32,
computed once per forward and shared by every head and layer. Logits depend only on angle
differences between a query and a key, which is what makes cached history keys valid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rotorec.model.config import ModelConfig
from rotorec.model.inputs import TimeInputs
from rotorec.model.rotary import TWO_PI, ordinal_angles, rope_frequencies

SECONDS_PER_DAY = 86_400
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY
SECONDS_PER_YEAR = 365 * SECONDS_PER_DAY
TO_ROPE_BASE = 10_000.0
"""TO-RoPE's reference implementation uses the classic base (docs/encodings.md, "TO-RoPE baseline")."""
TO_ROPE_DAY_WEIGHT = 0.01


class AngleEncoding(nn.Module):
    """Base class: `angles` returns [B, S, pairs] fp32, or None for no rotation."""

    def angles(self, time: TimeInputs) -> torch.Tensor | None:
        raise NotImplementedError


class NoEncoding(AngleEncoding):
    def angles(self, time: TimeInputs) -> None:
        return None


class OrdinalRope(AngleEncoding):
    """RoPE on event order, newest = 0 (as −k, equal up to a per-sequence constant)."""

    def __init__(self, pairs: int, base: float) -> None:
        super().__init__()
        self.register_buffer("frequencies", rope_frequencies(pairs, base), persistent=False)

    def angles(self, time: TimeInputs) -> torch.Tensor:
        return ordinal_angles(time.slot, self.frequencies)


class TimeOrderRope(AngleEncoding):
    """TO-RoPE baseline: (position + 0.01·days)·θ, early fusion of order and elapsed time.

    Days are measured from a fixed reference rather than the oldest token: a constant shift
    per sequence, invisible to attention, that keeps history angles cacheable."""

    def __init__(self, pairs: int, reference_time: int) -> None:
        super().__init__()
        self.reference_time = reference_time
        self.register_buffer("frequencies", rope_frequencies(pairs, TO_ROPE_BASE), persistent=False)

    def angles(self, time: TimeInputs) -> torch.Tensor:
        days = torch.where(time.has_time, time.seconds - self.reference_time, 0).to(torch.float64) / SECONDS_PER_DAY
        position = time.slot.to(torch.float64) + TO_ROPE_DAY_WEIGHT * days
        raw = position.unsqueeze(-1) * self.frequencies
        return torch.remainder(raw, TWO_PI).to(torch.float32)


def time_features(time: TimeInputs, branches: list[str], reference_time: int) -> torch.Tensor:
    """x(T): cyclic day/week phases and/or the clipped long-range offset, fp32 [B, S, F].

    Phase remainders are integers (local second of day/week); 2π·r/τ is formed in fp64 and
    only the cos/sin are cast to fp32. Tokens without a timestamp get an all-zero vector."""
    parts = []
    if "cyclic" in branches:
        second_of_week = time.day_of_week * SECONDS_PER_DAY + time.second_of_day
        day_phase = TWO_PI * time.second_of_day.to(torch.float64) / SECONDS_PER_DAY
        week_phase = TWO_PI * second_of_week.to(torch.float64) / SECONDS_PER_WEEK
        parts += [torch.cos(day_phase), torch.sin(day_phase), torch.cos(week_phase), torch.sin(week_phase)]
    if "timestamp" in branches:
        years = (time.seconds - reference_time).to(torch.float64) / SECONDS_PER_YEAR
        parts.append(years.clamp(-1.0, 3.0))
    features = torch.stack(parts, dim=-1).to(torch.float32)
    return features * time.has_time.unsqueeze(-1)


class SineLayer(nn.Module):
    """sin(ω0·(Wx + b)) with the SIREN initialisation (Sitzmann et al. 2020)."""

    def __init__(self, n_in: int, n_out: int, omega0: float, first: bool) -> None:
        super().__init__()
        self.omega0 = omega0
        self.linear = nn.Linear(n_in, n_out)
        siren_init(self.linear, omega0, first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * self.linear(x))


def siren_init(layer: nn.Linear, omega0: float, first: bool) -> None:
    bound = 1.0 / layer.in_features if first else math.sqrt(6.0 / layer.in_features) / omega0
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound)


def sine_network(n_in: int, hidden: int, depth: int, n_out: int, omega0: float) -> nn.Sequential:
    """The periodic branch: SIREN hidden layers and a plain linear output (unbounded angle)."""
    layers: list[nn.Module] = [SineLayer(n_in, hidden, omega0, first=True)]
    layers += [SineLayer(hidden, hidden, omega0, first=False) for _ in range(depth - 1)]
    output = nn.Linear(hidden, n_out)
    siren_init(output, omega0, first=False)
    return nn.Sequential(*layers, output)


def relu_network(n_in: int, hidden: int, depth: int, n_out: int) -> nn.Sequential:
    """The aperiodic branch (recency, drift): ReLU MLP with default initialisation."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class SirenRope(AngleEncoding):
    """Θ = [m·(f_sin(x) + f_mlp(x)) + f_cat(c)] ⊙ ω_s + p·θ·λ (docs/encodings.md, "The SIREN-RoPE angle").

    One angle network, one ω_s and one λ for all heads and layers. Runs in fp32 with autocast
    off. With ω_s = 0 and λ = 1 it is exactly ordinal RoPE."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        siren = config.siren
        pairs = config.head_dim // 2
        self.branches = [b for b in siren.branches if b in ("cyclic", "timestamp")]
        self.reference_time = siren.reference_time
        self.use_ordinal = siren.ordinal
        n_features = 4 * ("cyclic" in self.branches) + ("timestamp" in self.branches)
        self.sine = sine_network(n_features, siren.hidden, siren.depth, pairs, siren.omega0) if n_features and siren.sine_branch else None
        self.mlp = relu_network(n_features, siren.hidden, siren.depth, pairs) if n_features and siren.mlp_branch else None
        self.category_tables = nn.ModuleDict(
            {name: nn.Embedding(config.categorical[name].vocab_size, pairs, padding_idx=0) for name in config.angle_fields()}
        )
        for table in self.category_tables.values():
            nn.init.zeros_(table.weight)  # switching the branch on starts from the time-only model
        self.omega = nn.Parameter(torch.full((pairs,), siren.omega_init))
        self.ordinal_scale = nn.Parameter(torch.ones(()))
        self.register_buffer("frequencies", rope_frequencies(pairs, config.rope_base), persistent=False)

    def angles(self, time: TimeInputs) -> torch.Tensor:
        device_type = time.slot.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            semantic = torch.zeros((*time.slot.shape, self.omega.numel()), device=time.slot.device)
            if self.sine is not None or self.mlp is not None:
                x = time_features(time, self.branches, self.reference_time)
                temporal = sum(branch(x) for branch in (self.sine, self.mlp) if branch is not None)
                semantic = semantic + temporal * time.has_time.unsqueeze(-1)
            for name, table in self.category_tables.items():
                ids = time.categorical[name]
                present = (ids > 0).float()
                semantic = semantic + (table(ids) * present.unsqueeze(-1)).sum(-2) / present.sum(-1, keepdim=True).clamp(min=1)
            angle = semantic * self.omega
            if self.use_ordinal:
                angle = angle + ordinal_angles(time.slot, self.frequencies, self.ordinal_scale)
        return angle


def build_encoding(config: ModelConfig) -> AngleEncoding:
    pairs = config.head_dim // 2
    if config.encoding == "none":
        return NoEncoding()
    if config.encoding == "rope":
        return OrdinalRope(pairs, config.rope_base)
    if config.encoding == "to_rope":
        return TimeOrderRope(pairs, config.siren.reference_time)
    return SirenRope(config)
