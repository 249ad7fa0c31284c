"""`rotorec evaluate --compare RUN_A RUN_B …`: paired differences with bootstrap intervals.

All runs are scored on the same events; each bootstrap resample draws users once and applies
the same draw to every run, so the interval is on the *difference* (evaluation.md §1
Statistics). A difference is marked significant when its 95 % interval excludes zero. Each run
uses its own post-hoc calibration when it has one (fitted by a previous `rotorec evaluate`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from features.dataset import SequenceDataset
from training.checkpoint import write_json_atomic
from training.evaluate import _bootstrap_weights, _interval, predict
from training.retrieval import retrieval_report
from training.run import check_data_matches, load_run


def _user_sums(logits: np.ndarray, labels: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, ...]:
    _, inverse = np.unique(users, return_inverse=True)
    count = np.bincount(inverse).astype(np.float64)
    return count, np.bincount(inverse, labels), np.bincount(inverse, np.logaddexp(0.0, logits) - labels * logits)


def _ne(weights: np.ndarray, count: np.ndarray, positives: np.ndarray, loss: np.ndarray) -> np.ndarray:
    n, y = weights @ count, weights @ positives
    rate = y / n
    entropy = -(rate * np.log(np.clip(rate, 1e-300, 1)) + (1 - rate) * np.log(np.clip(1 - rate, 1e-300, 1)))
    return (weights @ loss / n) / np.where(entropy > 0, entropy, np.nan)


def compare(run_dirs: list[str | Path], data_dir: str | Path, out_dir: str | Path, split: str = "test", seed: int = 0) -> dict:
    data = Path(data_dir)
    dataset = SequenceDataset(data, split)
    runs = [load_run(folder) for folder in run_dirs]
    for run in runs:
        check_data_matches(run, dataset.schema, data)
    names = [str(folder) for folder in run_dirs]
    result: dict = {"split": split, "baseline": names[0], "runs": names, "tasks": {}, "next_item": {}}

    shared_tasks = [t for t in runs[0].model.config.tasks if all(t in r.model.config.tasks for r in runs)]
    predictions = [predict(run, dataset) for run in runs]
    for task in shared_tasks:
        columns = [r.model.config.tasks.index(task) for r in runs]
        rows = predictions[0].known[:, columns[0]]
        sums = []
        for run, prediction, column in zip(runs, predictions, columns):
            logits = run.calibrated(task, prediction.logits[rows, column])
            sums.append(_user_sums(logits, prediction.labels[rows, column], prediction.user[rows]))
        count, positives = sums[0][0], sums[0][1]
        point = [float(_ne(np.ones((1, len(count))), count, positives, s[2])[0]) for s in sums]
        deltas = [[] for _ in runs[1:]]
        for weights in _bootstrap_weights(len(count), seed):
            base = _ne(weights, count, positives, sums[0][2])
            for k, s in enumerate(sums[1:]):
                deltas[k].append(_ne(weights, count, positives, s[2]) - base)
        result["tasks"][task] = {"ne": dict(zip(names, point)), "delta_ne": {
            name: _delta(point[k + 1] - point[0], np.concatenate(deltas[k]), lower_is_better=True)
            for k, name in enumerate(names[1:])}}

    if all(run.model.next_item_query is not None for run in runs):
        per_query = []
        for run in runs:
            ranks = retrieval_report(run.model, dataset)["per_query"].astype(np.float64)
            per_query.append({"ndcg@10": np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0.0),
                              "hr@10": (ranks <= 10).astype(np.float64), "mrr": 1 / ranks})
        for metric in ("ndcg@10", "hr@10", "mrr"):
            values = [q[metric] for q in per_query]
            deltas = [[] for _ in runs[1:]]
            for weights in _bootstrap_weights(len(values[0]), seed):
                base = weights @ values[0] / len(values[0])
                for k, v in enumerate(values[1:]):
                    deltas[k].append(weights @ v / len(v) - base)
            result["next_item"][metric] = {
                "value": {name: float(v.mean()) for name, v in zip(names, values)},
                "delta": {name: _delta(float(values[k + 1].mean() - values[0].mean()), np.concatenate(deltas[k]),
                                       lower_is_better=False) for k, name in enumerate(names[1:])}}

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
