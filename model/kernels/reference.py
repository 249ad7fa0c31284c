"""The plain sequential scan every fast path is tested against (docs/mixers.md, "Reference scan").

h_t = a_t ⊙ h_{t−1} + b_t, one step at a time in float64 (complex128 for complex inputs), with
ordinary autograd. Slow by design: it is the definition, not an implementation to use.
"""

from __future__ import annotations

import torch


def scan_reference(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h [B, T, D], h_last [B, D]) in float64/complex128; padded steps (t ≥ length) leave the
    state unchanged and output 0, and h_last is the state at each sequence's true end."""
    wide = torch.complex128 if (a.is_complex() or b.is_complex()) else torch.float64
    a, b = torch.broadcast_to(a, b.shape).to(wide), b.to(wide)
    batch, steps, channels = b.shape
    state = torch.zeros(batch, channels, dtype=wide, device=b.device) if h0 is None else h0.to(wide)
    ends = torch.full((batch,), steps, device=b.device) if lengths is None else lengths.to(b.device)
    outputs = []
    for t in range(steps):
        live = (t < ends).unsqueeze(-1)
        state = torch.where(live, a[:, t] * state + b[:, t], state)
        outputs.append(torch.where(live, state, torch.zeros_like(state)))
    return torch.stack(outputs, dim=1), state
