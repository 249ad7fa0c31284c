"""The synthetic feed: determinism, per-user independence, calibration self-check, time signal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rotorec.features.synth.config import SynthConfig
from rotorec.features.synth.writer import simulate, write_feed


def test_same_seed_same_bytes_other_seed_other_feed(tmp_path: Path) -> None:
    config = SynthConfig.from_preset("tiny", seed=3, users=12)
    a = write_feed(config, tmp_path / "a", progress=False)
    b = write_feed(config, tmp_path / "b", progress=False)
    c = write_feed(config.model_copy(update={"seed": 4}), tmp_path / "c", progress=False)
    assert a["files"]["events.parquet"]["sha256"] == b["files"]["events.parquet"]["sha256"]
    assert a["files"]["events.parquet"]["sha256"] != c["files"]["events.parquet"]["sha256"]


def test_a_user_does_not_depend_on_how_many_users_are_simulated() -> None:
    _, few, _ = simulate(SynthConfig.from_preset("tiny", seed=1, users=5), progress=False)
    _, many, _ = simulate(SynthConfig.from_preset("tiny", seed=1, users=9), progress=False)
    n = len(few["user_id"])
    for name in ("user_id", "item_id", "timestamp", "click", "p_click"):
        assert np.array_equal(few[name], many[name][:n])


def test_recorded_probabilities_are_calibrated_and_time_matters(tmp_path: Path) -> None:
    manifest = write_feed(SynthConfig.from_preset("tiny", seed=0, users=300, days=14), tmp_path, progress=False)
    for task, summary in manifest["splits"]["all"].items():
        assert abs(summary["calibration_ratio"] - 1) <= 3 * summary["calibration_ratio_se"], task
        assert summary["ece15"] < 0.01, task
    assert 0.03 < manifest["splits"]["all"]["click"]["base_rate"] < 0.08  # β0 aims at ≈5 % CTR
    assert manifest["time_signal"]["gap"] >= 0.02  # a time-blind oracle is clearly worse


def test_timeless_feed_has_no_time_signal(tmp_path: Path) -> None:
    manifest = write_feed(SynthConfig.from_preset("tiny", seed=0, timeless=True), tmp_path, progress=False)
    assert abs(manifest["time_signal"]["gap"]) < 1e-12


def test_feed_folder_layout_and_label_consistency(tiny_feed: Path) -> None:
    table = pq.read_table(tiny_feed / "events.parquet").to_pandas()
    manifest = json.loads((tiny_feed / "manifest.json").read_text())
    assert manifest["rows"] == len(table)
    assert (table["like"] <= table["click"]).all() and (table["long_dwell"] <= table["click"]).all()
    assert (table["p_like"] <= table["p_click"] + 1e-15).all()
    assert table.loc[table["click"] == 0, "dwell_s"].isna().all()
    assert {"events.parquet", "schema.yaml", "diagnostics.npz"} <= set(manifest["files"])
    with np.load(tiny_feed / "diagnostics.npz", allow_pickle=False) as hidden:
        assert hidden["theta"].shape == (50, 16)
