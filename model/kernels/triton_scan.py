"""Triton scan kernels for CUDA (docs/mixers.md, "Triton kernel"): one program per (sequence, channel tile).

Each program walks time in tiles of CT steps: it loads a [CT, BD] tile coalesced along the
channels, scans it along time with `tl.associative_scan` on (decay, value) pairs, adds the fp32
carry times the tile's running decay, stores h, and keeps the last row as the next carry. Loads
and stores are the only traffic: forward reads a, b and writes h (12 B per fp32 element), the
backward reads dh, a, h and writes da, db (20 B). Complex tensors arrive as interleaved (re, im)
pairs (`torch.view_as_real`) and use a four-value combine.

The backward is the same recurrence backwards in time with the gates shifted by one
(g_t = dh_t + conj(a_{t+1}) g_{t+1}); it loads tiles at reversed offsets and scans forwards, as
`reverse=True` scans have wrong-result reports (triton #4362). Under TRITON_INTERPRET=1 these
kernels run on CPU tensors, which is how CI checks them without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

TIME_TILE = 32
CHANNEL_TILE = 64


@triton.jit
def _combine_real(a1, b1, a2, b2):
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _combine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    return (ar1 * ar2 - ai1 * ai2, ar1 * ai2 + ai1 * ar2, ar2 * br1 - ai2 * bi1 + br2, ar2 * bi1 + ai2 * br1 + bi2)


@triton.jit
def _last_row(x, rows, CT: tl.constexpr):
    return tl.sum(tl.where((rows == CT - 1)[:, None], x, 0.0), axis=0)


@triton.jit
def _tile(D, BD: tl.constexpr):
    """This program's channels, sequence and channel mask, and a zero fp32 carry (re, im)."""
    channel = tl.program_id(0) * BD + tl.arange(0, BD)
    zero = tl.zeros([BD], dtype=tl.float32)
    return channel, tl.program_id(1).to(tl.int64), channel < D, zero, zero


@triton.jit
def _scan_forward(a_ptr, b_ptr, h0_ptr, h_ptr, T, D, HAS_H0: tl.constexpr, COMPLEX: tl.constexpr, CT: tl.constexpr, BD: tl.constexpr):
    """h_t = a_t h_{t−1} + b_t for one sequence and BD channels (pairs, if COMPLEX)."""
    channel, sequence, live_channel, carry_re, carry_im = _tile(D, BD)
    rows = tl.arange(0, CT)
    width = 2 if COMPLEX else 1
    if HAS_H0:
        carry_re = tl.load(h0_ptr + (sequence * D + channel) * width, mask=live_channel, other=0.0).to(tl.float32)
        if COMPLEX:
            carry_im = tl.load(h0_ptr + (sequence * D + channel) * 2 + 1, mask=live_channel, other=0.0).to(tl.float32)
    for start in range(0, T, CT):
        t = start + rows
        mask = (t < T)[:, None] & live_channel[None, :]
        offset = ((sequence * T + t[:, None]) * D + channel[None, :]) * width
        a_re = tl.load(a_ptr + offset, mask=mask, other=1.0).to(tl.float32)
        b_re = tl.load(b_ptr + offset, mask=mask, other=0.0).to(tl.float32)
        if COMPLEX:
            a_im = tl.load(a_ptr + offset + 1, mask=mask, other=0.0).to(tl.float32)
            b_im = tl.load(b_ptr + offset + 1, mask=mask, other=0.0).to(tl.float32)
            decay_re, decay_im, h_re, h_im = tl.associative_scan((a_re, a_im, b_re, b_im), 0, _combine_complex)
            h_re = h_re + decay_re * carry_re[None, :] - decay_im * carry_im[None, :]
            h_im = h_im + decay_re * carry_im[None, :] + decay_im * carry_re[None, :]
            tl.store(h_ptr + offset + 1, h_im.to(h_ptr.dtype.element_ty), mask=mask)
            carry_im = _last_row(h_im, rows, CT)
        else:
            decay_re, h_re = tl.associative_scan((a_re, b_re), 0, _combine_real)
            h_re = h_re + decay_re * carry_re[None, :]
        tl.store(h_ptr + offset, h_re.to(h_ptr.dtype.element_ty), mask=mask)
        carry_re = _last_row(h_re, rows, CT)


@triton.jit
def _scan_backward(
    a_ptr,
    h_ptr,
    h0_ptr,
    dh_ptr,
    da_ptr,
    db_ptr,
    dh0_ptr,
    T,
    D,
    HAS_H0: tl.constexpr,
    COMPLEX: tl.constexpr,
    CT: tl.constexpr,
    BD: tl.constexpr,
):
    """g_t = dh_t + conj(a_{t+1}) g_{t+1}; db = g, da = g conj(h_{t−1}), dh0 = conj(a_0) g_0."""
    channel, sequence, live_channel, carry_re, carry_im = _tile(D, BD)
    rows = tl.arange(0, CT)
    width = 2 if COMPLEX else 1
    for start in range(0, T, CT):
        t = T - 1 - start - rows  # reversed offsets: row 0 is the latest step of the tile
        live = t >= 0
        mask = live[:, None] & live_channel[None, :]
        offset = ((sequence * T + t[:, None]) * D + channel[None, :]) * width
        step = D * width  # one time step, in elements
        has_next = mask & (t + 1 < T)[:, None]
        has_previous = mask & (t >= 1)[:, None]
        # Rows past t = 0 must be the identity (1, 0) so the carry leaves the loop as g_0.
        next_re = tl.where(live[:, None], tl.load(a_ptr + offset + step, mask=has_next, other=0.0).to(tl.float32), 1.0)
        grad_re = tl.load(dh_ptr + offset, mask=mask, other=0.0).to(tl.float32)
        previous_re = tl.load(h_ptr + offset - step, mask=has_previous, other=0.0).to(tl.float32)
        if HAS_H0:
            first = mask & (t == 0)[:, None]
            previous_re += tl.load(h0_ptr + (sequence * D + channel[None, :]) * width + 0 * t[:, None], mask=first, other=0.0).to(
                tl.float32
            )
        if COMPLEX:
            next_im = -tl.load(a_ptr + offset + step + 1, mask=has_next, other=0.0).to(tl.float32)  # conj
            grad_im = tl.load(dh_ptr + offset + 1, mask=mask, other=0.0).to(tl.float32)
            previous_im = tl.load(h_ptr + offset - step + 1, mask=has_previous, other=0.0).to(tl.float32)
            if HAS_H0:
                previous_im += tl.load(h0_ptr + (sequence * D + channel[None, :]) * 2 + 1 + 0 * t[:, None], mask=first, other=0.0).to(
                    tl.float32
                )
            decay_re, decay_im, g_re, g_im = tl.associative_scan((next_re, next_im, grad_re, grad_im), 0, _combine_complex)
            g_re = g_re + decay_re * carry_re[None, :] - decay_im * carry_im[None, :]
            g_im = g_im + decay_re * carry_im[None, :] + decay_im * carry_re[None, :]
            # da = g · conj(h_{t−1})
            tl.store(da_ptr + offset, (g_re * previous_re + g_im * previous_im).to(da_ptr.dtype.element_ty), mask=mask)
            tl.store(da_ptr + offset + 1, (g_im * previous_re - g_re * previous_im).to(da_ptr.dtype.element_ty), mask=mask)
            tl.store(db_ptr + offset + 1, g_im.to(db_ptr.dtype.element_ty), mask=mask)
            carry_im = _last_row(g_im, rows, CT)
        else:
            decay_re, g_re = tl.associative_scan((next_re, grad_re), 0, _combine_real)
            g_re = g_re + decay_re * carry_re[None, :]
            tl.store(da_ptr + offset, (g_re * previous_re).to(da_ptr.dtype.element_ty), mask=mask)
        tl.store(db_ptr + offset, g_re.to(db_ptr.dtype.element_ty), mask=mask)
        carry_re = _last_row(g_re, rows, CT)
    if HAS_H0:
        first_re = tl.load(a_ptr + sequence * T * D * width + channel * width, mask=live_channel, other=0.0)
        if COMPLEX:
            first_im = tl.load(a_ptr + sequence * T * D * 2 + channel * 2 + 1, mask=live_channel, other=0.0)
            tl.store(dh0_ptr + (sequence * D + channel) * 2, first_re * carry_re + first_im * carry_im, mask=live_channel)
            tl.store(dh0_ptr + (sequence * D + channel) * 2 + 1, first_re * carry_im - first_im * carry_re, mask=live_channel)
        else:
            tl.store(dh0_ptr + sequence * D + channel, first_re * carry_re, mask=live_channel)


def _pairs(x: torch.Tensor) -> torch.Tensor:
    """Complex tensors as interleaved (re, im) storage; real tensors as they are."""
    return torch.view_as_real(x) if x.is_complex() else x


def _launch(kernel, io: torch.Tensor, has_h0: bool, *tensors: torch.Tensor) -> None:
    """One program per (channel tile, sequence) over io's [B, T, D] layout; a tensor the kernel
    does not read (no h0) is passed as io, which HAS_H0 tells the kernel to ignore."""
    batch, steps, channels = io.shape
    grid = (triton.cdiv(channels, CHANNEL_TILE), batch)
    pairs = [_pairs(io if t is None else t) for t in tensors]
    kernel[grid](*pairs, steps, channels, HAS_H0=has_h0, COMPLEX=io.is_complex(), CT=TIME_TILE, BD=CHANNEL_TILE)


def triton_scan_forward(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    a, b = a.contiguous(), b.contiguous()
    h = torch.empty_like(b)
    start = None if h0 is None else h0.contiguous()
    _launch(_scan_forward, b, start is not None, a, b, start, h)
    return h


def triton_scan_backward(
    a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, dh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    a, h, dh = a.contiguous(), h.contiguous(), dh.contiguous().to(h.dtype)
    da = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    db = torch.empty_like(h)
    start = None if h0 is None else h0.contiguous()
    dh0 = None if start is None else torch.empty_like(start)
    _launch(_scan_backward, h, start is not None, a, h, start, dh, da, db, dh0)
    return da, db, dh0
