"""The compiled CPU scan: `cpu_scan.cpp` built on first use with the system C++ compiler.

It is a plain C function called through ctypes (no torch headers, so the build takes about a
second), cached per source, flags and compiler under `ROTOREC_KERNEL_CACHE` (default
`~/.cache/rotorec/kernels`). Where there is no compiler, or `ROTOREC_COMPILED_SCAN=0`, `available()`
is False and `linear_scan` keeps the chunked PyTorch scan; nothing else changes.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_scan.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
KINDS = {torch.float32: 0, torch.bfloat16: 1, torch.complex64: 2}
"""I/O dtypes of the compiled kernels (gates are fp32, or complex64 with complex I/O)."""


def _cache_dir() -> Path:
    configured = os.environ.get("ROTOREC_KERNEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "rotorec" / "kernels"


def _build(compiler: str, target: Path) -> None:
    """Compile to a private name and rename into place, so concurrent first uses never load a
    half-written library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", staging], check=True, capture_output=True, text=True, timeout=300)
        os.replace(staging, target)
    finally:
        Path(staging).unlink(missing_ok=True)


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    if os.environ.get("ROTOREC_COMPILED_SCAN", "1") == "0":
        return None
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        log.info("compiled CPU scan unavailable: no C++ compiler; using the chunked scan")
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version, platform.machine()]).encode()).hexdigest()[:16]
        target = _cache_dir() / f"cpu_scan-{key}.so"
        if not target.is_file():
            _build(compiler, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        log.warning("compiled CPU scan unavailable (%s); using the chunked scan", detail.strip().splitlines()[-1:])
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.rotorec_scan_forward.argtypes = [ctypes.c_int, ptr, ptr, ptr, ptr, *[i64] * 7, ctypes.c_int]
    lib.rotorec_scan_backward.argtypes = [ctypes.c_int, ptr, ptr, ptr, ptr, ptr, ptr, ptr, *[i64] * 7, ctypes.c_int]
    lib.rotorec_scan_forward.restype = lib.rotorec_scan_backward.restype = ctypes.c_int
    return lib


def available() -> bool:
    return library() is not None


def supports(a: torch.Tensor, b: torch.Tensor) -> bool:
    gate = torch.complex64 if b.dtype == torch.complex64 else torch.float32
    return a.device.type == "cpu" and b.dtype in KINDS and a.dtype == gate


def _floats(x: torch.Tensor) -> torch.Tensor:
    """Complex tensors as their interleaved float storage (strides double, channels double)."""
    return torch.view_as_real(x).flatten(-2) if x.is_complex() else x


def _gate_strides(a: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """a with unit channel stride; batch and time strides stay free (stride 0 for a shared gate)."""
    if a.stride(-1) != 1:
        a = a.contiguous()
    scale = 2 if a.is_complex() else 1
    return a, a.stride(0) * scale, a.stride(1) * scale


def _state(h0: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor | None:
    if h0 is None:
        return None
    wide = torch.complex64 if b.is_complex() else torch.float32
    return _floats(h0.to(wide).contiguous())


def _address(x: torch.Tensor | None) -> int | None:
    return None if x is None else x.data_ptr()


def _call(entry: str, io: torch.Tensor, a: torch.Tensor, pointers: list[int | None]) -> None:
    """Run one kernel over io's [B, T, D] layout; `pointers` are the entry's tensors after the gate.

    The gate keeps its own batch and time strides (0 where shared); every other tensor is
    contiguous, in floats (complex channels count twice)."""
    a, a_batch, a_time = _gate_strides(a)
    batch, steps, channels = io.shape
    width = channels * (2 if io.is_complex() else 1)
    layout = (batch, steps, width, a_batch, a_time, steps * width, width)
    status = getattr(library(), entry)(KINDS[io.dtype], a.data_ptr(), *pointers, *layout, torch.get_num_threads())
    if status:
        raise RuntimeError(f"compiled scan refused dtype {io.dtype}")


def compiled_scan_forward(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """h [B, T, D] with b's dtype; the state is accumulated in fp32 (complex64)."""
    b = b.contiguous()
    h = torch.empty_like(b)
    state = _state(h0, b)  # held here: the kernel reads it through a raw pointer
    _call("rotorec_scan_forward", b, a, [b.data_ptr(), _address(state), h.data_ptr()])
    return h


def compiled_scan_backward(
    a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, dh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(da, db, dh0) in one reverse pass: reads dh, a and h once, writes da and db once."""
    dh = dh.to(h.dtype).contiguous()
    batch, _, channels = h.shape
    da = torch.empty(h.shape, dtype=a.dtype)
    db = torch.empty_like(h)
    dh0 = None if h0 is None else torch.empty(batch, channels, dtype=a.dtype)
    state = _state(h0, h)  # held here: the kernel reads it through a raw pointer
    pointers = [h.data_ptr(), _address(state), dh.data_ptr(), da.data_ptr(), db.data_ptr(), _address(dh0)]
    _call("rotorec_scan_backward", h, a, pointers)
    return da, db, (None if dh0 is None else dh0.to(h0.dtype))
