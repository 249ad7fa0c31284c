"""`rotorec evaluate --compare RUN_A RUN_B …`: paired differences with bootstrap intervals.

All runs are scored on the same events; each bootstrap resample draws users once and applies
the same draw to every run, so the interval is on the *difference* (evaluation.md §1
Statistics). A difference is marked significant when its 95 % interval excludes zero. Each run
uses its own post-hoc calibration when it has one (fitted by a previous `rotorec evaluate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.dataset import SequenceDataset
from training.checkpoint import write_json_atomic
from training.evaluate import _bootstrap_weights, _interval, predict
from training.metrics import group_sums, ne_from_sums
from training.retrieval import retrieval_report
from training.run import LoadedRun, check_data_matches, load_run


@dataclass
class UnitStatistics:
    """One run's sufficient statistics on a split, per resampling unit, so any bootstrap resample
    of the units gives that run's metric without re-scoring: per user (count, positives, summed
    log loss) for each task's NE, per next-item query the NDCG@10 / HR@10 / reciprocal rank."""

    tasks: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    next_item: dict[str, np.ndarray]


def unit_statistics(run: LoadedRun, dataset: SequenceDataset, exclude_seen: bool = False) -> UnitStatistics:
    """Calibrated with the run's own post-hoc calibration when `rotorec evaluate` fitted one."""
    tasks = {}
    if run.model.config.tasks:
        prediction = predict(run, dataset)
        for column, task in enumerate(run.model.config.tasks):
            rows = prediction.known[:, column]
            logits, labels = run.calibrated(task, prediction.logits[rows, column]), prediction.labels[rows, column]
            tasks[task] = group_sums(logits, labels, prediction.user[rows])
    next_item = {}
    if run.model.next_item_query is not None:
        ranks = retrieval_report(run.model, dataset, exclude_seen)["per_query"].astype(np.float64)
        next_item = {"ndcg@10": np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0.0),
                     "hr@10": (ranks <= 10).astype(np.float64), "mrr": 1 / ranks}
    return UnitStatistics(tasks, next_item)


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


def pooled_delta(baseline: list[UnitStatistics], challenger: list[UnitStatistics], key: tuple[str, str],
                 seed: int = 0) -> dict:
    """Seed-averaged difference challenger − baseline, paired by seed (list position) and by unit:
    every resample draws the units once and applies the draw to all runs, so the interval is on the
    difference itself (evaluation.md §1 Statistics). One pair of runs is the plain paired bootstrap."""
    if len(baseline) != len(challenger) or not baseline:
        raise ValueError("pooled_delta needs the same, non-zero number of baseline and challenger runs")
    full = np.ones((1, _units(baseline[0], key)))
    per_seed = [float(_value(c, key, full)[0] - _value(b, key, full)[0]) for b, c in zip(baseline, challenger)]
    draws = [np.mean([_value(c, key, weights) - _value(b, key, weights) for b, c in zip(baseline, challenger)], axis=0)
             for weights in _bootstrap_weights(full.shape[1], seed)]
    result = _delta(float(np.mean(per_seed)), np.concatenate(draws), lower_is_better=key[0] == "ne")
    signs = {np.sign(d) for d in per_seed}
    result.update(per_seed=per_seed, seeds_agree=len(signs) == 1 and 0 not in signs)
    if len(per_seed) > 1 and not result["seeds_agree"] and result["significant"]:
        result["verdict"] = "seeds disagree"
    return result


def pooled_interval(runs: list[UnitStatistics], key: tuple[str, str], seed: int = 0) -> dict:
    """The seed-averaged metric with a 95 % interval from resampling units (one draw for all seeds)."""
    draws = [np.mean([_value(stats, key, weights) for stats in runs], axis=0)
             for weights in _bootstrap_weights(_units(runs[0], key), seed)]
    return {"value": float(np.mean([point_value(stats, key) for stats in runs])), "ci95": _interval(np.concatenate(draws))}


def point_value(stats: UnitStatistics, key: tuple[str, str]) -> float:
    return float(_value(stats, key, np.ones((1, _units(stats, key))))[0])


def compare(run_dirs: list[str | Path], data_dir: str | Path, out_dir: str | Path, split: str = "test", seed: int = 0,
            exclude_seen: bool = False) -> dict:
    data = Path(data_dir)
    dataset = SequenceDataset(data, split)
    runs = [load_run(folder) for folder in run_dirs]
    for run in runs:
        check_data_matches(run, dataset.schema, data)
    names = [str(folder) for folder in run_dirs]
    statistics = [unit_statistics(run, dataset, exclude_seen) for run in runs]
    result: dict = {"split": split, "baseline": names[0], "runs": names, "tasks": {}, "next_item": {}}
    for key in shared_metrics(statistics):
        values = {name: point_value(stats, key) for name, stats in zip(names, statistics)}
        deltas = {name: pooled_delta(statistics[:1], [stats], key, seed) for name, stats in zip(names[1:], statistics[1:])}
        if key[0] == "ne":
            result["tasks"][key[1]] = {"ne": values, "delta_ne": deltas}
        else:
            result["next_item"][key[1]] = {"value": values, "delta": deltas}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "comparison.json", result)
    (out / "comparison.md").write_text(_markdown(result), encoding="utf-8")
    return result


def _delta(point: float, samples: np.ndarray, lower_is_better: bool) -> dict:
    low, high = _interval(samples)
    significant = bool(low > 0 or high < 0)
    better = significant and ((point < 0) if lower_is_better else (point > 0))
    return {"delta": point, "ci95": [low, high], "significant": significant,
            "verdict": "better" if better else ("worse" if significant else "no significant difference")}


def _markdown(result: dict) -> str:
    lines = [f"# Comparison on {result['split']} (baseline: {result['baseline']})", "",
             "Paired bootstrap over users, 1,000 resamples; a delta is significant when its 95 % CI excludes 0.", ""]
    if result["tasks"]:
        lines += ["| task | run | NE | Δ NE vs baseline | 95 % CI | verdict |", "|---|---|---|---|---|---|"]
        for task, entry in result["tasks"].items():
            lines.append(f"| {task} | {result['baseline']} | {entry['ne'][result['baseline']]:.4f} | — | — | baseline |")
            for name, delta in entry["delta_ne"].items():
                lines.append(f"| {task} | {name} | {entry['ne'][name]:.4f} | {delta['delta']:+.4f} | "
                             f"[{delta['ci95'][0]:+.4f}, {delta['ci95'][1]:+.4f}] | {delta['verdict']} |")
    for metric, entry in result["next_item"].items():
        for name, delta in entry["delta"].items():
            lines.append(f"- next-item {metric}: {name} {entry['value'][name]:.4f} vs {entry['value'][result['baseline']]:.4f}, "
                         f"Δ {delta['delta']:+.4f} [{delta['ci95'][0]:+.4f}, {delta['ci95'][1]:+.4f}], {delta['verdict']}")
    return "\n".join(lines) + "\n"


def summary(result: dict) -> str:
    return json.dumps({task: {name: {"delta": d["delta"], "ci95": d["ci95"], "verdict": d["verdict"]}
                              for name, d in entry["delta_ne"].items()} for task, entry in result["tasks"].items()}, indent=2)
