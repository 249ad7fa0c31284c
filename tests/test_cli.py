"""The `rotorec` command as users run it: synth -> prepare without flags, flags, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from conftest import run_rotorec


def test_synth_then_prepare_needs_no_flags(tmp_path: Path) -> None:
    run_rotorec("synth", "--out", str(tmp_path / "feed"), "--preset", "tiny", "--users", "20", "--no-progress")
    result = run_rotorec("prepare", "--format", "events", "--input", str(tmp_path / "feed"), "--out", str(tmp_path / "data"), "--no-progress")
    summary = json.loads(result.stdout)
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert summary["events"] == stats["events"] == json.loads((tmp_path / "feed" / "manifest.json").read_text())["rows"]
    assert stats["split"]["protocol"] == "temporal" and stats["impressions"] > 0
    schema = json.loads((tmp_path / "data" / "schema.json").read_text())
    assert schema["tasks"] == ["click", "like", "long_dwell"] and schema["probabilities"] == schema["tasks"]


def test_label_threshold_flag(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,rating,genre\nu,a,1700000000,4.5,x\nu,b,1700000100,2,y\n"
                                      "u,c,1700000200,4,x\n")
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "out"),
                "--labels", "like=rating>=4", "--categorical", "genre", "--no-progress")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["positives"] == {"like": 2}


def test_unknown_schema_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,a,1700000000\n")
    (tmp_path / "schema.yaml").write_text("labels:\n  click: {colum: clicked}\n")
    result = run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "out"),
                         "--schema", str(tmp_path / "schema.yaml"), check=False)
    assert result.returncode == 2 and "labels.click.colum" in result.stderr and "Traceback" not in result.stderr


def test_prepare_refuses_to_overwrite_an_unrelated_folder(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,a,1700000000\n")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    result = run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "precious"), check=False)
    assert result.returncode == 2 and (tmp_path / "precious" / "thesis.tex").read_text() == "keep me"


def test_batch_size_does_not_change_the_output(tmp_path: Path, tiny_feed: Path) -> None:
    """Streaming in record batches of 997 rows gives the same files as one big batch."""
    from features.adapters.events import events_source
    from features.prepare import PrepareOptions, prepare

    for name, rows in (("one", 1 << 20), ("many", 997)):
        prepare(events_source(tiny_feed, batch_rows=rows), tmp_path / name, PrepareOptions(progress=False, max_len=30))
    for split in ("train", "valid", "test", "items", "quarantine"):
        assert pq.read_table(tmp_path / "one" / f"{split}.parquet").equals(pq.read_table(tmp_path / "many" / f"{split}.parquet"))
    assert (tmp_path / "one" / "schema.json").read_text() == (tmp_path / "many" / "schema.json").read_text()


def test_bad_option_values_and_misplaced_flags_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,a,1700000000\n")
    bad_len = run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"), "--max-len", "0", check=False)
    assert bad_len.returncode == 2 and "--max-len" in bad_len.stderr and "Traceback" not in bad_len.stderr
    misplaced = run_rotorec("prepare", "--format", "movielens", "--input", str(tmp_path), "--out", str(tmp_path / "o"),
                            "--labels", "click", check=False)
    assert misplaced.returncode == 2 and "schema flags apply to --format events" in misplaced.stderr
    bad_users = run_rotorec("synth", "--out", str(tmp_path / "s"), "--users", "0", check=False)
    assert bad_users.returncode == 2 and "--users" in bad_users.stderr and "Traceback" not in bad_users.stderr
