"""RotRNN mixer (Biegun et al., arXiv 2407.07239; docs/mixers.md, "RotRNN").

Per head h a transition A = γ_h·P_h·R(θ_h)·P_hᵀ: one decay per head, planar rotations, and an
optional orthogonal basis P = expm(M − Mᵀ) that is always folded into B and C (B′ = PᵀξB,
C′ = C·blockdiag(P)), so the recurrence runs in the rotation basis as a complex diagonal scan:
z ← γ e^{iθ} z + ξ B′ v. ξ = √((1 − γ²)/tr(BᵀB)) keeps E‖x‖² → 1 under white-noise input.

Label safety: an event's action enters only its state input v_p = W_v z_p + act_p, and the
output at p reads the state before p's slot, y_p = C′·(a_p h_before) + D ⊙ z_p.

Time-conditioned (`rotrnn.time_conditioned`): a_p = γ^{κ+Δt_p/τ}·e^{iθ}·e^{i(Φ_p − Φ_{p−1})}
with Φ the SIREN-RoPE angles tiled over the state pairs, so an event i reaches the state at j
rotated by exactly (j − i)θ + Φ_j − Φ_i: its own per-step turn plus the relative angle SIREN-RoPE
puts between query j and key i.
It runs as s_p = ρ_p e^{iθ} s_{p−1} + e^{−iΦ_p} ξ_p B′v_p with h_p = e^{iΦ_p} s_p, so no angle
is ever accumulated (docs/mixers.md, "Time-conditioned RotRNN"). The cached state is s.
"""

from __future__ import annotations

import torch
from torch import nn

from rotorec.model.config import ModelConfig
from rotorec.model.context import MixerContext
from rotorec.model.kernels import linear_scan
from rotorec.model.recurrent import RecurrentCache, before_slot, decay_init, elapsed_exponent, shifted, state_dtype

TRACE_EPSILON = 1e-6


class RotRNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        settings = config.rotrnn
        d, heads, size = config.d_model, settings.heads, settings.state
        self.settings = settings
        self.heads, self.head_size, self.width = heads, size, heads * size
        self.encoding_pairs = config.head_dim // 2
        self.value = nn.Linear(d, d, bias=False)
        self.action_values = nn.Embedding(config.action_vocab_size, d, padding_idx=0)
        self.log_rate = nn.Parameter(decay_init(heads, settings.gamma_min, settings.gamma_max))  # γ = exp(−e^ν)
        self.theta = nn.Parameter(torch.empty(heads, size // 2).uniform_(0.0, settings.max_phase))
        scale = (d + self.width) ** -0.5
        self.input_matrix = nn.Parameter(torch.randn(heads, size, d) * scale)
        self.readout = nn.Parameter(torch.randn(d, self.width) * scale)
        self.skip = nn.Parameter(torch.randn(d))
        self.skew = nn.Parameter(torch.randn(heads, size, size)) if settings.orthogonal else None
        self.output_dropout = nn.Dropout(config.dropout)

    # -- parameters in the rotation basis ------------------------------------------------------

    def folded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B′ [S, d], C′ [d, S], tr(BᵀB) per head); ξ is applied per step (it may vary in time)."""
        input_matrix, readout = self.input_matrix, self.readout
        trace = input_matrix.square().sum(dim=(1, 2))
        if self.skew is not None:
            basis = torch.linalg.matrix_exp(self.skew - self.skew.transpose(1, 2))  # P_h ∈ SO(N)
            input_matrix = basis.transpose(1, 2) @ input_matrix
            d = readout.shape[0]
            readout = (readout.view(d, self.heads, self.head_size).transpose(0, 1) @ basis).transpose(0, 1).reshape(d, -1)
        return input_matrix.reshape(self.width, -1), readout, trace

    def per_pair(self, per_head: torch.Tensor) -> torch.Tensor:
        return per_head.repeat_interleave(self.head_size // 2, dim=-1)

    def decay(self, exponent: torch.Tensor, trace: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ρ = γ^e and ξ = √((1 − ρ²)/tr(BᵀB)) per token and head, [..., H]; 1 − ρ² via expm1."""
        log_rho = exponent.unsqueeze(-1) * -torch.exp(self.log_rate)
        return torch.exp(log_rho), torch.sqrt(-torch.expm1(2 * log_rho) / (trace + TRACE_EPSILON))

    def exponent(self, context: MixerContext, earlier_seconds: torch.Tensor, earlier_has_time: torch.Tensor) -> torch.Tensor:
        time = context.time
        if not self.settings.time_conditioned:
            return torch.ones(time.seconds.shape, device=time.seconds.device)
        s = self.settings
        return elapsed_exponent(time.seconds, time.has_time, earlier_seconds, earlier_has_time, s.kappa, s.time_unit, s.max_elapsed)

    def phase(self, context: MixerContext) -> torch.Tensor | None:
        """e^{iΦ} [B, S, S/2]: the encoding's angles tiled over the state pairs (time-conditioned)."""
        if not self.settings.time_conditioned or context.cos is None:
            return None
        lanes = torch.arange(self.width // 2, device=context.cos.device) % self.encoding_pairs
        return torch.complex(context.cos.squeeze(1)[..., lanes], context.sin.squeeze(1)[..., lanes])

    def recurrence(
        self, value: torch.Tensor, exponent: torch.Tensor, phase: torch.Tensor | None, input_matrix: torch.Tensor, trace: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Complex scan coefficients [B, S, S/2]: a = ρ e^{iθ}, b = e^{−iΦ} ξ B′v."""
        rho, xi = self.decay(exponent, trace)
        inputs = (value @ input_matrix.T).unflatten(-1, (self.heads, self.head_size)) * xi.unsqueeze(-1)
        inputs = torch.view_as_complex(inputs.unflatten(-1, (self.head_size // 2, 2)).contiguous()).flatten(-2)
        if phase is not None:
            inputs = inputs * phase.conj()
        return self.per_pair(rho) * self.rotation(), inputs

    def rotation(self) -> torch.Tensor:
        return torch.polar(torch.ones_like(self.theta), self.theta).flatten()

    def read(
        self, before: torch.Tensor, rho: torch.Tensor, phase: torch.Tensor | None, readout: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor:
        """y = C′·(a·h_before) + D ⊙ z, with a = ρ e^{iθ} (e^{iΦ} for the shortcut basis)."""
        advanced = before * self.per_pair(rho) * self.rotation()
        if phase is not None:
            advanced = advanced * phase
        mixed = torch.view_as_real(advanced).flatten(-2) @ readout.T
        return self.output_dropout(mixed + self.skip * z)

    # -- the mixer contract ---------------------------------------------------------------------

    def empty_cache(self, batch: int, device: torch.device, real: torch.dtype = torch.float32) -> RecurrentCache:
        return RecurrentCache.empty(torch.zeros(batch, self.width // 2, dtype=real.to_complex(), device=device))

    def forward(
        self, z: torch.Tensor, action: torch.Tensor, context: MixerContext, cache: RecurrentCache | None = None
    ) -> tuple[torch.Tensor, RecurrentCache]:
        """Causal pass over [B, S] events (right-padded), continuing from `cache` if given."""
        batch, real = z.shape[0], state_dtype(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.to(real)
            if cache is None:
                cache = self.empty_cache(batch, z.device, real)
            input_matrix, readout, trace = self.folded()
            time = context.time
            step = self.exponent(context, shifted(time.seconds, cache.seconds), shifted(time.has_time, cache.has_time))
            phase = self.phase(context)
            value = self.value(z) + self.action_values(action).to(real)
            gate, inputs = self.recurrence(value, step, phase, input_matrix, trace)
            lengths = context.valid.sum(dim=1)
            states, last = linear_scan(gate, inputs, cache.state, lengths)
            slot = cache.relative_slots(context.slot)
            read_rho, _ = self.decay(
                self.exponent(context, before_slot(time.seconds, cache.seconds, slot), before_slot(time.has_time, cache.has_time, slot)),
                trace,
            )
            y = self.read(before_slot(states, cache.state, slot), read_rho, phase, readout, z)
        return y, cache.after(last, context, lengths)

    def attend_history(self, z: torch.Tensor, context: MixerContext, cache: RecurrentCache, history_valid: torch.Tensor) -> torch.Tensor:
        """Candidates [B, C] read the history's final state; no state update, O(S) each."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.to(state_dtype(z))
            _, readout, trace = self.folded()
            count = z.shape[1]
            rho, _ = self.decay(
                self.exponent(context, cache.seconds.unsqueeze(1).expand(-1, count), cache.has_time.unsqueeze(1).expand(-1, count)), trace
            )
            before = cache.state.unsqueeze(1).expand(-1, count, -1)
            return self.read(before, rho, self.phase(context), readout, z)
