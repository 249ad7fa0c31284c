"""Linear-recurrence scans (docs/mixers.md, "The linear scan"): public entry point `linear_scan`, one step
`scan_step`, and the float64 `scan_reference` the fast paths are tested against."""

from model.kernels.reference import scan_reference
from model.kernels.scan import TRITON_AVAILABLE, linear_scan, scan_step

__all__ = ["TRITON_AVAILABLE", "linear_scan", "scan_reference", "scan_step"]
