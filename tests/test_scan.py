"""linear_scan's fast paths (chunked CPU, Triton) against the float64 sequential reference.

Tolerances are those of docs/mixers.md, "Tests": relative L2 error ≤ 1e-6 for fp32 (h, h_last and every
gradient) and ≤ 5e-3 for bf16 I/O with fp32 gates. Inputs are random (never zeros), with random
h0 and random upstream gradients for both h and h_last. The Triton kernels run compiled on a GPU
and in Triton's CPU interpreter elsewhere (conftest sets TRITON_INTERPRET=1), on small shapes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rotorec.model.kernels import TRITON_AVAILABLE, compiled, linear_scan, scan_reference
from rotorec.model.kernels.chunked import chunk_length, chunked_scan, chunked_scan_backward

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_MARKS = [pytest.mark.skipif(not TRITON_AVAILABLE, reason="triton is not installed")]
if os.environ.get("TRITON_INTERPRET") == "1":  # in Triton's CPU interpreter its cases take most of this file's minute
    TRITON_MARKS.append(pytest.mark.slow)
BACKENDS = [
    "chunked",
    pytest.param("triton", marks=TRITON_MARKS),
    pytest.param(
        "compiled",
        marks=pytest.mark.skipif(
            DEVICE != "cpu" or not compiled.available(), reason="the compiled scan needs a CPU run and a C++ compiler"
        ),
    ),
]
FP32 = 1e-6
BF16 = 5e-3


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    wide = torch.complex128 if reference.is_complex() else torch.float64
    value, reference = value.detach().to(wide), reference.detach().to(wide)
    return float((value - reference).norm() / reference.norm().clamp(min=1e-30))


def random_inputs(batch: int, steps: int, channels: int, complex_: bool, seed: int, low: float = 0.8, high: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    modulus = low + (high - low) * torch.rand(batch, steps, channels, generator=generator)
    if complex_:
        angle = 2 * torch.pi * torch.rand(batch, steps, channels, generator=generator)
        a = torch.polar(modulus, angle)
        b = torch.randn(batch, steps, channels, generator=generator, dtype=torch.complex64)
        h0 = torch.randn(batch, channels, generator=generator, dtype=torch.complex64)
    else:
        a = modulus
        b = torch.randn(batch, steps, channels, generator=generator)
        h0 = torch.randn(batch, channels, generator=generator)
    return a, b, h0


def gradients(a, b, h0, lengths, scan, upstream, upstream_last):
    """Forward outputs and (da, db, dh0) of <h, upstream> + <h_last, upstream_last>."""
    leaves = [x.detach().requires_grad_() for x in (a, b, h0)]
    h, last = scan(*leaves, lengths)
    loss = (h * upstream.to(h.dtype).conj()).real.sum() + (last * upstream_last.to(last.dtype).conj()).real.sum()
    return (h, last, *torch.autograd.grad(loss, leaves))


def check_against_reference(a, b, h0, backend, tolerance, lengths=None):
    generator = torch.Generator().manual_seed(99)
    shape = (*b.shape, 2) if b.is_complex() else b.shape
    upstream = torch.view_as_complex(torch.randn(shape, generator=generator)) if b.is_complex() else torch.randn(shape, generator=generator)
    upstream_last = upstream[:, 0].clone()
    device = lambda x: None if x is None else x.to(DEVICE)  # noqa: E731
    fast = gradients(
        device(a),
        device(b),
        device(h0),
        device(lengths),
        lambda a_, b_, h_, n_: linear_scan(a_, b_, h_, n_, backend=backend),
        device(upstream),
        device(upstream_last),
    )
    wide = torch.complex128 if b.is_complex() else torch.float64
    slow = gradients(
        a.to(wide if a.is_complex() else torch.float64),
        b.to(wide),
        h0.to(wide),
        lengths,
        scan_reference,
        upstream.to(wide),
        upstream_last.to(wide),
    )
    for name, value, reference in zip(["h", "h_last", "da", "db", "dh0"], fast, slow):
        assert relative_error(value.cpu(), reference) <= tolerance, (name, relative_error(value.cpu(), reference))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("steps,channels", [(1, 3), (7, 64), (31, 5), (32, 65), (33, 17), (70, 12)])
def test_fp32_matches_float64_reference(backend: str, complex_: bool, steps: int, channels: int) -> None:
    """T = 1, odd T, T below, at and just past the Triton time tile (32), three tiles; channel
    counts below, at and past the channel tile (64)."""
    a, b, h0 = random_inputs(2, steps, channels, complex_, seed=steps * 100 + channels)
    check_against_reference(a, b, h0, backend, FP32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_inputs_and_outputs_with_fp32_gates(backend: str) -> None:
    a, b, h0 = random_inputs(2, 70, 33, False, seed=3, low=0.9, high=0.999)
    check_against_reference(a, b.bfloat16(), h0, backend, BF16)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_padded_batch_equals_each_sequence_alone(backend: str, complex_: bool) -> None:
    a, b, h0 = random_inputs(3, 40, 9, complex_, seed=7)
    lengths = torch.tensor([40, 1, 33])
    check_against_reference(a, b, h0, backend, FP32, lengths)
    h, last = linear_scan(a.to(DEVICE), b.to(DEVICE), h0.to(DEVICE), lengths.to(DEVICE), backend=backend)
    for row, length in enumerate(lengths.tolist()):
        alone, alone_last = linear_scan(
            a[row : row + 1, :length].to(DEVICE), b[row : row + 1, :length].to(DEVICE), h0[row : row + 1].to(DEVICE), backend=backend
        )
        assert relative_error(h[row, :length].cpu(), alone[0].cpu()) <= FP32
        assert relative_error(last[row].cpu(), alone_last[0].cpu()) <= FP32
        assert not h[row, length:].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gates_exactly_zero_one_and_near_one(backend: str) -> None:
    a, b, h0 = random_inputs(2, 40, 6, False, seed=11)
    a[:, :, 0], a[:, :, 1], a[:, :, 2] = 0.0, 1.0, 0.9999
    a[:, 5] = 0.0  # a full reset in the middle
    check_against_reference(a, b, h0, backend, FP32)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_wide_batches_take_the_sequential_cpu_path_and_match(complex_: bool) -> None:
    """From SEQUENTIAL_WIDTH lanes per step the CPU scan loops over time directly."""
    from rotorec.model.kernels.chunked import SEQUENTIAL_WIDTH

    a, b, h0 = random_inputs(2, 9, SEQUENTIAL_WIDTH // 2, complex_, seed=23)
    check_against_reference(a, b, h0, "chunked", FP32)
    if not complex_:
        check_against_reference(a, b.bfloat16(), h0, "chunked", BF16)


def test_chunked_gradcheck_in_float64() -> None:
    for complex_ in (False, True):
        a, b, h0 = random_inputs(2, 19, 3, complex_, seed=5)
        wide = torch.complex128 if complex_ else torch.float64
        inputs = [x.to(wide).requires_grad_() for x in (a, b, h0)]
        assert torch.autograd.gradcheck(lambda *x: linear_scan(*x, backend="chunked"), inputs)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "no_h0"])
def test_chunked_backward_matches_autograd_through_the_reference(complex_: bool, with_h0: bool) -> None:
    """The chunked back end's backward on its own (not through linear_scan): (da, db, dh0) for a
    random upstream dh equal autograd's through scan_reference, relative L2 error ≤ 1e-6 (fp32).
    70 steps give 8 chunks of 8 and a 6-step tail, so every pass of the reverse scan runs."""
    a, b, h0 = random_inputs(2, 70, 9, complex_, seed=29)
    h0 = h0 if with_h0 else None
    dh = torch.randn(b.shape, generator=torch.Generator().manual_seed(31), dtype=b.dtype)
    da, db, dh0 = chunked_scan_backward(a, chunked_scan(a, b, h0), h0, dh)
    wide = torch.complex128 if complex_ else torch.float64
    leaves = [x.to(wide).requires_grad_() for x in (a, b) + ((h0,) if with_h0 else ())]
    reference, _ = scan_reference(*leaves)
    expected = torch.autograd.grad((reference * dh.to(wide).conj()).real.sum(), leaves)
    assert da.dtype == a.dtype and db.dtype == b.dtype
    for name, value, reference_grad in zip(["da", "db", "dh0"], (da, db, dh0), expected):
        assert relative_error(value, reference_grad) <= FP32, (name, relative_error(value, reference_grad))
    assert (dh0 is None) == (not with_h0)


def test_time_invariant_gate_broadcasts_and_sums_its_gradient() -> None:
    _, b, h0 = random_inputs(2, 30, 8, True, seed=13)
    gate = torch.polar(torch.rand(8) * 0.1 + 0.9, torch.rand(8) * 6.0)
    full = gate.expand(b.shape).clone()
    check_against_reference(full, b, h0, "chunked", FP32)
    gate = gate.requires_grad_()
    h, _ = linear_scan(gate, b, h0)
    (grad,) = torch.autograd.grad(h.abs().sum(), gate)
    wide_gate = gate.detach().to(torch.complex128).requires_grad_()
    reference, _ = scan_reference(wide_gate, b.to(torch.complex128), h0.to(torch.complex128))
    (expected,) = torch.autograd.grad(reference.abs().sum(), wide_gate)
    assert relative_error(grad, expected) <= FP32


def test_streaming_steps_equal_the_full_scan() -> None:
    a, b, h0 = random_inputs(2, 25, 4, True, seed=17)
    h, last = linear_scan(a[:, :20], b[:, :20], h0)
    state = last
    for t in range(20, 25):
        _, state = linear_scan(a[:, t : t + 1], b[:, t : t + 1], state)  # one decode step, as the mixers stream
    full, full_last = linear_scan(a, b, h0)
    assert relative_error(state, full_last) <= FP32
    assert relative_error(h, full[:, :20]) <= FP32


def test_chunk_length_follows_square_root_of_time() -> None:
    assert chunk_length(1) == 8 and chunk_length(2048) == 45 and chunk_length(10**6) == 64


def test_bad_arguments_are_named() -> None:
    b = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="gates must stay fp32"):
        linear_scan(torch.rand(2, 5, 3).bfloat16(), b)
    with pytest.raises(ValueError, match=r"\[batch, time, channels\]"):
        linear_scan(torch.rand(5, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="h0 must be"):
        linear_scan(torch.rand(2, 5, 3), b, torch.zeros(3))


@pytest.mark.slow
def test_without_a_working_compiler_the_cpu_scan_falls_back_to_chunked(tmp_path) -> None:
    """A broken or missing compiler costs speed, never correctness: `auto` picks the chunked scan."""
    probe = (
        "import torch; from rotorec.model.kernels import compiled, linear_scan;"
        "from rotorec.model.kernels.scan import resolve_backend;"
        "a, b = torch.rand(2, 5, 3), torch.randn(2, 5, 3); h, _ = linear_scan(a, b);"
        "print(compiled.available(), resolve_backend('auto', a, b), bool(torch.isfinite(h).all()))"
    )
    env = {**os.environ, "CXX": "/bin/false", "ROTOREC_KERNEL_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.stdout.split() == ["False", "chunked", "True"], done.stderr[-2000:]
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob("tmp*"))
