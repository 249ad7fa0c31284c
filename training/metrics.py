"""Calibration and ranking metrics (docs/evaluation_details.md, "Metric definitions").

NE, calibration ratio and log loss come from `CalibrationAccumulator` (O(1) float64 state with
`update` (a batch), `merge` (another accumulator, e.g. from another process) and `compute`); AUC,
GAUC, the ECEs and the ranking metrics are functions of the full arrays. AUC and uniform ECE use
torchmetrics; the others are defined here, each where torchmetrics has no metric of the same
definition.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.classification import BinaryAUROC, BinaryCalibrationError

ECE_BINS = 15


def binary_entropy(rate: float) -> float:
    if rate <= 0.0 or rate >= 1.0:
        return float("nan")
    return -(rate * math.log(rate) + (1 - rate) * math.log1p(-rate))


def group_sums(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group (np.unique order): rows, positives and summed log loss, the sufficient statistics
    from which any resample of whole groups gets its log loss and NE without re-scoring."""
    _, inverse = np.unique(groups, return_inverse=True)
    return (
        np.bincount(inverse).astype(np.float64),
        np.bincount(inverse, labels),
        np.bincount(inverse, np.logaddexp(0.0, logits) - labels * logits),
    )


def ne_from_sums(rows: np.ndarray, positives: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """NE for (arrays of) totals; NaN where the base rate is 0 or 1."""
    rate = positives / rows
    entropy = -(rate * np.log(np.clip(rate, 1e-300, 1)) + (1 - rate) * np.log(np.clip(1 - rate, 1e-300, 1)))
    return (loss / rows) / np.where(entropy > 0, entropy, np.nan)


@dataclass
class CalibrationAccumulator:
    """Log loss, NE and calibration ratio from logits: O(1) float64 state."""

    count: float = 0.0
    positives: float = 0.0
    probability_sum: float = 0.0
    log_loss_sum: float = 0.0

    def update(self, logits: np.ndarray, labels: np.ndarray) -> None:
        logits = np.asarray(logits, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.float64)
        # -[y log σ(z) + (1-y) log(1-σ(z))] = softplus(z) - y·z, stable for any z.
        self.log_loss_sum += float(np.sum(np.logaddexp(0.0, logits) - labels * logits))
        self.probability_sum += float(np.sum(1.0 / (1.0 + np.exp(-logits))))
        self.positives += float(labels.sum())
        self.count += float(labels.size)

    def merge(self, other: CalibrationAccumulator) -> None:
        self.count += other.count
        self.positives += other.positives
        self.probability_sum += other.probability_sum
        self.log_loss_sum += other.log_loss_sum

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"count": 0, "log_loss": float("nan"), "ne": float("nan"), "calibration_ratio": float("nan"), "base_rate": float("nan")}
        rate = self.positives / self.count
        log_loss = self.log_loss_sum / self.count
        entropy = binary_entropy(rate)
        if math.isnan(entropy):
            warnings.warn("NE is undefined: the evaluation set has a single class", RuntimeWarning, stacklevel=2)
        return {
            "count": int(self.count),
            "base_rate": rate,
            "log_loss": log_loss,
            "ne": log_loss / entropy if not math.isnan(entropy) else float("nan"),
            "calibration_ratio": self.probability_sum / self.positives if self.positives else float("nan"),
        }


def auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """P(s+ > s-) + ½ P(s+ = s-); NaN when only one class is present."""
    if len(labels) == 0 or labels.min() == labels.max():
        return float("nan")
    metric = BinaryAUROC(thresholds=None)
    return float(metric(torch.from_numpy(probabilities), torch.from_numpy(labels.astype(np.int64))))


def group_auc(probabilities: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Σ_g n_g·AUC_g / Σ_g n_g over groups holding both classes (ties count ½), vectorised."""
    order = np.lexsort((probabilities, groups))
    g, p, y = groups[order], probabilities[order], labels[order]
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    sizes = np.diff(np.concatenate([starts, [len(g)]]))
    positives = np.add.reduceat(y, starts) if len(g) else np.zeros(0)
    negatives = sizes - positives
    # Mid-ranks within each group (ties share the average rank), then Mann-Whitney U per group.
    tie_start = np.flatnonzero(np.concatenate([[True], (g[1:] != g[:-1]) | (p[1:] != p[:-1])]))
    tie_size = np.diff(np.concatenate([tie_start, [len(g)]]))
    group_of_tie = np.searchsorted(starts, tie_start, side="right") - 1
    first_rank = tie_start - starts[group_of_tie] + 1
    mid_rank = np.repeat(first_rank + (tie_size - 1) / 2.0, tie_size)
    rank_sum = np.add.reduceat(mid_rank * y, starts) if len(g) else np.zeros(0)
    eligible = (positives > 0) & (negatives > 0)
    u = rank_sum - positives * (positives + 1) / 2.0
    per_group = np.where(eligible, u / np.maximum(positives * negatives, 1), np.nan)
    weight = sizes * eligible
    value = float(np.sum(np.nan_to_num(per_group) * weight) / weight.sum()) if weight.sum() else float("nan")
    return {
        "gauc": value,
        "gauc_groups": int(eligible.sum()),
        "gauc_skipped_groups": int((~eligible).sum()),
        "gauc_skipped_rows": int(sizes[~eligible].sum()),
        "mean_group_auc": float(np.nanmean(per_group)) if eligible.any() else float("nan"),
        "per_group": {"group": g[starts], "auc": per_group, "rows": sizes},
    }


def uniform_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    if len(labels) == 0:
        return float("nan")
    metric = BinaryCalibrationError(n_bins=bins, norm="l1")
    return float(metric(torch.from_numpy(probabilities), torch.from_numpy(labels.astype(np.int64))))


def equal_mass_bins(probabilities: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Bin index per row: B equal-mass bins at quantiles of p; equal p always share a bin."""
    edges = np.unique(np.quantile(probabilities, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, probabilities, side="right")


def adaptive_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    if len(labels) == 0:
        return float("nan")
    index = equal_mass_bins(probabilities, bins)
    gap = np.abs(np.bincount(index, labels) - np.bincount(index, probabilities))
    return float(gap.sum() / len(labels))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS, adaptive: bool | None = None) -> dict:
    """Per bin: mean p, observed rate with a 95 % Wilson interval, count (adaptive when ȳ < 0.1)."""
    if adaptive is None:
        adaptive = len(labels) > 0 and labels.mean() < 0.1
    index = equal_mass_bins(probabilities, bins) if adaptive else np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    width = index.max() + 1 if len(index) else 0
    n = np.bincount(index, minlength=width).astype(np.float64)
    mean_p = np.bincount(index, probabilities, width) / np.maximum(n, 1)
    rate = np.bincount(index, labels, width) / np.maximum(n, 1)
    z = 1.959963984540054
    centre = (rate + z * z / (2 * n.clip(min=1))) / (1 + z * z / n.clip(min=1))
    half = z * np.sqrt(rate * (1 - rate) / n.clip(min=1) + z * z / (4 * n.clip(min=1) ** 2)) / (1 + z * z / n.clip(min=1))
    keep = n > 0
    return {
        "scheme": "equal_mass" if adaptive else "uniform",
        "bins": bins,
        "mean_probability": mean_p[keep].tolist(),
        "observed_rate": rate[keep].tolist(),
        "count": n[keep].astype(int).tolist(),
        "wilson_low": (centre - half)[keep].tolist(),
        "wilson_high": (centre + half)[keep].tolist(),
    }


def next_item_metrics(ranks: np.ndarray, cutoffs: tuple[int, ...] = (10, 50, 200)) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item) and MRR from full-catalogue ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {"mrr": float(np.mean(1.0 / ranks)) if len(ranks) else float("nan"), "queries": int(len(ranks))}
    for k in cutoffs:
        hit = ranks <= k
        out[f"hr@{k}"] = float(hit.mean()) if len(ranks) else float("nan")
        out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 1), 0.0))) if len(ranks) else float("nan")
    return out


def impression_ranking(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, cutoffs: tuple[int, ...] = (5, 10)) -> dict[str, float]:
    """Within-impression NDCG@k, HR@k, MRR (ties against the item) plus MIND's imp_auc and mrr.

    Impressions without a positive are skipped and counted. Written here rather than taken from
    torchmetrics.retrieval because its tie handling differs: its NDCG averages the gain over tied
    items (sklearn's rule) and its MRR and hit rate order ties by sort position, where ours ranks
    a tied item after all items it ties with (a constant scorer earns nothing)."""
    order = np.lexsort((-scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]])) if len(g) else np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.concatenate([starts, [len(g)]]))
    owner = np.repeat(np.arange(len(starts)), sizes)
    # Rank with ties against the item: 1 + #{strictly higher} + #{equal, others}.
    tie_start = np.flatnonzero(np.concatenate([[True], (g[1:] != g[:-1]) | (s[1:] != s[:-1])])) if len(g) else starts
    tie_size = np.diff(np.concatenate([tie_start, [len(g)]]))
    last_in_tie = np.repeat(tie_start + tie_size, tie_size)
    rank = last_in_tie - starts[owner]
    positives = np.add.reduceat(y, starts) if len(g) else np.zeros(0)
    useful = positives > 0
    relevant = y > 0
    best = np.full(len(starts), np.inf)
    np.minimum.at(best, owner[relevant], rank[relevant])
    reciprocal = np.zeros(len(starts))
    np.add.at(reciprocal, owner[relevant], 1.0 / rank[relevant])
    per_query = {"mrr": 1.0 / best[useful], "mind_mrr": reciprocal[useful] / positives[useful]}
    for k in cutoffs:
        gain = np.zeros(len(starts))
        inside = relevant & (rank <= k)
        np.add.at(gain, owner[inside], 1.0 / np.log2(rank[inside] + 1))
        cumulative_discount = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
        ideal = cumulative_discount[np.minimum(positives, k).astype(np.int64)]
        per_query[f"ndcg@{k}"] = gain[useful] / ideal[useful]
        per_query[f"hr@{k}"] = (best[useful] <= k).astype(np.float64)
    out = {"impressions": int(useful.sum()), "impressions_skipped": int((~useful).sum())}
    out.update({name: float(values.mean()) if len(values) else float("nan") for name, values in per_query.items()})
    out["imp_auc"] = group_auc(s, y, g)["mean_group_auc"]
    out["per_query"] = per_query
    return out
