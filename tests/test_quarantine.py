"""Bad rows are counted and quarantined with their reason, never dropped; unreadable files fail
with one clear line."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_rotorec
from rotorec.features.adapters.events import events_source
from rotorec.features.errors import FeaturesError, LogReadError
from rotorec.features.prepare import PrepareOptions, prepare
from rotorec.features.reader import LogFiles
from rotorec.features.schema import LogSchema

HEADER = "user_id,item_id,timestamp,click,genre\n"
MALFORMED = (
    HEADER
    + "\n".join(
        [
            "u1,i1,1700000000,1,a",  # good
            "u1,i2,1700000100,0,b",  # good
            ",i3,1700000200,0,a",  # missing user id
            "u2,,1700000300,1,a",  # missing item id
            "u2,i4,abc,0,a",  # unparsable timestamp
            "u2,i5,1700000500,NaN,a",  # NaN label
            "u1,i1,1700000000,1,a",  # exact duplicate of row 0
            "u3,i6,12,0,b",  # implausible timestamp (1970)
            "u3,i7,1700000700,2,b",  # label outside {0, 1}
            "u3,i8,,1,b",  # no timestamp: allowed, masked downstream
            "u3,i9,2023-11-14T22:30:00+01:00,,c",  # ISO time, missing label: allowed
        ]
    )
    + "\n"
)


@pytest.mark.slow
def test_malformed_csv_is_quarantined_exactly(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(MALFORMED)
    out = tmp_path / "out"
    result = run_rotorec("prepare", "--input", str(log), "--out", str(out), "--labels", "click", "--categorical", "genre", "--no-progress")
    assert result.returncode == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input_rows"] == 11
    assert stats["events"] == 4
    assert stats["quarantined"] == 7
    assert stats["quarantine_reasons"] == {
        "missing_user_id": 1,
        "missing_item_id": 1,
        "bad_timestamp": 1,
        "bad_label": 2,
        "duplicate": 1,
        "implausible_timestamp": 1,
    }
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    by_row = {row["source_row"]: row for row in quarantine}
    assert by_row[4]["reason"] == "bad_timestamp" and by_row[4]["timestamp"] == "abc"
    assert by_row[5]["reason"] == "bad_label" and by_row[5]["field"] == "click" and by_row[5]["click"] == "NaN"
    assert by_row[6]["reason"] == "duplicate"
    assert all(row["source"] == "log.csv" for row in quarantine)
    # Good rows are intact: all four events, with their values, in the split files.
    rows = []
    for split in ("train", "valid", "test"):
        table = pq.read_table(out / f"{split}.parquet")
        for window in table.to_pylist():
            rows += [r for r, t in zip(window["row"], window["target"]) if t]
    assert sorted(rows) == [0, 1, 9, 10]


@pytest.mark.slow
def test_binary_garbage_fails_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    garbage = tmp_path / "events.parquet"
    garbage.write_bytes(os.urandom(4096))
    result = run_rotorec("prepare", "--input", str(garbage), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "events.parquet" in lines[0] and "Parquet" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_binary_garbage_with_a_csv_name_fails_cleanly(tmp_path: Path) -> None:
    garbage = tmp_path / "log.csv"
    garbage.write_bytes(bytes(range(256)) * 64)
    result = run_rotorec("prepare", "--input", str(garbage), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "log.csv" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_missing_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user,item_id,timestamp\nu1,i1,1700000000\n")
    result = run_rotorec("prepare", "--input", str(log), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 2
    assert "'user_id'" in result.stderr and "log.csv" in result.stderr


ROW_KINDS = (
    "good",
    "malformed_row",
    "unclosed_quote",
    "bad_encoding",
    "missing_user_id",
    "missing_item_id",
    "bad_timestamp",
    "implausible_timestamp",
    "bad_tz_offset",
    "bad_label",
    "duplicate",
)
REASON_OF_KIND = {"unclosed_quote": "malformed_row"}
COLUMNS = ("user_id", "item_id", "timestamp", "tz", "like")


def _row(kind: str, k: int) -> dict:
    row = {"user_id": f"u{k % 7}", "item_id": f"i{k}", "timestamp": str(1_700_000_000 + k), "tz": "60", "like": "4.5"}
    if kind == "missing_user_id":
        row["user_id"] = None
    elif kind == "missing_item_id":
        row["item_id"] = "  "
    elif kind == "bad_timestamp":
        row["timestamp"] = "yesterday"
    elif kind == "implausible_timestamp":
        row["timestamp"] = "99999999999"  # read as seconds: year 5138
    elif kind == "bad_tz_offset":
        row["tz"] = "9000"
    elif kind == "bad_label":
        row["like"] = "7.5"  # outside the declared domain [0.5, 5]
    elif kind == "malformed_row":
        row = {"user_id": f"u{k % 7}", "item_id": f"i{k}"}  # two of the header's five fields
    elif kind == "unclosed_quote":
        row["item_id"] = f'"i{k}'  # a stray quote: the line already has all five fields
    elif kind == "bad_encoding":
        row["item_id"] = f"i\udce9{k}"  # written as the byte 0xE9: Latin-1 'é', not UTF-8
    return row


def _csv_bytes(rows: list[dict]) -> bytes:
    """The log as CSV; a malformed row is written with only the fields it has."""
    lines = [",".join(COLUMNS)]
    lines += [",".join("" if row[c] is None else row[c] for c in COLUMNS if c in row) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _log_rows(kinds: list[str]) -> tuple[list[dict], list[str]]:
    """Rows of the requested kinds, and each row's kind as written; a 'duplicate' repeats the
    latest good row (or is good itself when there is none yet)."""
    rows, written, last_good = [], [], None
    for k, kind in enumerate(kinds):
        if kind == "duplicate" and last_good is not None:
            rows.append(dict(last_good))
        else:
            kind = "good" if kind == "duplicate" else kind
            rows.append(_row(kind, k))
            last_good = rows[-1] if kind == "good" else last_good
        written.append(kind)
    return rows, written


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(ROW_KINDS), min_size=1, max_size=60), batch_rows=st.integers(1, 17))
def test_good_plus_quarantined_equals_input_rows(tmp_path_factory, kinds: list[str], batch_rows: int) -> None:
    rows, written = _log_rows(kinds)
    written = [REASON_OF_KIND.get(kind, kind) for kind in written]
    expected = Counter(written)
    folder = tmp_path_factory.mktemp("prop")
    (folder / "log.csv").write_bytes(_csv_bytes(rows))
    schema = LogSchema(tz_offset_minutes="tz", labels={"like": {"column": "like", "threshold": 4.0, "domain": (0.5, 5.0)}})
    source = events_source(folder / "log.csv", schema, batch_rows=batch_rows)
    good = expected.pop("good", 0)
    if good == 0:
        with pytest.raises(FeaturesError, match=f"no valid events among {len(rows)} rows"):
            prepare(source, folder / "out", PrepareOptions(progress=False, max_len=8))
        assert pq.read_table(folder / "out" / "quarantine.parquet").num_rows == len(rows)
        return
    stats = prepare(source, folder / "out", PrepareOptions(progress=False, max_len=8))
    assert stats["events"] == good
    assert stats["events"] + stats["quarantined"] == stats["input_rows"] == len(rows)
    assert stats["quarantine_reasons"] == dict(expected)
    kept = pq.read_table(folder / "out" / "quarantine.parquet").to_pylist()
    assert len(kept) == stats["quarantined"]
    # Every quarantined row points at its own data row, malformed lines and batch slicing or not.
    assert all(written[row["source_row"]] == row["reason"] for row in kept)


@pytest.mark.slow
def test_lines_with_the_wrong_field_count_are_quarantined_whole(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        "user_id,item_id,timestamp\nu1,a,1700000000\nu1,b\nu1,c,1700000200\nu2,d,1700000300,extra\n"
        "u2,e,1700000400\nnot a row\n,f,1700000600\n"
    )
    run_rotorec("prepare", "--input", str(log), "--out", str(tmp_path / "out"), "--no-progress")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["input_rows"], stats["events"]) == (7, 3)
    assert stats["quarantine_reasons"] == {"malformed_row": 3, "missing_user_id": 1}
    kept = sorted(pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist(), key=lambda row: row["source_row"])
    assert [(row["source_row"], row["line"], row["field"]) for row in kept] == [
        (1, "u1,b", "2 of 3 fields"),
        (3, "u2,d,1700000300,extra", "4 of 3 fields"),
        (5, "not a row", "1 of 3 fields"),
        (6, None, "user_id"),
    ]


@pytest.mark.slow
def test_movielens_ratings_lines_with_the_wrong_field_count_are_quarantined(tmp_path: Path) -> None:
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n1,20\n1,30,3.5,964982800\nbad,line,x,1,2\n2,10,5.0,964983000\n"
    )
    run_rotorec("prepare", "--format", "movielens", "--input", str(tmp_path / "ml"), "--out", str(tmp_path / "out"), "--no-progress")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["input_rows"], stats["events"], stats["quarantine_reasons"]) == (5, 3, {"malformed_row": 2})


def test_a_file_of_malformed_lines_is_refused_in_one_line_before_memory_runs_out(tmp_path: Path, monkeypatch) -> None:
    from rotorec.features import textlog

    monkeypatch.setattr(textlog, "MAX_MALFORMED_IN_A_ROW", 50)
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n" + "".join(f"u{k},i{k},{1_700_000_000 + k},\n" for k in range(200)))
    with pytest.raises(LogReadError, match="50 lines in a row do not have the header's 3 fields"):
        list(LogFiles([log]).iter_batches(["user_id", "item_id", "timestamp"]))


@pytest.mark.slow
def test_a_line_that_is_not_utf8_is_quarantined_as_hex_and_the_others_are_kept(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes(b"user_id,item_id,timestamp\nu1,a,1700000000\n\xff\xfe,3,4,5\nu1,caf\xe9,1700000050\nu1,b,1700000100\n")
    run_rotorec("prepare", "--input", str(log), "--out", str(tmp_path / "out"), "--no-progress")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["input_rows"], stats["events"], stats["quarantine_reasons"]) == (4, 2, {"bad_encoding": 2})
    kept = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert [(row["source_row"], row["reason"], row["field"], bytes.fromhex(row["line"])) for row in kept] == [
        (1, "bad_encoding", "not UTF-8 (byte 0)", b"\xff\xfe,3,4,5"),
        (2, "bad_encoding", "not UTF-8 (byte 6)", b"u1,caf\xe9,1700000050"),
    ]


@pytest.mark.slow
def test_an_unterminated_quote_quarantines_its_own_line_and_no_other(tmp_path: Path) -> None:
    """The issue's log: before, the quote ran to the end of the file and 10 of 37 events were kept."""
    lines = [f"u{k % 5},i{k},{1706400000 + 100 * k},1,{k % 2}" for k in range(37)]
    lines[9] = 'u2,"i9,1706401300,1,4'
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp,click,like\n" + "\n".join(lines) + "\n")
    run_rotorec("prepare", "--input", str(log), "--out", str(tmp_path / "out"), "--labels", "click,like", "--no-progress")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["input_rows"], stats["events"], stats["quarantine_reasons"]) == (37, 36, {"malformed_row": 1})
    kept = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert [(row["source_row"], row["field"], row["line"]) for row in kept] == [(9, "unclosed quote", lines[9])]
