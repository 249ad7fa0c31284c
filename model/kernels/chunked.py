"""The CPU scan (docs/mixers.md, "Chunked CPU scan"): chunked, vectorised across chunks, no division.

Narrow batches (fewer than SEQUENTIAL_WIDTH lanes per step) are cut into chunks of L ≈ √T steps.
Pass 1 runs every chunk from a zero state at once (one Python step per position in a chunk, each
a [B, chunks, D] operation) to get each chunk's total decay and end state; pass 2 carries the
true state across chunk boundaries (one step per chunk); pass 3 reruns every chunk from its true
starting state and writes h. Each step is an ordinary multiply-add, so the rounding is that of
the sequential loop, and the traffic is about 20 bytes per fp32 element (a and b read twice, h
written once) with no intermediate [B, T, D] tensor.
Wide batches run the plain sequential loop instead, writing h in place (12 bytes per element).

`reverse=True` runs the same recurrence backwards in time (h_t = a_t ⊙ h_{t+1} + b_t), which is
what the backward pass (`chunked_scan_backward`) needs; it only changes the order the loops visit
positions.
"""

from __future__ import annotations

import math

import torch

MIN_CHUNK, MAX_CHUNK = 8, 64
SEQUENTIAL_WIDTH = 32_768
"""From this many (batch × channel) lanes per step, one multiply-add per step already amortises
Python's per-op cost, and a plain sequential pass moves the fewest bytes (12 per fp32 element
against about 20 for the chunked passes); measured crossovers on CPU are in RESULTS.md."""


def chunk_length(steps: int) -> int:
    return max(MIN_CHUNK, min(MAX_CHUNK, round(math.sqrt(steps))))


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 state for fp32/bf16/fp16 inputs, complex64 for complex; float64 stays float64."""
    if dtype in (torch.float64, torch.complex128, torch.complex64):
        return dtype
    return torch.float32


def chunked_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, reverse: bool = False, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """h [B, T, D] for a, b [B, T, D] (a may be an expanded view); h0 [B, D] or None. With
    `reverse`, h0 is the state after the last step and the scan runs from t = T−1 down to 0."""
    batch, steps, channels = b.shape
    work = accumulator_dtype(torch.promote_types(a.dtype, b.dtype))
    h = torch.empty(b.shape, dtype=out_dtype or b.dtype, device=b.device)
    direct = h.dtype == work  # write h in place; otherwise keep the fp32 state and cast on store
    state = torch.zeros(batch, channels, dtype=work, device=b.device) if h0 is None else h0.to(work)
    if steps == 0:
        return h
    size = chunk_length(steps)
    chunks = 0 if batch * channels >= SEQUENTIAL_WIDTH else steps // size
    tail = steps - chunks * size
    # Chunks are aligned to the end where the scan finishes, so the remainder is visited last.
    first = tail if reverse else 0
    body = slice(first, first + chunks * size)
    a_chunks, b_chunks, h_chunks = (x[:, body].unflatten(1, (chunks, size)) for x in (a, b, h))
    order = range(size - 1, -1, -1) if reverse else range(size)
    chunk_order = range(chunks - 1, -1, -1) if reverse else range(chunks)

    if chunks:
        decay = end = None
        for i in order:  # pass 1: each chunk's total decay and end state from zero
            a_i, b_i = a_chunks[:, :, i].to(work), b_chunks[:, :, i].to(work)
            if end is None:
                decay, end = a_i.clone(), b_i.clone()
            else:
                end.mul_(a_i).add_(b_i)
                decay.mul_(a_i)
        starts = torch.empty(batch, chunks, channels, dtype=work, device=b.device)
        for c in chunk_order:  # pass 2: the true state entering each chunk
            starts[:, c] = state
            state = torch.addcmul(end[:, c], decay[:, c], state)
        running = starts
        for i in order:  # pass 3: rerun each chunk from its true start
            if direct:
                running = torch.addcmul(b_chunks[:, :, i], a_chunks[:, :, i], running, out=h_chunks[:, :, i])
            else:
                running = torch.addcmul(b_chunks[:, :, i].to(work), a_chunks[:, :, i].to(work), running)
                h_chunks[:, :, i] = running
    tail_steps = range(tail - 1, -1, -1) if reverse else range(chunks * size, steps)
    for t in tail_steps:
        if direct:
            state = torch.addcmul(b[:, t], a[:, t], state, out=h[:, t])
        else:
            state = torch.addcmul(b[:, t].to(work), a[:, t].to(work), state)
            h[:, t] = state
    return h


def chunked_scan_backward(
    a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, dh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(da, db, dh0) of the forward scan h = chunked_scan(a, b, h0) for the upstream gradient dh
    (docs/mixers.md, "Backward pass"): g_t = dh_t + conj(a_{t+1}) g_{t+1} is the same scan run in
    reverse on shifted gates, accumulated in fp32; db = g in h's dtype, da_t = g_t conj(h_{t−1})
    in a's dtype, dh0 = conj(a_1) g_1 (None without h0)."""
    shifted = torch.zeros_like(a)
    shifted[:, :-1] = a[:, 1:].conj()
    g = chunked_scan(shifted, dh, None, reverse=True, out_dtype=torch.promote_types(dh.dtype, torch.float32))
    da = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    torch.mul(g[:, 1:], h[:, :-1].conj(), out=da[:, 1:])
    if h0 is None:
        da[:, 0] = 0
        return da, g.to(h.dtype), None
    da[:, 0] = g[:, 0] * h0.conj()
    return da, g.to(h.dtype), a[:, 0].conj() * g[:, 0]
