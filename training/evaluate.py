"""`rotorec evaluate`: calibration and ranking metrics with bootstrap CIs, a report and plots.

metrics.json is keyed split -> task -> metric (`log_loss`, `ne`, `calibration_ratio`, `ece`,
`ece_adaptive`, `auc`, `gauc`, `oracle_ne`, and for impression logs `ndcg@5`, `ndcg@10`,
`mrr`, `mind_mrr`, `imp_auc`), with `ci95` holding [low, high] per metric. Confidence intervals
resample users (impressions for within-impression ranking), 1,000 times, percentile method
(docs/evaluation.md, "Statistics"). Post-hoc calibration (Platt scaling per task) is fitted on the
validation split, stored in the run, and every metric is reported before and after it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rotorec.features.dataset import SequenceDataset
from rotorec.model.inputs import encode_batch
from rotorec.training.baselines import CountClickModel, PopularityScorer
from rotorec.training.bootstrap import UnitStatistics, bootstrap_weights, interval, next_item_units, pooled_delta
from rotorec.training.checkpoint import write_json_atomic
from rotorec.training.metrics import (
    CalibrationAccumulator,
    adaptive_ece,
    auc,
    group_auc,
    group_sums,
    impression_ranking,
    ne_from_sums,
    reliability,
    uniform_ece,
)
from rotorec.training.retrieval import retrieval_report
from rotorec.training.trainer import task_columns
from rotorec.training.run import LoadedRun, check_data_matches, load_run, save_calibration

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """One row per target event of a split."""

    user: np.ndarray  # int codes
    impression: np.ndarray  # 0 = none
    logits: np.ndarray  # [N, tasks]
    labels: np.ndarray  # [N, tasks]
    known: np.ndarray  # bool [N, tasks]
    oracle: np.ndarray  # [N, tasks with a true probability]


@torch.inference_mode()
def predict(run: LoadedRun, dataset: SequenceDataset, batch_size: int = 512) -> Predictions:
    model = run.model
    device = next(model.parameters()).device
    columns = task_columns(dataset.schema, model.config.tasks).to(device)
    users, impressions, logits, labels, known, oracle = [], [], [], [], [], []
    user_codes: dict[str, int] = {}
    for batch in dataset.in_order(batch_size, device):
        hidden = encode_batch(model, batch).hidden
        chosen = (batch.target & batch.valid).cpu()
        codes = torch.tensor([user_codes.setdefault(u, len(user_codes)) for u in batch.users])
        users.append(codes.unsqueeze(1).expand_as(chosen)[chosen].numpy())
        impressions.append(batch.impression.cpu()[chosen].numpy())
        logits.append(model.task_logits(hidden).float().cpu()[chosen].numpy().astype(np.float64))
        labels.append(batch.labels[..., columns].cpu()[chosen].numpy())
        known.append(batch.label_mask[..., columns].cpu()[chosen].numpy())
        oracle.append(batch.probabilities.cpu()[chosen].numpy())
    join = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    return Predictions(join(users), join(impressions), join(logits), join(labels), join(known), join(oracle))


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """p = sigmoid(scale·logit + bias) minimising log loss (L-BFGS in float64)."""
    z = torch.from_numpy(logits.astype(np.float64))
    y = torch.from_numpy(labels.astype(np.float64))
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe", tolerance_grad=1e-10)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * z + params[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = params.detach()
    return {"scale": float(fitted[0]), "bias": float(fitted[1])}


def task_report(
    logits: np.ndarray, labels: np.ndarray, users: np.ndarray, impressions: np.ndarray, oracle: np.ndarray | None, seed: int
) -> dict:
    """All per-task metrics of one split (rows already restricted to known labels)."""
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    accumulator = CalibrationAccumulator()
    accumulator.update(logits, labels)
    result = accumulator.compute()
    by_user = group_auc(probabilities, labels, users)
    result.update(
        ece=uniform_ece(probabilities, labels),
        ece_adaptive=adaptive_ece(probabilities, labels),
        ece_bins=15,
        auc=auc(probabilities, labels),
        gauc=by_user["gauc"],
        gauc_skipped_groups=by_user["gauc_skipped_groups"],
        gauc_skipped_rows=by_user["gauc_skipped_rows"],
    )
    if oracle is not None and np.isfinite(oracle).all() and len(oracle):
        reference = CalibrationAccumulator()
        clipped = np.clip(oracle, 1e-7, 1 - 1e-7)
        reference.update(np.log(clipped) - np.log1p(-clipped), labels)
        result["oracle_ne"] = reference.compute()["ne"]
    if (impressions > 0).any():
        ranking = impression_ranking(probabilities[impressions > 0], labels[impressions > 0], impressions[impressions > 0])
        per_query = ranking.pop("per_query")
        result.update(ranking)
        result["ci95"] = _mean_intervals(per_query, seed)
    else:
        result["ci95"] = {}
    result["ci95"].update(_user_intervals(logits, labels, probabilities, users, by_user["per_group"], seed))
    result["reliability"] = reliability(probabilities, labels)
    return result


def _user_intervals(logits, labels, probabilities, users, per_user_auc, seed) -> dict[str, list[float]]:
    """CIs of log loss, NE, calibration ratio and GAUC by resampling users."""
    codes, inverse = np.unique(users, return_inverse=True)
    count, positives, loss = group_sums(logits, labels, users)
    prob = np.bincount(inverse, probabilities)
    auc_by_code = dict(zip(per_user_auc["group"].tolist(), zip(per_user_auc["auc"], per_user_auc["rows"])))
    group_auc_values = np.array([auc_by_code[c][0] for c in codes])
    group_rows = np.array([auc_by_code[c][1] for c in codes], dtype=np.float64) * np.isfinite(group_auc_values)
    samples = {"log_loss": [], "ne": [], "calibration_ratio": [], "gauc": []}
    for weights in bootstrap_weights(len(codes), seed):
        n, y, ll, p = weights @ count, weights @ positives, weights @ loss, weights @ prob
        samples["log_loss"].append(ll / n)
        samples["ne"].append(ne_from_sums(n, y, ll))
        samples["calibration_ratio"].append(np.where(y > 0, p / np.where(y > 0, y, 1), np.nan))
        w = weights * group_rows
        samples["gauc"].append((w @ np.nan_to_num(group_auc_values)) / np.where(w.sum(1) > 0, w.sum(1), np.nan))
    return {name: interval(np.concatenate(values)) for name, values in samples.items()}


def _mean_intervals(per_query: dict[str, np.ndarray], seed: int) -> dict[str, list[float]]:
    out = {}
    for name, values in per_query.items():
        draws = [weights @ values / len(values) for weights in bootstrap_weights(len(values), seed)] if len(values) else []
        out[name] = interval(np.concatenate(draws)) if draws else [math.nan, math.nan]
    return out


def evaluate(
    run_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    splits: tuple[str, ...] = ("test",),
    seed: int = 0,
    exclude_seen: bool = False,
) -> dict:
    run = load_run(run_dir, with_calibration=False)  # refitted below
    data = Path(data_dir)
    valid = SequenceDataset(data, "valid")
    check_data_matches(run, valid.schema, data)
    tasks = run.model.config.tasks
    fitted = predict(run, valid) if tasks else None  # a next-item-only model has nothing to calibrate
    calibration = {}
    for k, task in enumerate(tasks):
        rows = fitted.known[:, k]
        if rows.any() and 0 < fitted.labels[rows, k].sum() < rows.sum():
            calibration[task] = fit_platt(fitted.logits[rows, k], fitted.labels[rows, k])
    save_calibration(Path(run_dir), calibration)
    run.calibration = calibration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {}
    train = SequenceDataset(data, "train")
    count_models = {task: CountClickModel(train, task) for task in tasks}
    for split in splits:
        dataset = valid if split == "valid" else SequenceDataset(data, split)
        predictions = fitted if split == "valid" or not tasks else predict(run, dataset)
        metrics[split] = {}
        for k, task in enumerate(tasks):
            rows = predictions.known[:, k]
            oracle_column = run.schema.probabilities.index(task) if task in run.schema.probabilities else None
            oracle = predictions.oracle[rows, oracle_column] if oracle_column is not None else None
            raw = task_report(
                predictions.logits[rows, k], predictions.labels[rows, k], predictions.user[rows], predictions.impression[rows], oracle, seed
            )
            fit = calibration.get(task, {"scale": 1.0, "bias": 0.0})
            adjusted = task_report(
                predictions.logits[rows, k] * fit["scale"] + fit["bias"],
                predictions.labels[rows, k],
                predictions.user[rows],
                predictions.impression[rows],
                oracle,
                seed,
            )
            metrics[split][task] = {**_scalars(adjusted), "ci95": adjusted["ci95"], "uncalibrated": _scalars(raw), "calibration": fit}
            counts = count_models[task].logits(dataset)[rows]
            metrics[split][task]["baseline"] = _count_baseline(
                task,
                counts,
                predictions.logits[rows, k] * fit["scale"] + fit["bias"],
                predictions.labels[rows, k],
                predictions.user[rows],
                predictions.impression[rows],
                seed,
            )
            _plot(out, split, task, adjusted, predictions.logits[rows, k] * fit["scale"] + fit["bias"], predictions.labels[rows, k])
            write_json_atomic(out / f"reliability_{split}_{task}.json", adjusted["reliability"])
        if run.model.has_next_item:
            metrics[split]["next_item"] = _retrieval(run, dataset, seed, exclude_seen, train)
    write_json_atomic(out / "metrics.json", metrics)
    (out / "report.md").write_text(_report(run, metrics), encoding="utf-8")
    log.info("evaluated", extra={"run": str(run_dir), "out": str(out)})
    return metrics


def _retrieval(run: LoadedRun, dataset: SequenceDataset, seed: int, exclude_seen: bool, train: SequenceDataset | None = None) -> dict:
    """Full-catalogue next-item metrics with CIs from resampling queries (one per user in LOO),
    and, given the training split, the popularity baseline with the model's lift over it."""
    report = retrieval_report(run.model, dataset, exclude_seen)
    ranks = report.pop("per_query").astype(np.float64)
    report.pop("users")
    per_query = {"mrr": 1.0 / ranks}
    for k in (10, 50, 200):
        per_query[f"hr@{k}"] = (ranks <= k).astype(np.float64)
        per_query[f"ndcg@{k}"] = np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)
    report["ci95"] = _mean_intervals(per_query, seed)
    if train is not None:
        popularity = retrieval_report(PopularityScorer(train), dataset, exclude_seen)
        model, base = UnitStatistics({}, next_item_units(ranks)), UnitStatistics({}, next_item_units(popularity["per_query"]))
        report["baseline"] = {
            "model": "popularity",
            **{k: popularity[k] for k in ("ndcg@10", "hr@10", "mrr")},
            "lift": {k: _lift(pooled_delta([base], [model], ("next_item", k), seed)) for k in ("ndcg@10", "hr@10", "mrr")},
        }
    return report


def _count_baseline(
    task: str,
    baseline_logits: np.ndarray,
    model_logits: np.ndarray,
    labels: np.ndarray,
    users: np.ndarray,
    impressions: np.ndarray,
    seed: int,
) -> dict:
    """The count model's metrics on the same events, and the model's NE lift over it (paired over users)."""
    report = _scalars(task_report(baseline_logits, labels, users, impressions, None, seed))
    base = UnitStatistics({task: group_sums(baseline_logits, labels, users)}, {})
    model = UnitStatistics({task: group_sums(model_logits, labels, users)}, {})
    keep = ("ne", "auc", "gauc", "ece", "ndcg@10", "imp_auc")
    return {
        "model": "count",
        **{k: report[k] for k in keep if k in report},
        "lift": {"ne": _lift(pooled_delta([base], [model], ("ne", task), seed))},
    }


def _lift(delta: dict) -> dict:
    return {k: delta[k] for k in ("delta", "ci95", "verdict")}


def _scalars(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("ci95", "reliability")}


def _plot(out: Path, split: str, task: str, report: dict, logits: np.ndarray, labels: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diagram = report["reliability"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    mean_p, rate = np.array(diagram["mean_probability"]), np.array(diagram["observed_rate"])
    low, high = np.array(diagram["wilson_low"]), np.array(diagram["wilson_high"])
    top = max(float(mean_p.max(initial=0)), float(high.max(initial=0)), 1e-3) * 1.05
    left.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    error = np.clip([rate - low, high - rate], 0, None)  # rounding can put a bound a hair past the rate
    left.errorbar(mean_p, rate, yerr=error, fmt="o-", capsize=3, label="observed (95% Wilson)")
    left.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel="mean predicted probability",
        ylabel="observed rate",
        title=f"{task} reliability ({diagram['scheme']} bins, {split})",
    )
    left.legend(loc="upper left")
    probabilities = 1 / (1 + np.exp(-logits))
    bins = np.linspace(0, max(float(probabilities.max(initial=0)), 1e-3), 40)
    right.hist(probabilities[labels == 0], bins=bins, alpha=0.6, density=True, label="negative")
    right.hist(probabilities[labels == 1], bins=bins, alpha=0.6, density=True, label="positive")
    right.set(xlabel="predicted probability", ylabel="density", title=f"{task} scores ({split})")
    right.legend()
    figure.tight_layout()
    figure.savefig(out / f"reliability_{split}_{task}.png", dpi=110)
    plt.close(figure)


def _baseline_lines(baseline: dict, model: dict, keys: tuple[str, ...]) -> list[str]:
    """The baseline's numbers beside the model's, with the lift (model − baseline) and its interval."""
    rows = ["| metric | " + baseline["model"] + " | model | Δ [95 % CI] | verdict | × baseline |", "|---|---|---|---|---|---|"]
    for key in keys:
        lift = baseline["lift"][key]
        ratio = model[key] / baseline[key] if baseline[key] > 0 else math.inf
        rows.append(
            f"| {key} | {baseline[key]:.4f} | {model[key]:.4f} | {lift['delta']:+.4f} "
            f"[{lift['ci95'][0]:+.4f}, {lift['ci95'][1]:+.4f}] | {lift['verdict']} | {ratio:.2f} |"
        )
    return [f"Against the {baseline['model']} baseline (training-target counts; paired bootstrap over queries):", "", *rows, ""]


def _report(run: LoadedRun, metrics: dict) -> str:
    lines = [
        f"# Evaluation of {run.folder}",
        "",
        f"Model: encoding `{run.model.config.encoding}`, mixers {run.model.config.mixers}, "
        f"d = {run.model.config.d_model}, trained {run.manifest.get('steps')} steps.",
        "",
        "Metrics after post-hoc calibration (Platt scaling fitted on the validation split); "
        "95 % bootstrap intervals resample users (impressions for within-impression ranking).",
        "",
    ]
    for split, tasks in metrics.items():
        retrieval = tasks.get("next_item")
        tasks = {k: v for k, v in tasks.items() if k != "next_item"}
        lines += [f"## {split}", ""]
        if retrieval is not None:
            ci = retrieval["ci95"]["ndcg@10"]
            lines += [
                f"Next-item retrieval over the full catalogue ({retrieval['catalogue_size']:,} items, "
                f"exclude={retrieval['exclude']}, {retrieval['queries']:,} queries): "
                f"HR@10 {retrieval['hr@10']:.4f}, NDCG@10 {retrieval['ndcg@10']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}], "
                f"HR@50 {retrieval['hr@50']:.4f}, HR@200 {retrieval['hr@200']:.4f}, MRR {retrieval['mrr']:.4f}.",
                "",
            ]
            if "baseline" in retrieval:
                lines += _baseline_lines(retrieval["baseline"], retrieval, ("ndcg@10", "hr@10", "mrr"))
        if not tasks:
            continue
        lines += [
            "| task | NE | 95 % CI | oracle NE | log loss | calibration ratio | ECE | AUC | GAUC | NDCG@10 | MRR |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for task, m in tasks.items():
            ci = m["ci95"].get("ne", [math.nan, math.nan])
            cells = (
                [f"{m.get(k, math.nan):.4f}" if isinstance(m.get(k), float) else "—" for k in ("ne",)]
                + [f"[{ci[0]:.4f}, {ci[1]:.4f}]"]
                + [
                    f"{m[k]:.4f}" if isinstance(m.get(k), float) else "—"
                    for k in ("oracle_ne", "log_loss", "calibration_ratio", "ece", "auc", "gauc", "ndcg@10", "mrr")
                ]
            )
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        baselines = {task: m["baseline"] for task, m in tasks.items() if "baseline" in m}
        if baselines:
            lines += [
                "",
                "Count baseline (smoothed per-item and per-user × category rates from the training split) "
                "on the same events, and the model's NE lift over it (negative = the model is better; paired "
                "bootstrap over users):",
                "",
                "| task | count NE | model NE | Δ NE [95 % CI] | verdict | count AUC |",
                "|---|---|---|---|---|---|",
            ]
            for task, base in baselines.items():
                lift = base["lift"]["ne"]
                lines.append(
                    f"| {task} | {base['ne']:.4f} | {tasks[task]['ne']:.4f} | {lift['delta']:+.4f} "
                    f"[{lift['ci95'][0]:+.4f}, {lift['ci95'][1]:+.4f}] | {lift['verdict']} | {base['auc']:.4f} |"
                )
        lines += ["", "Before calibration:", ""]
        for task, m in tasks.items():
            raw = m["uncalibrated"]
            lines.append(f"- {task}: NE {raw['ne']:.4f}, calibration ratio {raw['calibration_ratio']:.4f}, ECE {raw['ece']:.4f}")
        lines += ["", *[f"![{task}](reliability_{split}_{task}.png)" for task in tasks], ""]
    return "\n".join(lines) + "\n"
