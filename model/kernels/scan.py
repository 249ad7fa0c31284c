"""`linear_scan`: h_t = a_t ⊙ h_{t−1} + b_t over [B, T, D], with autograd, on any device.

The forward runs on Triton kernels on CUDA, and on CPU on the compiled kernel (`cpu_scan.cpp`,
built on first use) or, without a compiler or for float64, the chunked scan; the backward is the
same scan backwards in time with shifted gates (docs/mixers.md, "Backward pass"):
g_t = ḡ_t + conj(a_{t+1}) g_{t+1}, db_t = g_t, da_t = g_t conj(h_{t−1}), dh0 = conj(a_1) g_1,
in PyTorch's conjugate-Wirtinger convention for complex tensors. Each back end is a forward and
backward pair in its own module (triton_scan.py, compiled.py, chunked.py); this module only picks
one and wires it into autograd. All accumulate in fp32 whatever the I/O dtype, and gates (a) must
be fp32 (or complex64): bf16 rounds every gate above 0.996 to 1 (docs/mixers.md, "Numerics").
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import torch

from rotorec.model.kernels import compiled
from rotorec.model.kernels.chunked import chunked_scan, chunked_scan_backward

Backend = Literal["auto", "triton", "compiled", "chunked"]

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
"""Triton is optional off CUDA; it is imported only when its back end is used."""

TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.complex64)


def resolve_backend(backend: Backend, a: torch.Tensor, b: torch.Tensor) -> Literal["triton", "compiled", "chunked"]:
    if backend == "auto":
        if b.device.type == "cuda":
            return "triton" if TRITON_AVAILABLE and b.dtype in TRITON_DTYPES else "chunked"
        return "compiled" if compiled.supports(a, b) and compiled.available() else "chunked"
    if backend == "triton" and not TRITON_AVAILABLE:
        raise RuntimeError("the triton back end needs the 'triton' package")
    if backend == "compiled" and not (compiled.supports(a, b) and compiled.available()):
        raise RuntimeError(f"the compiled back end needs a C++ compiler and CPU tensors of {list(compiled.KINDS)}")
    return backend


def _forward(a, b, h0, backend):
    if backend == "triton":
        from rotorec.model.kernels.triton_scan import triton_scan_forward

        return triton_scan_forward(a, b, h0)
    if backend == "compiled":
        return compiled.compiled_scan_forward(a, b, h0)
    return chunked_scan(a, b, h0)


def _backward(a, h, h0, dh, backend):
    if backend == "triton":
        from rotorec.model.kernels.triton_scan import triton_scan_backward

        return triton_scan_backward(a, h, h0, dh)
    if backend == "compiled":
        return compiled.compiled_scan_backward(a, h, h0, dh)
    return chunked_scan_backward(a, h, h0, dh)


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, backend):
        h = _forward(a, b, h0, backend)
        ctx.save_for_backward(a, h, h0)
        ctx.backend = backend
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        da, db, dh0 = _backward(a, h, h0, dh, ctx.backend)
        return da, db, dh0, None


def _check(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> None:
    if b.dim() != 3:
        raise ValueError(f"b must be [batch, time, channels], got shape {tuple(b.shape)}")
    if a.is_complex() != b.is_complex():
        raise ValueError("a and b must both be real or both complex")
    if not a.is_complex() and a.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"gates must stay fp32 or fp64 (got {a.dtype}); bf16 rounds gates near 1 to 1")
    if h0 is not None and h0.shape != (b.shape[0], b.shape[2]):
        raise ValueError(f"h0 must be [batch, channels] = {(b.shape[0], b.shape[2])}, got {tuple(h0.shape)}")


def linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, lengths: torch.Tensor | None = None, backend: Backend = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h [B, T, D], h_last [B, D]) for h_t = a_t ⊙ h_{t−1} + b_t, h_0 = h0 (zero if None).

    a broadcasts to b's shape (a [D] is a time-invariant gate). Real: a fp32/fp64, b fp32,
    bf16 or fp64; complex: complex64/complex128 (rotation × decay). With `lengths` [B], steps
    t ≥ length leave the state unchanged and output 0, and h_last is the state at each
    sequence's true end. The state is accumulated in fp32; h and h_last have b's dtype."""
    _check(a, b, h0)
    a = torch.broadcast_to(a, b.shape)
    if lengths is not None:
        live = (torch.arange(b.shape[1], device=b.device) < lengths.to(b.device).unsqueeze(1)).unsqueeze(-1)
        a = torch.where(live, a, torch.ones((), dtype=a.dtype, device=a.device))
        b = torch.where(live, b, torch.zeros((), dtype=b.dtype, device=b.device))
    chosen = resolve_backend(backend, a, b)
    if chosen == "triton" and b.dtype == torch.bfloat16 and h0 is not None:
        h0 = h0.float()
    h = _LinearScan.apply(a, b, h0, chosen)
    last = h[:, -1] if h.shape[1] else (h0 if h0 is not None else h.new_zeros(b.shape[0], b.shape[2]))
    if lengths is not None:
        h = torch.where(live, h, torch.zeros((), dtype=h.dtype, device=h.device))
    return h, last
