"""Bootstrap statistics shared by `rotorec evaluate`, `--compare` and the ablation suite.

Intervals resample whole units (users for NE, queries for next-item metrics), 1,000 times,
percentile method (docs/evaluation.md, Statistics). A run's metric is kept as per-unit sufficient
statistics (`UnitStatistics`) so any resample gives its value without re-scoring; differences
between runs apply one draw to every run, so the interval is on the difference itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rotorec.training.metrics import ne_from_sums

BOOTSTRAP_RESAMPLES = 1_000


def bootstrap_weights(units: int, seed: int, resamples: int = BOOTSTRAP_RESAMPLES):
    """Multinomial resampling counts [chunk, units], yielded in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 20_000_000 // max(units, 1)))
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        yield rng.multinomial(units, np.full(units, 1.0 / units), size=size).astype(np.float64)
        done += size


def interval(samples: np.ndarray) -> list[float]:
    finite = samples[np.isfinite(samples)]
    return [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))] if len(finite) else [math.nan, math.nan]


@dataclass
class UnitStatistics:
    """One run's sufficient statistics on a split, per resampling unit, so any bootstrap resample
    of the units gives that run's metric without re-scoring: per user (count, positives, summed
    log loss) for each task's NE, per next-item query the NDCG@10 / HR@10 / reciprocal rank."""

    tasks: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    next_item: dict[str, np.ndarray]


def _ne(weights: np.ndarray, sums: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    return ne_from_sums(*(weights @ total for total in sums))


def shared_metrics(statistics: list[UnitStatistics]) -> list[tuple[str, str]]:
    """(kind, name) pairs every run reports: ("ne", task) and ("next_item", metric)."""
    tasks = [t for t in statistics[0].tasks if all(t in s.tasks for s in statistics)]
    items = [m for m in statistics[0].next_item if all(m in s.next_item for s in statistics)]
    return [("ne", t) for t in tasks] + [("next_item", m) for m in items]


def _value(stats: UnitStatistics, key: tuple[str, str], weights: np.ndarray) -> np.ndarray:
    kind, name = key
    if kind == "ne":
        return _ne(weights, stats.tasks[name])
    values = stats.next_item[name]
    return weights @ values / len(values)


def _units(stats: UnitStatistics, key: tuple[str, str]) -> int:
    kind, name = key
    return len(stats.tasks[name][0]) if kind == "ne" else len(stats.next_item[name])


def pooled_delta(baseline: list[UnitStatistics], challenger: list[UnitStatistics], key: tuple[str, str], seed: int = 0) -> dict:
    """Seed-averaged difference challenger − baseline, paired by seed (list position) and by unit:
    every resample draws the units once and applies the draw to all runs, so the interval is on the
    difference itself (docs/evaluation.md, Statistics). One pair of runs is the plain paired bootstrap."""
    if len(baseline) != len(challenger) or not baseline:
        raise ValueError("pooled_delta needs the same, non-zero number of baseline and challenger runs")
    full = np.ones((1, _units(baseline[0], key)))
    per_seed = [float(_value(c, key, full)[0] - _value(b, key, full)[0]) for b, c in zip(baseline, challenger)]
    draws = [
        np.mean([_value(c, key, weights) - _value(b, key, weights) for b, c in zip(baseline, challenger)], axis=0)
        for weights in bootstrap_weights(full.shape[1], seed)
    ]
    result = delta_verdict(float(np.mean(per_seed)), np.concatenate(draws), lower_is_better=key[0] == "ne")
    signs = {np.sign(d) for d in per_seed}
    result.update(per_seed=per_seed, seeds_agree=len(signs) == 1 and 0 not in signs)
    if len(per_seed) > 1 and not result["seeds_agree"] and result["significant"]:
        result["verdict"] = "seeds disagree"
    return result


def pooled_interval(runs: list[UnitStatistics], key: tuple[str, str], seed: int = 0) -> dict:
    """The seed-averaged metric with a 95 % interval from resampling units (one draw for all seeds)."""
    draws = [np.mean([_value(stats, key, weights) for stats in runs], axis=0) for weights in bootstrap_weights(_units(runs[0], key), seed)]
    return {"value": float(np.mean([point_value(stats, key) for stats in runs])), "ci95": interval(np.concatenate(draws))}


def point_value(stats: UnitStatistics, key: tuple[str, str]) -> float:
    return float(_value(stats, key, np.ones((1, _units(stats, key))))[0])


def next_item_units(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query NDCG@10, HR@10 and reciprocal rank from full-catalogue ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return {"ndcg@10": np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0.0), "hr@10": (ranks <= 10).astype(np.float64), "mrr": 1 / ranks}


def delta_verdict(point: float, samples: np.ndarray, lower_is_better: bool) -> dict:
    low, high = interval(samples)
    significant = bool(low > 0 or high < 0)
    better = significant and ((point < 0) if lower_is_better else (point > 0))
    return {
        "delta": point,
        "ci95": [low, high],
        "significant": significant,
        "verdict": "better" if better else ("worse" if significant else "no significant difference"),
    }
