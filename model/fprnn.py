"""Fixed-point RNN mixer (Movahedi et al., arXiv 2503.10799; docs/mixers.md, "Fixed-Point RNN").

The target is a dense selective recurrence h_t = A_t h_{t−1} + …, with A_t = (I + (Λ_t⁻¹ − I)Q_t)⁻¹
for a diagonal decay Λ_t and a Householder channel mixer Q_t = Π_i (I − 2α_i k_i k_iᵀ),
α_i < ½. It is reached by iterating diagonal scans, each parallel in time:

    h^ℓ_t = Λ_t h^ℓ_{t−1} + (I − Λ_t)[Q_t(w_t − h^{ℓ−1}_t) + h^{ℓ−1}_t],   y^ℓ_t = c_t ⊙ h^ℓ_t,

where w_t = β_t ⊙ v_t is the gated state input and Q_t, β_t, c_t depend on the content z_t and
on the previous iterate's output at the previous event, y^{ℓ−1}_{t−1} (the shifted dependence);
Λ_t depends on content (and elapsed time, if time-conditioned) only. Iterations run without
gradient until the residual max_t ‖y^ℓ_t − y^{ℓ−1}_t‖_∞/‖y^ℓ_t‖_∞ is below the tolerance for a
batch quantile of sequences (all of them in eval mode) or ℓ_max; one more, differentiable
iteration gives the output and the gradient (the one-step fixed-point gradient).

Label safety: the action enters only v_p; the output at p reads the state before p's slot,
out_p = W_o(c_p ⊙ Λ_p h_before) + D ⊙ z_p, with c_p from z_p and the output before p's slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rotorec.model.config import ModelConfig
from rotorec.model.context import MixerContext
from rotorec.model.kernels import linear_scan
from rotorec.model.recurrent import RecurrentCache, before_slot, decay_init, elapsed_exponent, last_valid, shifted, state_dtype

RESIDUAL_FLOOR = 1e-30


@dataclass
class Gates:
    """Per-token coefficients of one iteration, [B, S, n] (keys [B, S, r, n], scales [B, S, r])."""

    decay: torch.Tensor  # Λ
    input_gate: torch.Tensor  # β
    output_gate: torch.Tensor  # c
    keys: torch.Tensor  # unit k_i
    scales: torch.Tensor  # 2α_i ∈ (0, 1)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """Q x = Π_i (I − 2α_i k_i k_iᵀ) x, applied right to left."""
        for i in range(self.keys.shape[-2] - 1, -1, -1):
            key = self.keys[..., i, :]
            x = x - (self.scales[..., i] * (key * x).sum(-1)).unsqueeze(-1) * key
        return x


class FixedPointRNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        settings = config.fprnn
        d = config.d_model
        n = settings.state or d
        self.settings, self.width, self.reflections = settings, n, settings.reflections
        self.value = nn.Linear(d, n, bias=False)
        self.action_values = nn.Embedding(config.action_vocab_size, n, padding_idx=0)
        self.log_rate = nn.Linear(d, n)  # Λ = exp(−e^ν), ν from content only
        nn.init.normal_(self.log_rate.weight, std=0.01)
        with torch.no_grad():
            self.log_rate.bias.copy_(decay_init(n, settings.gamma_min, settings.gamma_max))
        self.shifted_gates = nn.Linear(d + n, 2 * n + settings.reflections * (n + 1))  # β, c, keys, α
        self.output = nn.Linear(n, d)
        self.skip = nn.Parameter(torch.ones(d))
        self.output_dropout = nn.Dropout(config.dropout)

    def gates(self, z: torch.Tensor, previous_output: torch.Tensor, log_decay: torch.Tensor) -> Gates:
        n, r = self.width, self.reflections
        raw = self.shifted_gates(torch.cat([z, previous_output], dim=-1))
        beta, c, keys, alpha = raw.split([n, n, r * n, r], dim=-1)
        return Gates(
            decay=torch.exp(log_decay),
            input_gate=torch.sigmoid(beta),
            output_gate=torch.sigmoid(c),
            keys=F.normalize(keys.unflatten(-1, (r, n)), dim=-1),
            scales=torch.sigmoid(alpha),
        )

    def log_decay(self, z: torch.Tensor, context: MixerContext, earlier_seconds, earlier_has_time) -> torch.Tensor:
        rate = -torch.exp(self.log_rate(z))
        s = self.settings
        if not s.time_conditioned:
            return rate
        time = context.time
        return rate * elapsed_exponent(
            time.seconds, time.has_time, earlier_seconds, earlier_has_time, s.kappa, s.time_unit, s.max_elapsed
        ).unsqueeze(-1).to(rate.dtype)

    def iterate(self, z, value, log_decay, state, output, cache, lengths) -> tuple[torch.Tensor, torch.Tensor]:
        """One map (h^{ℓ−1}, y^{ℓ−1}) → (h^ℓ, y^ℓ): a single diagonal scan."""
        gates = self.gates(z, shifted(output, cache.output), log_decay)
        mixed = gates.mix(gates.input_gate * value - state) + state
        new_state, _ = linear_scan(gates.decay, (1 - gates.decay) * mixed, cache.state, lengths)
        return new_state, gates.output_gate * new_state

    def max_iterations(self) -> int:
        return self.settings.max_iterations_train if self.training else self.settings.max_iterations_eval

    def converged(self, output: torch.Tensor, previous: torch.Tensor, valid: torch.Tensor) -> bool:
        """Per-sequence max over valid tokens of ‖Δy‖_∞/‖y‖_∞, against a batch quantile."""
        change = (output - previous).abs().amax(-1) / output.abs().amax(-1).clamp(min=RESIDUAL_FLOOR)
        per_sequence = torch.where(valid, change, torch.zeros_like(change)).amax(-1)
        quantile = self.settings.quantile if self.training else 1.0
        return bool(torch.quantile(per_sequence.float(), quantile) < self.settings.tolerance)

    def empty_cache(self, batch: int, device: torch.device, real: torch.dtype = torch.float32) -> RecurrentCache:
        zeros = torch.zeros(batch, self.width, dtype=real, device=device)
        return RecurrentCache.empty(zeros, output=zeros)

    def forward(
        self, z: torch.Tensor, action: torch.Tensor, context: MixerContext, cache: RecurrentCache | None = None
    ) -> tuple[torch.Tensor, RecurrentCache]:
        real = state_dtype(z)
        batch, length = z.shape[:2]
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.to(real)
            if cache is None:
                cache = self.empty_cache(batch, z.device, real)
            time, lengths, slot = context.time, context.valid.sum(dim=1), cache.relative_slots(context.slot)
            value = self.value(z) + self.action_values(action).to(real)
            log_decay = self.log_decay(z, context, shifted(time.seconds, cache.seconds), shifted(time.has_time, cache.has_time))
            state = torch.zeros(batch, length, self.width, dtype=real, device=z.device)
            output = torch.zeros_like(state)
            with torch.no_grad():
                for _ in range(self.max_iterations() if length else 0):
                    previous = output
                    new_state, output = self.iterate(z, value, log_decay, state, output, cache, lengths)
                    delta = self.settings.damping
                    state, output = delta * new_state + (1 - delta) * state, delta * output + (1 - delta) * previous
                    if self.converged(output, previous, context.valid):
                        break
            state, output = self.iterate(z, value, log_decay, state.detach(), output.detach(), cache, lengths)
            before_state = before_slot(state, cache.state, slot)
            before_output = before_slot(output, cache.output, slot)
            read_decay = self.log_decay(
                z, context, before_slot(time.seconds, cache.seconds, slot), before_slot(time.has_time, cache.has_time, slot)
            )
            y = self.read(z, before_state, before_output, read_decay)
        return y, cache.after(last_valid(state, lengths, cache.state), context, lengths, output=last_valid(output, lengths, cache.output))

    def read(self, z: torch.Tensor, before_state: torch.Tensor, before_output: torch.Tensor, log_decay: torch.Tensor) -> torch.Tensor:
        gates = self.gates(z, before_output, log_decay)
        return self.output_dropout(self.output(gates.output_gate * gates.decay * before_state) + self.skip * z)

    def attend_history(self, z: torch.Tensor, context: MixerContext, cache: RecurrentCache, history_valid: torch.Tensor) -> torch.Tensor:
        """Candidates read Λ_c h_last with their own gates: no iteration, no state update."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.to(state_dtype(z))
            count = z.shape[1]
            expand = lambda x: x.unsqueeze(1).expand(-1, count, *x.shape[1:])  # noqa: E731
            log_decay = self.log_decay(z, context, expand(cache.seconds), expand(cache.has_time))
            return self.read(z, expand(cache.state), expand(cache.output), log_decay)
