"""`rotorec evaluate --compare RUN_A RUN_B …`: paired differences with bootstrap intervals.

All runs are scored on the same events; each bootstrap resample draws users once and applies
the same draw to every run, so the interval is on the *difference* (docs/evaluation.md,
"Statistics"). A difference is marked significant when its 95 % interval excludes zero. Each run
uses its own post-hoc calibration when it has one (fitted by a previous `rotorec evaluate`).
"""

from __future__ import annotations

import json
from pathlib import Path


from rotorec.features.dataset import SequenceDataset
from rotorec.training.checkpoint import write_json_atomic
from rotorec.training.bootstrap import UnitStatistics, next_item_units, point_value, pooled_delta, shared_metrics
from rotorec.training.evaluate import predict
from rotorec.training.metrics import group_sums
from rotorec.training.retrieval import retrieval_report
from rotorec.training.run import LoadedRun, check_data_matches, load_run


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
    if run.model.has_next_item:
        next_item = next_item_units(retrieval_report(run.model, dataset, exclude_seen)["per_query"])
    return UnitStatistics(tasks, next_item)


def compare(
    run_dirs: list[str | Path], data_dir: str | Path, out_dir: str | Path, split: str = "test", seed: int = 0, exclude_seen: bool = False
) -> dict:
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


def _markdown(result: dict) -> str:
    lines = [
        f"# Comparison on {result['split']} (baseline: {result['baseline']})",
        "",
        "Paired bootstrap over users, 1,000 resamples; a delta is significant when its 95 % CI excludes 0.",
        "",
    ]
    if result["tasks"]:
        lines += ["| task | run | NE | Δ NE vs baseline | 95 % CI | verdict |", "|---|---|---|---|---|---|"]
        for task, entry in result["tasks"].items():
            lines.append(f"| {task} | {result['baseline']} | {entry['ne'][result['baseline']]:.4f} | — | — | baseline |")
            for name, delta in entry["delta_ne"].items():
                lines.append(
                    f"| {task} | {name} | {entry['ne'][name]:.4f} | {delta['delta']:+.4f} | "
                    f"[{delta['ci95'][0]:+.4f}, {delta['ci95'][1]:+.4f}] | {delta['verdict']} |"
                )
    for metric, entry in result["next_item"].items():
        for name, delta in entry["delta"].items():
            lines.append(
                f"- next-item {metric}: {name} {entry['value'][name]:.4f} vs {entry['value'][result['baseline']]:.4f}, "
                f"Δ {delta['delta']:+.4f} [{delta['ci95'][0]:+.4f}, {delta['ci95'][1]:+.4f}], {delta['verdict']}"
            )
    return "\n".join(lines) + "\n"


def summary(result: dict) -> str:
    return json.dumps(
        {
            task: {name: {"delta": d["delta"], "ci95": d["ci95"], "verdict": d["verdict"]} for name, d in entry["delta_ne"].items()}
            for task, entry in result["tasks"].items()
        },
        indent=2,
    )
