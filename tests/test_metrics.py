"""Every metric against a brute-force or hand-computed reference (docs/evaluation_details.md, "Metric definitions")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ranks_against
from rotorec.training.metrics import (
    CalibrationAccumulator,
    adaptive_ece,
    auc,
    group_auc,
    impression_ranking,
    next_item_metrics,
    reliability,
    uniform_ece,
)
from rotorec.training.retrieval import target_ranks


def _pair_auc(p: np.ndarray, y: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_ne_of_the_constant_base_rate_predictor_is_one() -> None:
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=float)
    rate = labels.mean()
    acc = CalibrationAccumulator()
    acc.update(np.full(8, math.log(rate / (1 - rate))), labels)
    result = acc.compute()
    assert math.isclose(result["ne"], 1.0, rel_tol=1e-12) and math.isclose(result["calibration_ratio"], 1.0, rel_tol=1e-12)


def test_streaming_and_merged_accumulators_agree_with_one_pass() -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=1000) * 3, (rng.random(1000) < 0.3).astype(float)
    whole, parts, other = CalibrationAccumulator(), CalibrationAccumulator(), CalibrationAccumulator()
    whole.update(logits, labels)
    parts.update(logits[:300], labels[:300])
    other.update(logits[300:], labels[300:])
    parts.merge(other)
    p = 1 / (1 + np.exp(-logits))
    direct = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert math.isclose(parts.compute()["log_loss"], direct, rel_tol=1e-9)
    assert all(math.isclose(parts.compute()[k], whole.compute()[k], rel_tol=1e-12) for k in ("ne", "calibration_ratio"))


def test_single_class_ne_is_nan_with_a_warning() -> None:
    acc = CalibrationAccumulator()
    acc.update(np.zeros(3), np.zeros(3))
    with pytest.warns(RuntimeWarning):
        assert math.isnan(acc.compute()["ne"])


def test_ece_of_perfectly_calibrated_scores_is_near_zero() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(float)
    assert uniform_ece(p, y) < 0.005 and adaptive_ece(p, y) < 0.005
    assert uniform_ece(np.full(1000, 0.9), np.zeros(1000)) == pytest.approx(0.9, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6), st.booleans()), min_size=2, max_size=60))
def test_auc_and_gauc_match_pairwise_counting(rows: list[tuple[int, int, bool]]) -> None:
    groups = np.array([g for g, _, _ in rows])
    p = np.array([s / 6 for _, s, _ in rows])  # few distinct scores: many ties
    y = np.array([float(b) for _, _, b in rows])
    if 0 < y.sum() < len(y):
        assert auc(p, y) == pytest.approx(_pair_auc(p, y), abs=1e-6)
    result = group_auc(p, y, groups)
    weights, values, skipped = [], [], 0
    for g in np.unique(groups):
        m = groups == g
        if 0 < y[m].sum() < m.sum():
            weights.append(m.sum())
            values.append(_pair_auc(p[m], y[m]))
        else:
            skipped += 1
    assert result["gauc_skipped_groups"] == skipped
    if weights:
        assert result["gauc"] == pytest.approx(np.dot(weights, values) / sum(weights), abs=1e-12)
    else:
        assert math.isnan(result["gauc"])


def test_adaptive_ece_against_a_direct_computation() -> None:
    p = np.array([0.1, 0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 0.9])
    y = np.array([0, 1, 0, 0, 1, 1, 1, 1], dtype=float)
    # 4 equal-mass bins: {0.1, 0.1}, {0.2, 0.3}, {0.5, 0.6}, {0.8, 0.9}.
    expected = (abs(1 - 0.2) + abs(0 - 0.5) + abs(2 - 1.1) + abs(2 - 1.7)) / 8
    assert adaptive_ece(p, y, bins=4) == pytest.approx(expected)


def test_reliability_bins_have_wilson_intervals() -> None:
    p = np.array([0.05, 0.15, 0.15, 0.95])
    y = np.array([0, 1, 0, 1], dtype=float)
    diagram = reliability(p, y, bins=10, adaptive=False)
    assert diagram["count"] == [1, 2, 1] and diagram["observed_rate"] == [0.0, 0.5, 1.0]
    n, rate, z = 2, 0.5, 1.959963984540054
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert diagram["wilson_low"][1] == pytest.approx(centre - half) and diagram["wilson_high"][1] == pytest.approx(centre + half)


def _brute_rank(scores: list[float], i: int) -> int:
    return 1 + sum(s > scores[i] for s in scores) + sum(s == scores[i] for j, s in enumerate(scores) if j != i)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.booleans()), min_size=1, max_size=50))
def test_impression_ranking_matches_brute_force(rows: list[tuple[int, int, bool]]) -> None:
    groups = np.array([g for g, _, _ in rows])
    scores = np.array([float(s) for _, s, _ in rows])
    labels = np.array([float(b) for _, _, b in rows])
    result = impression_ranking(scores, labels, groups, cutoffs=(2, 5))
    mrr, mind, ndcg2, hr5 = [], [], [], []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        s, y = scores[idx].tolist(), labels[idx]
        if y.sum() == 0:
            continue
        ranks = [_brute_rank(s, i) for i in range(len(idx))]
        relevant = [r for r, label in zip(ranks, y) if label]
        mrr.append(1 / min(relevant))
        mind.append(sum(1 / r for r in relevant) / len(relevant))
        dcg = sum(1 / math.log2(r + 1) for r in relevant if r <= 2)
        ndcg2.append(dcg / sum(1 / math.log2(j + 1) for j in range(1, min(2, len(relevant)) + 1)))
        hr5.append(float(min(relevant) <= 5))
    assert result["impressions"] == len(mrr)
    if mrr:
        assert result["mrr"] == pytest.approx(np.mean(mrr)) and result["mind_mrr"] == pytest.approx(np.mean(mind))
        assert result["ndcg@2"] == pytest.approx(np.mean(ndcg2)) and result["hr@5"] == pytest.approx(np.mean(hr5))


def test_full_catalogue_ranks_count_ties_against_the_target() -> None:
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2]])
    target = np.array([1, 3])
    is_target = np.zeros_like(scores, dtype=bool)
    is_target[np.arange(2), target] = True
    ranks = ranks_against(scores, scores[np.arange(2), target], is_target)
    assert ranks.tolist() == [3, 4]  # a constant scorer earns nothing
    assert target_ranks(torch.from_numpy(scores), torch.from_numpy(target)).tolist() == [3, 4]  # the package's rank
    metrics = next_item_metrics(ranks, cutoffs=(3,))
    assert metrics["hr@3"] == 0.5 and metrics["mrr"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    assert metrics["ndcg@3"] == pytest.approx(0.5 / math.log2(4))
