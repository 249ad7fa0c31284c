"""`rotorec evaluate` end to end on a briefly trained run, and the run loader's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_rotorec
from training.run import RunError, load_run


def test_evaluate_writes_metrics_report_and_plots(trained_run: Path, tiny_prepared: Path, tmp_path: Path) -> None:
    result = run_rotorec("evaluate", "--run", str(trained_run), "--data", str(tiny_prepared), "--out", str(tmp_path / "r"),
                         "--split", "valid", "--split", "test")
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
    assert "| click |" in (tmp_path / "r" / "report.md").read_text()


def test_tampered_weights_and_foreign_data_are_refused(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    with (copy / "model.safetensors").open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(RunError, match="SHA-256"):
        load_run(copy)
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,click\nu,a,1700000000,1\nu,b,1700000100,0\nu,c,1700000200,1\n")
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "other"), "--labels", "click", "--no-progress")
    result = run_rotorec("evaluate", "--run", str(trained_run), "--data", str(tmp_path / "other"), "--out", str(tmp_path / "r"), check=False)
    assert result.returncode == 2 and "prepared differently" in result.stderr and "Traceback" not in result.stderr


def test_compare_gives_paired_deltas_with_intervals(trained_run: Path, tiny_prepared: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_run"
    run_rotorec("train", "--data", str(tiny_prepared), "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(other),
                "--no-progress", "--set", "train.max_steps=10", "--set", "model.d_model=32", "--set", "train.batch_size=16",
                "--set", "model.encoding=rope", "--set", "train.seed=5")
    run_rotorec("evaluate", "--compare", str(trained_run), str(trained_run), str(other), "--data", str(tiny_prepared),
                "--out", str(tmp_path / "cmp"))
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    for task, entry in result["tasks"].items():
        same = entry["delta_ne"][str(trained_run)]
        assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0] and not same["significant"], task
        different = entry["delta_ne"][str(other)]
        assert different["ci95"][0] <= different["delta"] <= different["ci95"][1]
    assert "| click |" in (tmp_path / "cmp" / "comparison.md").read_text()
