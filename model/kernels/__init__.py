"""Linear-recurrence scans (docs/mixers.md, "The linear scan"): public entry point `linear_scan`, and the
float64 `scan_reference` the fast paths are tested against."""

from rotorec.model.kernels.reference import scan_reference
from rotorec.model.kernels.scan import TRITON_AVAILABLE, linear_scan

__all__ = ["TRITON_AVAILABLE", "linear_scan", "scan_reference"]
