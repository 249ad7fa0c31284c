"""Regressions found in review: each was a crash or a silently wrong result."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import run_rotorec
from features.encoding import RunningIndex, canonical_keys
from features.schema import LogSchema
from features.timestamps import TimestampParser


def test_a_categorical_that_never_has_a_value_maps_to_pad(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,genre\nu,a,1700000000,\nu,b,1700000100,\nu,c,1700000200,\n")
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"), "--categorical", "genre",
                "--no-progress")
    window = pq.read_table(tmp_path / "o" / "test.parquet").to_pylist()[0]
    assert window["cat_genre"] == [0, 0, 0]


def test_flags_refine_the_schema_file_instead_of_replacing_it(tmp_path: Path, tiny_feed: Path) -> None:
    run_rotorec("prepare", "--input", str(tiny_feed), "--out", str(tmp_path / "o"), "--default-timezone", "Europe/Berlin",
                "--no-progress")
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert set(stats["positives"]) == {"click", "like", "long_dwell"} and stats["split"]["protocol"] == "temporal"
    assert json.loads((tmp_path / "o" / "schema.json").read_text())["default_timezone"] == "Europe/Berlin"
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,click,rating\nu,a,1700000000,1,5\nu,b,1700000100,0,2\n")
    (tmp_path / "s.yaml").write_text("labels:\n  click: {}\n")
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "p"), "--schema",
                str(tmp_path / "s.yaml"), "--labels", "like=rating>=4", "--no-progress")
    assert json.loads((tmp_path / "p" / "stats.json").read_text())["positives"] == {"click": 1, "like": 1}


def test_unquoted_yaml_dates_are_accepted_as_bounds(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("timestamp_min: 2015-01-01\ntimestamp_max: 2030-01-01T00:00:00\n")
    schema = LogSchema.from_yaml(tmp_path / "s.yaml")
    assert schema.timestamp_min == 1_420_070_400 and schema.timestamp_max == 1_893_456_000


def test_basic_format_offsets_apply_once_and_words_are_not_times() -> None:
    parsed = TimestampParser(naive_offset_minutes=330).parse(
        pa.array(["20240603T083000+0200", "2024-06-03T08+02:00", "20240603T083000Z", "now", "Today"]))
    assert parsed.seconds[:3].tolist() == [1_717_396_200, 1_717_394_400, 1_717_403_400]
    assert parsed.offset_minutes[:3].tolist() == [120, 120, 0]
    assert parsed.valid.tolist() == [True, True, True, False, False]


def test_float_ids_keep_their_identity_and_nan_is_missing() -> None:
    assert canonical_keys(pa.array([7.0, 8.0, None])).to_pylist() == [7, 8, None]
    assert canonical_keys(pa.array([1.0, 1.5, float("nan")])).to_pylist() == ["1", "1.5", None]


def test_bad_threshold_and_log_level_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,rating\nu,a,1700000000,4\n")
    bad = run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"),
                      "--labels", "like=rating>=4.0.1", check=False)
    assert bad.returncode == 2 and "not a number" in bad.stderr and "Traceback" not in bad.stderr


def test_item_table_takes_categories_from_each_items_latest_event(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,genre\nu,a,1700000200,NEW\nv,a,1700000100,OLD\n"
                                      "v,b,1700000300,OLD\n")
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"), "--categorical", "genre",
                "--no-progress")
    genre = {row["key"]: row["id"] for row in pq.read_table(tmp_path / "o" / "vocab" / "genre.parquet").to_pylist()}
    items = {row["key"]: row["cat_genre"] for row in pq.read_table(tmp_path / "o" / "items.parquet").to_pylist()}
    assert items["a"] == [genre["NEW"]] and items["b"] == [genre["OLD"]]


def test_timestamps_beyond_int64_are_invalid_rows_not_a_crash(tmp_path: Path) -> None:
    text = TimestampParser().parse(pa.array(["99999999999999999999999", "9223372036854775808", "+1700000000",
                                             " 00000000000000000001700000001 ", "-1700000002"]))
    assert text.valid.tolist() == [False, False, True, True, True] and text.present.all()
    assert text.seconds[2:].tolist() == [1_700_000_000, 1_700_000_001, -1_700_000_002]
    unsigned = TimestampParser().parse(pa.array([2**64 - 1, 1_700_000_000, None], pa.uint64()))
    assert unsigned.valid.tolist() == [False, True, False] and unsigned.present.tolist() == [True, True, False]
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,click\nu,a,99999999999999999999999,1\n"
                                      "u,b,1700000000,0\nu,c,1700000100,1\n")
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"), "--no-progress")
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    kept = pq.read_table(tmp_path / "o" / "quarantine.parquet").to_pylist()
    assert stats["quarantined"] == 1 and [(row["reason"], row["timestamp"]) for row in kept] == [
        ("bad_timestamp", "99999999999999999999999")]


def test_an_empty_simulation_and_a_file_as_out_folder_are_one_line_errors(tmp_path: Path) -> None:
    empty = run_rotorec("synth", "--out", str(tmp_path / "s"), "--users", "1", "--days", "1", "--no-progress",
                        check=False)
    assert empty.returncode == 2 and "no events" in empty.stderr and "Traceback" not in empty.stderr
    assert not (tmp_path / "s").exists()
    (tmp_path / "taken").write_text("not a folder")
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu,a,1700000000\nu,b,1700000100\n")
    for command in (["synth", "--preset", "tiny", "--users", "3"], ["prepare", "--input", str(tmp_path / "log.csv")]):
        taken = run_rotorec(*command, "--out", str(tmp_path / "taken"), "--no-progress", check=False)
        assert taken.returncode == 2 and str(tmp_path / "taken") in taken.stderr, taken.stderr
        assert "Traceback" not in taken.stderr and len(taken.stderr.strip().splitlines()) == 1


def test_int_ids_in_parquet_and_text_ids_in_csv_share_one_vocabulary(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    pq.write_table(pa.table({"user_id": [7, 7, 8], "item_id": [1, 2, 3],
                             "timestamp": [1_700_000_000, 1_700_000_100, 1_700_000_200]}), log / "a.parquet")
    (log / "b.csv").write_text("user_id,item_id,timestamp\n7,2,1700000300\n8,x,1700000400\n")
    run_rotorec("prepare", "--input", str(log), "--out", str(tmp_path / "o"), "--no-progress")
    items = pq.read_table(tmp_path / "o" / "vocab" / "item.parquet").to_pylist()
    counts = {row["key"]: row["count"] for row in items}
    assert len(items) == len(counts) and counts["2"] == 2 and set(counts) == {"1", "2", "3", "x"}
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["users"] == 2


def test_uint64_ids_above_int64_keep_their_value() -> None:
    index = RunningIndex()
    assert index.encode(pa.array([3, 5], pa.uint64())).tolist() == [0, 1]
    assert index.encode(pa.array([5, 2**64 - 1], pa.uint64())).tolist() == [1, 2]
    assert index.keys.tolist() == ["3", "5", "18446744073709551615"]
