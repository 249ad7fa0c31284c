"""The `rotorec` command as users run it: synth -> prepare without flags, flags, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run_rotorec


@pytest.mark.slow
def test_synth_then_prepare_needs_no_flags(tmp_path: Path) -> None:
    run_rotorec("synth", "--out", str(tmp_path / "feed"), "--preset", "tiny", "--users", "20", "--no-progress")
    result = run_rotorec(
        "prepare", "--format", "events", "--input", str(tmp_path / "feed"), "--out", str(tmp_path / "data"), "--no-progress"
    )
    summary = json.loads(result.stdout)
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert summary["events"] == stats["events"] == json.loads((tmp_path / "feed" / "manifest.json").read_text())["rows"]
    assert stats["split"]["protocol"] == "temporal" and stats["impressions"] > 0
    schema = json.loads((tmp_path / "data" / "schema.json").read_text())
    assert schema["tasks"] == ["click", "like", "long_dwell"] and schema["probabilities"] == schema["tasks"]


@pytest.mark.slow
def test_label_threshold_flag(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(
        "user_id,item_id,timestamp,rating,genre\nu,a,1700000000,4.5,x\nu,b,1700000100,2,y\nu,c,1700000200,4,x\n"
    )
    run_rotorec(
        "prepare",
        "--input",
        str(tmp_path / "log.csv"),
        "--out",
        str(tmp_path / "out"),
        "--labels",
        "like=rating>=4",
        "--categorical",
        "genre",
        "--no-progress",
    )
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["positives"] == {"like": 2}


@pytest.mark.slow
def test_unknown_schema_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,a,1700000000\n")
    (tmp_path / "schema.yaml").write_text("labels:\n  click: {colum: clicked}\n")
    result = run_rotorec(
        "prepare",
        "--input",
        str(tmp_path / "log.csv"),
        "--out",
        str(tmp_path / "out"),
        "--schema",
        str(tmp_path / "schema.yaml"),
        check=False,
    )
    assert result.returncode == 2 and "labels.click.colum" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_prepare_refuses_to_overwrite_an_unrelated_folder(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,a,1700000000\n")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    result = run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "precious"), check=False)
    assert result.returncode == 2 and (tmp_path / "precious" / "thesis.tex").read_text() == "keep me"


def test_batch_size_does_not_change_the_output(tmp_path: Path, tiny_feed: Path) -> None:
    """Streaming in record batches of 997 rows gives the same files as one big batch."""
    from rotorec.features.adapters.events import events_source
    from rotorec.features.prepare import PrepareOptions, prepare

    for name, rows in (("one", 1 << 20), ("many", 997)):
        prepare(events_source(tiny_feed, batch_rows=rows), tmp_path / name, PrepareOptions(progress=False, max_len=30))
    for split in ("train", "valid", "test", "items", "quarantine"):
        assert pq.read_table(tmp_path / "one" / f"{split}.parquet").equals(pq.read_table(tmp_path / "many" / f"{split}.parquet"))
    assert (tmp_path / "one" / "schema.json").read_text() == (tmp_path / "many" / "schema.json").read_text()


@pytest.mark.slow
def test_bad_option_values_and_misplaced_flags_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,a,1700000000\n")
    bad_len = run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"), "--max-len", "0", check=False)
    assert bad_len.returncode == 2 and "--max-len" in bad_len.stderr and "Traceback" not in bad_len.stderr
    misplaced = run_rotorec(
        "prepare", "--format", "movielens", "--input", str(tmp_path), "--out", str(tmp_path / "o"), "--labels", "click", check=False
    )
    assert misplaced.returncode == 2 and "schema flags apply to --format events" in misplaced.stderr
    bad_users = run_rotorec("synth", "--out", str(tmp_path / "s"), "--users", "0", check=False)
    assert bad_users.returncode == 2 and "--users" in bad_users.stderr and "Traceback" not in bad_users.stderr


@pytest.mark.slow
def test_flags_refine_the_schema_file_instead_of_replacing_it(tmp_path: Path, tiny_feed: Path) -> None:
    run_rotorec("prepare", "--input", str(tiny_feed), "--out", str(tmp_path / "o"), "--default-timezone", "Europe/Berlin", "--no-progress")
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert set(stats["positives"]) == {"click", "like", "long_dwell"} and stats["split"]["protocol"] == "temporal"
    assert json.loads((tmp_path / "o" / "schema.json").read_text())["default_timezone"] == "Europe/Berlin"
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,click,rating\nu,a,1700000000,1,5\nu,b,1700000100,0,2\n")
    (tmp_path / "s.yaml").write_text("labels:\n  click: {}\n")
    run_rotorec(
        "prepare",
        "--input",
        str(tmp_path / "log.csv"),
        "--out",
        str(tmp_path / "p"),
        "--schema",
        str(tmp_path / "s.yaml"),
        "--labels",
        "like=rating>=4",
        "--no-progress",
    )
    assert json.loads((tmp_path / "p" / "stats.json").read_text())["positives"] == {"click": 1, "like": 1}


@pytest.mark.slow
def test_bad_threshold_and_log_level_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,rating\nu,a,1700000000,4\n")
    bad = run_rotorec(
        "prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"), "--labels", "like=rating>=4.0.1", check=False
    )
    assert bad.returncode == 2 and "not a number" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_an_empty_simulation_and_a_file_as_out_folder_are_one_line_errors(tmp_path: Path) -> None:
    empty = run_rotorec("synth", "--out", str(tmp_path / "s"), "--users", "1", "--days", "1", "--no-progress", check=False)
    assert empty.returncode == 2 and "no events" in empty.stderr and "Traceback" not in empty.stderr
    assert not (tmp_path / "s").exists()
    (tmp_path / "taken").write_text("not a folder")
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,a,1700000000\nu,b,1700000100\n")
    for command in (["synth", "--preset", "tiny", "--users", "3"], ["prepare", "--input", str(tmp_path / "log.csv")]):
        taken = run_rotorec(*command, "--out", str(tmp_path / "taken"), "--no-progress", check=False)
        assert taken.returncode == 2 and str(tmp_path / "taken") in taken.stderr, taken.stderr
        assert "Traceback" not in taken.stderr and len(taken.stderr.strip().splitlines()) == 1
