"""Rotary position arithmetic shared by every encoding: frequencies, ordinal angles, rotation.

Pairs are interleaved, (2j, 2j+1), and rotated in fp32 whatever the surrounding autocast
(docs/encodings.md, "Rotary arithmetic"). Ordinal angles are formed in fp64 from integer
indices and reduced mod 2π before they meet the fp32 temporal angle, so an index of 10^6
loses no precision.
"""

from __future__ import annotations

import math

import torch

TWO_PI = 2 * math.pi


def rope_frequencies(pairs: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """θ_j = base^(−2j/d_k) for j < d_k/2, in fp64."""
    exponent = torch.arange(pairs, dtype=torch.float64, device=device) * 2 / (2 * pairs)
    return base ** (-exponent)


def ordinal_angles(index: torch.Tensor, frequencies: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Angle −k·θ·λ for absolute event index k, wrapped into [0, 2π) in fp64, as fp32 [..., pairs].

    RoPE's descending positions (newest = 0) differ from −k only by a constant per sequence,
    and logits depend on angle differences alone, so −k gives identical attention while letting
    a cached history keep its angles when events are appended. The wrap subtracts a detached
    multiple of 2π, so gradients still reach a learned λ."""
    product = -index.to(torch.float64).unsqueeze(-1) * frequencies
    if isinstance(scale, torch.Tensor):
        product = product * scale.to(torch.float64)
    elif scale != 1.0:
        product = product * scale
    wrapped = product - TWO_PI * torch.floor(product.detach() / TWO_PI)
    return wrapped.to(torch.float32)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x [B, H, S, d_k] by angles given as cos/sin [B, 1, S, d_k/2].

    Computed in fp32 and cast back to x's dtype, as docs/encodings.md, "Rotary arithmetic",
    requires under bf16 autocast."""
    dtype = x.dtype
    x32 = x.float()
    even, odd = x32[..., 0::2], x32[..., 1::2]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    return rotated.to(dtype)
