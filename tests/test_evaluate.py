"""`rotorec evaluate` end to end on a briefly trained run, and the run loader's refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_rotorec
from rotorec.features.files import file_digest
from rotorec.training.bootstrap import UnitStatistics, point_value, pooled_delta
from rotorec.training.run import RunError, load_run, save_calibration


def _copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def _record_in_manifest(run: Path, name: str) -> None:
    """What a writer that checks nothing would do: list the file's current checksum."""
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"][name] = file_digest(run / name)
    (run / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.slow
def test_evaluate_writes_metrics_report_and_plots(trained_run: Path, tiny_prepared: Path, tmp_path: Path) -> None:
    result = run_rotorec(
        "evaluate",
        "--run",
        str(trained_run),
        "--data",
        str(tiny_prepared),
        "--out",
        str(tmp_path / "r"),
        "--split",
        "valid",
        "--split",
        "test",
    )
    assert json.loads(result.stdout)["report"].endswith("report.md")
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    for split in metrics:
        for task in ("click", "like", "long_dwell"):
            m = metrics[split][task]
            for key in ("log_loss", "ne", "calibration_ratio", "ece", "ece_adaptive", "auc", "gauc", "oracle_ne", "ndcg@10", "mrr"):
                assert isinstance(m[key], float), (split, task, key)
            low, high = m["ci95"]["ne"]
            assert low <= high and m["oracle_ne"] < 1.0
            assert (tmp_path / "r" / f"reliability_{split}_{task}.png").stat().st_size > 10_000
    # Calibration was fitted on valid: there, the calibrated predictions cannot have a worse log loss.
    for task, m in metrics["valid"].items():
        assert m["log_loss"] <= m["uncalibrated"]["log_loss"] + 1e-9, task
    assert set(load_run(trained_run).calibration) == {"click", "like", "long_dwell"}
    manifest = json.loads((trained_run / "manifest.json").read_text())  # what the loader verifies it against
    assert manifest["files"]["calibration.json"] == file_digest(trained_run / "calibration.json")
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| click |" in report and "Count baseline" in report
    for task, m in metrics["test"].items():  # the count baseline sits beside every task, with the model's lift
        base = m["baseline"]
        assert base["model"] == "count" and 0 < base["ne"] < 2 and 0 <= base["auc"] <= 1
        lift = base["lift"]["ne"]
        assert lift["ci95"][0] <= lift["delta"] <= lift["ci95"][1]
        assert abs(lift["delta"] - (m["ne"] - base["ne"])) < 1e-9
        assert f"| {task} | {base['ne']:.4f} | {m['ne']:.4f} |" in report


@pytest.mark.slow
def test_tampered_weights_and_foreign_data_are_refused(trained_run: Path, tmp_path: Path) -> None:
    copy = _copy_run(trained_run, tmp_path)
    with (copy / "model.safetensors").open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(RunError, match="SHA-256"):
        load_run(copy)
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,click\nu,a,1700000000,1\nu,b,1700000100,0\nu,c,1700000200,1\n")
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "other"), "--labels", "click", "--no-progress")
    result = run_rotorec(
        "evaluate", "--run", str(trained_run), "--data", str(tmp_path / "other"), "--out", str(tmp_path / "r"), check=False
    )
    assert result.returncode == 2 and "prepared differently" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "text,complaint",
    [
        ("{not json", "unreadable"),
        ("[1, 2]", "expected an object"),
        ('{"nope": {"scale": 1, "bias": 0}}', "not a task"),
        ('{"click": {"scale": "x", "bias": 0}}', "finite"),
        ('{"click": {"scale": 1}}', "finite"),
    ],
)
def test_damaged_calibration_is_refused_not_applied(trained_run: Path, tmp_path: Path, text: str, complaint: str) -> None:
    """Even a calibration whose checksum the manifest holds is checked before it is applied."""
    copy = _copy_run(trained_run, tmp_path)
    (copy / "calibration.json").write_text(text)
    _record_in_manifest(copy, "calibration.json")
    with pytest.raises(RunError, match=complaint):
        load_run(copy)


@pytest.mark.slow
def test_a_calibration_the_manifest_does_not_vouch_for_is_refused_until_evaluate_refits_it(
    trained_run: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    """The issue's probe: a crafted, well-formed calibration.json flipped every probability."""
    copy = _copy_run(trained_run, tmp_path)
    save_calibration(copy, {"click": {"scale": 1.0, "bias": 0.0}})
    assert load_run(copy).calibration == {"click": {"scale": 1.0, "bias": 0.0}}
    crafted = '{"click": {"scale": -1.0, "bias": 0.0}}'
    (copy / "calibration.json").write_text(crafted.ljust((copy / "calibration.json").stat().st_size))  # same size
    with pytest.raises(RunError, match="calibration.json does not match its SHA-256"):
        load_run(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["calibration.json"]  # as written by an older rotorec evaluate, or by hand
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match="not covered by the manifest's checksums"):
        load_run(copy)
    # `rotorec evaluate` refits the calibration and records it: the run loads again, calibrated.
    run_rotorec("evaluate", "--run", str(copy), "--data", str(tiny_prepared), "--out", str(tmp_path / "report"))
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["files"]["calibration.json"] == file_digest(copy / "calibration.json")
    assert set(load_run(copy).calibration) == {"click", "like", "long_dwell"}


@pytest.mark.slow
def test_compare_gives_paired_deltas_with_intervals(trained_run: Path, tiny_prepared: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_run"
    run_rotorec(
        "train",
        "--data",
        str(tiny_prepared),
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--out",
        str(other),
        "--no-progress",
        "--set",
        "train.max_steps=10",
        "--set",
        "model.d_model=32",
        "--set",
        "train.batch_size=16",
        "--set",
        "model.encoding=rope",
        "--set",
        "train.seed=5",
    )
    run_rotorec(
        "evaluate",
        "--compare",
        str(trained_run),
        str(trained_run),
        str(other),
        "--data",
        str(tiny_prepared),
        "--out",
        str(tmp_path / "cmp"),
    )
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    for task, entry in result["tasks"].items():
        same = entry["delta_ne"][str(trained_run)]
        assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0] and not same["significant"], task
        different = entry["delta_ne"][str(other)]
        assert different["ci95"][0] <= different["delta"] <= different["ci95"][1]
    assert "| click |" in (tmp_path / "cmp" / "comparison.md").read_text()


def _next_item_stats(reciprocal_ranks: np.ndarray) -> UnitStatistics:
    return UnitStatistics(tasks={}, next_item={"mrr": reciprocal_ranks})


def test_pooled_delta_averages_seeds_and_pairs_units() -> None:
    """The seed-pooled paired bootstrap: its point is the mean of the per-seed deltas, identical
    runs give exactly 0 with a zero-width interval, a uniform gain is significant, and seeds that
    disagree in sign never make a win (docs/evaluation.md, "Statistics")."""
    rng = np.random.default_rng(0)
    base = [_next_item_stats(rng.uniform(0, 1, 400)) for _ in range(3)]
    same = pooled_delta(base, base, ("next_item", "mrr"))
    assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0] and not same["significant"]

    gains = [0.05, 0.02, 0.03]
    better = [_next_item_stats(b.next_item["mrr"] + g) for b, g in zip(base, gains)]
    result = pooled_delta(base, better, ("next_item", "mrr"))
    assert result["delta"] == pytest.approx(np.mean(gains)) and result["per_seed"] == pytest.approx(gains)
    assert result["verdict"] == "better" and result["seeds_agree"]
    assert result["ci95"] == pytest.approx([np.mean(gains)] * 2)  # a constant shift per unit: no spread

    mixed = [_next_item_stats(b.next_item["mrr"] + g) for b, g in zip(base, [0.2, 0.2, -0.01])]
    assert pooled_delta(base, mixed, ("next_item", "mrr"))["verdict"] == "seeds disagree"

    # NE from per-user sums matches NE computed row by row.
    logits, labels = rng.normal(size=300), rng.integers(0, 2, 300).astype(np.float64)
    users = rng.integers(0, 40, 300)
    _, inverse = np.unique(users, return_inverse=True)
    sums = (
        np.bincount(inverse).astype(np.float64),
        np.bincount(inverse, labels),
        np.bincount(inverse, np.logaddexp(0.0, logits) - labels * logits),
    )
    rate = labels.mean()
    expected = np.mean(np.logaddexp(0.0, logits) - labels * logits) / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    assert point_value(UnitStatistics({"click": sums}, {}), ("ne", "click")) == pytest.approx(expected, rel=1e-12)
