"""Quality of the recorded true probabilities: the floor any model can reach on the feed.

These are plain batch computations over arrays held in memory, used only to describe the
generated data in its manifest (docs/synthetic_feed.md, "Oracle").
"""

from __future__ import annotations

import numpy as np


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    y = labels.astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def normalized_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Log loss divided by the entropy of the base rate; the constant base-rate predictor scores 1."""
    rate = float(np.mean(labels))
    if rate in (0.0, 1.0):
        return float("nan")
    entropy = -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate))
    return log_loss(labels, probabilities) / entropy


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Uniform-bin l1 ECE: bin = min(floor(p·B), B-1)."""
    index = np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, labels, bins) - np.bincount(index, probabilities, bins))
    return float(gap.sum() / max(count.sum(), 1))


def calibration_summary(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Ratio Σp/Σy with its standard error under the model (Var Σy = Σp(1-p)), and ECE."""
    positives = float(labels.sum())
    return {
        "rows": int(len(labels)),
        "base_rate": float(labels.mean()) if len(labels) else None,
        "oracle_ne": normalized_entropy(labels, probabilities),
        "calibration_ratio": float(probabilities.sum() / positives) if positives else None,
        "calibration_ratio_se": float(np.sqrt(np.sum(probabilities * (1 - probabilities))) / positives) if positives else None,
        "ece15": expected_calibration_error(labels, probabilities),
    }
