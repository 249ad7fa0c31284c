"""linear_scan speed against the memory-bandwidth floor, an eager loop and torch's associative_scan.

For each shape and kind (real fp32, real with bf16 I/O, complex64 at equal bytes) it times the
forward and the backward of `linear_scan` and reports effective GB/s = minimal bytes ÷ median
time (forward reads a, b and writes h; backward reads dh, a, h and writes da, db; docs/mixers.md,
"Memory traffic") as a share of a device-to-device `copy_` timed in the same run. Side by side, in the same
run: an eager per-step PyTorch loop (forward, and forward + backward), on CPU the chunked
PyTorch scan that the compiled kernel replaces, and, where it runs,
`torch._higher_order_ops.associative_scan`.

    python benchmarks/bench_scan.py [--device cuda] [--shapes 256x2048x512 1024x200x256] [--json ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from rotorec.model.kernels import linear_scan
from rotorec.model.kernels.scan import resolve_backend
from provenance import write_report  # benchmarks/provenance.py, beside this script

GPU_SHAPES = ["256x2048x512", "1024x200x256"]
CPU_SHAPES = ["32x2048x512", "1024x200x256"]
KINDS = {  # name: (gate dtype, input/output dtype, bytes per element of a, of b/h)
    "real_fp32": (torch.float32, torch.float32, 4, 4),
    "real_bf16io": (torch.float32, torch.bfloat16, 4, 2),
    "complex64": (torch.complex64, torch.complex64, 8, 8),
}


def median_time(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median seconds per call; `triton.testing.do_bench` on CUDA, wall clock on CPU.

    On CPU the first calls at a new shape are slow for reasons outside the scan (the operating
    system finding pages for the new outputs: the second backward at 1024x200x256 took 3x the
    steady state on our machine), so `warmup` calls run untimed first; a training
    loop lives in the steady state."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=5, rep=max(50, repeats * 10), return_mode="median") / 1e3
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def copy_bandwidth(device: torch.device, repeats: int) -> float:
    """Bytes per second of a large copy_, counting read + write."""
    size = (1 << 30 if device.type == "cuda" else 1 << 28) // 4
    source, target = torch.empty(size, device=device), torch.empty(size, device=device)
    return 2 * source.numel() * 4 / median_time(lambda: target.copy_(source), device, repeats)


def inputs(shape: tuple[int, int, int], kind: str, device: torch.device):
    gate_dtype, io_dtype, _, _ = KINDS[kind]
    batch, steps, channels = shape
    if gate_dtype.is_complex:  # equal bytes: half as many complex channels
        channels //= 2
        a = torch.polar(
            torch.rand(batch, steps, channels, device=device) * 0.1 + 0.9, torch.rand(batch, steps, channels, device=device) * 6.28
        )
        b = torch.randn(batch, steps, channels, device=device, dtype=torch.complex64)
    else:
        a = torch.rand(batch, steps, channels, device=device) * 0.1 + 0.9
        b = torch.randn(batch, steps, channels, device=device).to(io_dtype)
    return a, b


def eager_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The per-step loop a user would write; `unbind` keeps its backward linear (indexing a[:, t]
    instead would add a full-size zero gradient per step)."""
    state = torch.zeros_like(b[:, 0])
    outputs = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        state = a_t * state + b_t
        outputs.append(state)
    return torch.stack(outputs, dim=1)


def torch_associative_scan(a: torch.Tensor, b: torch.Tensor):
    """torch's prototype scan (a point of comparison only: docs/mixers.md, "Scan benchmarks"),
    or None if unavailable."""
    try:
        from torch._higher_order_ops.associative_scan import associative_scan
    except ImportError:
        return None

    def combine(left, right):
        return left[0] * right[0], left[1] * right[0] + right[1]

    return lambda: associative_scan(combine, (a, b), dim=1, combine_mode="generic")


def measure(shape_text: str, kind: str, device: torch.device, repeats: int, bandwidth: float, eager: bool) -> dict:
    shape = tuple(int(x) for x in shape_text.split("x"))
    a, b = inputs(shape, kind, device)
    _, _, gate_bytes, io_bytes = KINDS[kind]
    elements = a.numel()
    forward_bytes = elements * (gate_bytes + 2 * io_bytes)
    backward_bytes = elements * (2 * gate_bytes + 3 * io_bytes)  # read dh, a, h; write da, db
    forward = median_time(lambda: linear_scan(a, b), device, repeats)
    a_leaf, b_leaf = a.clone().requires_grad_(), b.clone().requires_grad_()
    upstream = torch.randn_like(b)

    def forward_backward():
        h, _ = linear_scan(a_leaf, b_leaf)
        torch.autograd.grad(h, (a_leaf, b_leaf), upstream)

    both = median_time(forward_backward, device, repeats)
    backward = max(both - forward, 1e-12)
    row = {
        "shape": shape_text,
        "kind": kind,
        "backend": resolve_backend("auto", a, b),
        "forward_ms": forward * 1e3,
        "backward_ms": backward * 1e3,
        "backward_over_forward": backward / forward,
        "forward_gbps": forward_bytes / forward / 1e9,
        "backward_gbps": backward_bytes / backward / 1e9,
        "forward_pct_copy": 100 * forward_bytes / forward / bandwidth,
        "backward_pct_copy": 100 * backward_bytes / backward / bandwidth,
    }
    if row["backend"] == "compiled":  # the PyTorch fallback it replaces, same inputs, same run
        chunked_forward = median_time(lambda: linear_scan(a, b, backend="chunked"), device, repeats)

        def chunked_both():
            h, _ = linear_scan(a_leaf, b_leaf, backend="chunked")
            torch.autograd.grad(h, (a_leaf, b_leaf), upstream)

        chunked_total = median_time(chunked_both, device, repeats)
        row.update(
            chunked_forward_ms=chunked_forward * 1e3,
            chunked_fwd_bwd_ms=chunked_total * 1e3,
            speedup_vs_chunked_forward=chunked_forward / forward,
            speedup_vs_chunked_fwd_bwd=chunked_total / both,
        )
    if eager:
        eager_forward = median_time(lambda: eager_scan(a, b), device, max(1, repeats // 3), warmup=1)

        def eager_both():
            h = eager_scan(a_leaf, b_leaf)
            torch.autograd.grad(h, (a_leaf, b_leaf), upstream)

        eager_total = median_time(eager_both, device, max(1, repeats // 3), warmup=1)
        row.update(
            eager_forward_ms=eager_forward * 1e3,
            eager_fwd_bwd_ms=eager_total * 1e3,
            speedup_forward=eager_forward / forward,
            speedup_fwd_bwd=eager_total / both,
        )
    # The prototype compiles itself with inductor; on CPU that means a C++ toolchain and minutes
    # of compilation per shape, so it is only timed on CUDA.
    comparable = device.type == "cuda" and not a.is_complex() and b.dtype == torch.float32
    reference = torch_associative_scan(a, b) if comparable else None
    if reference is not None:
        try:
            row["torch_associative_scan_ms"] = median_time(reference, device, max(1, repeats // 3)) * 1e3
        except Exception as error:  # a prototype: report why it did not run instead of failing the benchmark
            row["torch_associative_scan_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return row


def ratio(row: dict, key: str) -> str:
    return f"{row[key]:.1f}x" if key in row else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", help="BxTxD (default: the GPU shapes of docs/mixers.md, smaller on CPU)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-eager", action="store_true", help="skip the (slow) eager loop")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/out/scan.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    shapes = args.shapes or (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    bandwidth = copy_bandwidth(device, args.repeats)
    print(f"copy bandwidth (read + write): {bandwidth / 1e9:.1f} GB/s", flush=True)
    print(
        f"{'shape':>14} {'kind':>12} {'fwd ms':>8} {'bwd ms':>8} {'bwd/fwd':>7} {'fwd %copy':>9} {'bwd %copy':>9} "
        f"{'vs eager fwd':>12} {'vs eager f+b':>12} {'vs chunked f+b':>14}",
        flush=True,
    )
    rows = []
    for shape in shapes:
        for kind in args.kinds:
            r = measure(shape, kind, device, args.repeats, bandwidth, not args.no_eager)
            rows.append(r)
            print(
                f"{r['shape']:>14} {r['kind']:>12} {r['forward_ms']:>8.2f} {r['backward_ms']:>8.2f} "
                f"{r['backward_over_forward']:>7.2f} {r['forward_pct_copy']:>8.1f}% {r['backward_pct_copy']:>8.1f}% "
                f"{ratio(r, 'speedup_forward'):>12} {ratio(r, 'speedup_fwd_bwd'):>12} "
                f"{ratio(r, 'speedup_vs_chunked_fwd_bwd'):>14}",
                flush=True,
            )
    write_report("scan", device, rows, args.json, copy_gbps=bandwidth / 1e9)


if __name__ == "__main__":
    main()
