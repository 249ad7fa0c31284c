"""Vocabularies: reserved ids, frequency order, min-count, persistence, OOV lookups; id keys that keep
their identity across types and files; categorical ids of events and of the item table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_rotorec
from rotorec.features.encoding import RunningIndex, canonical_keys
from rotorec.features.vocab import OOV, PAD, RESERVED, Vocabulary


def test_ids_follow_count_then_key_and_rare_keys_share_oov(tmp_path: Path) -> None:
    keys = np.array(["b", "a", "c", "d"], dtype=object)
    counts = np.array([5, 5, 9, 1])
    vocab, code_to_id = Vocabulary.build("item", keys, counts, min_count=2)
    assert vocab.keys.tolist() == ["c", "a", "b"]
    assert code_to_id.tolist() == [RESERVED + 2, RESERVED + 1, RESERVED, OOV]
    assert vocab.size == RESERVED + 3 and PAD == 0 and OOV == 1
    vocab.save(tmp_path)
    loaded = Vocabulary.load(tmp_path, "item")
    assert loaded.lookup(["a", "zzz", "c"]).tolist() == [RESERVED + 1, OOV, RESERVED]
    assert loaded.key_of(np.array([0, 1, 2])).tolist() == ["<pad>", "<oov>", "c"]


def test_always_keep_admits_catalogue_keys_without_events() -> None:
    vocab, code_to_id = Vocabulary.build("item", np.array([10, 11]), np.array([3, 0]), 1, np.array([False, True]))
    assert vocab.keys.tolist() == ["10", "11"] and code_to_id.tolist() == [RESERVED, RESERVED + 1]


def test_integer_keys_are_looked_up_as_strings() -> None:
    vocab, _ = Vocabulary.build("item", np.array([7, 8]), np.array([1, 2]))
    assert vocab.lookup([7, "8", 9]).tolist() == [RESERVED + 1, RESERVED, OOV]


def test_float_ids_keep_their_identity_and_nan_is_missing() -> None:
    assert canonical_keys(pa.array([7.0, 8.0, None])).to_pylist() == [7, 8, None]
    assert canonical_keys(pa.array([1.0, 1.5, float("nan")])).to_pylist() == ["1", "1.5", None]


def test_uint64_ids_above_int64_keep_their_value() -> None:
    index = RunningIndex()
    assert index.encode(pa.array([3, 5], pa.uint64())).tolist() == [0, 1]
    assert index.encode(pa.array([5, 2**64 - 1], pa.uint64())).tolist() == [1, 2]
    assert index.keys.tolist() == ["3", "5", "18446744073709551615"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(st.integers(-5, 40), st.sampled_from(["3", "7", "x", "y", "-2"])), max_size=30), max_size=8))
def test_running_codes_follow_first_appearance_across_batches(batches: list[list]) -> None:
    """Against a dict: codes in order of first appearance over all batches; once text ids appear,
    integers are their decimal text (7 and "7" are one key), before and after."""
    index, reference = RunningIndex(), {}
    texts_seen = False
    for batch in batches:
        texts_seen = texts_seen or any(isinstance(key, str) for key in batch)
        text = any(isinstance(key, str) for key in batch)  # a text file: every id is text there
        values = pa.array([str(key) for key in batch], pa.string()) if text else pa.array(batch, pa.int64())
        codes = index.encode(values).tolist()
        assert codes == [reference.setdefault(str(key), len(reference)) for key in batch]
    keys = index.keys.tolist()
    assert [str(key) for key in keys] == list(reference)
    assert all(isinstance(key, str) for key in keys) or not texts_seen


@pytest.mark.slow
def test_int_ids_in_parquet_and_text_ids_in_csv_share_one_vocabulary(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    pq.write_table(
        pa.table({"user_id": [7, 7, 8], "item_id": [1, 2, 3], "timestamp": [1_700_000_000, 1_700_000_100, 1_700_000_200]}),
        log / "a.parquet",
    )
    (log / "b.csv").write_text("user_id,item_id,timestamp\n7,2,1700000300\n8,x,1700000400\n")
    run_rotorec("prepare", "--input", str(log), "--out", str(tmp_path / "o"), "--no-progress")
    items = pq.read_table(tmp_path / "o" / "vocab" / "item.parquet").to_pylist()
    counts = {row["key"]: row["count"] for row in items}
    assert len(items) == len(counts) and counts["2"] == 2 and set(counts) == {"1", "2", "3", "x"}
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["users"] == 2


@pytest.mark.slow
def test_a_categorical_that_never_has_a_value_maps_to_pad(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,genre\nu,a,1700000000,\nu,b,1700000100,\nu,c,1700000200,\n")
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"), "--categorical", "genre", "--no-progress")
    window = pq.read_table(tmp_path / "o" / "test.parquet").to_pylist()[0]
    assert window["cat_genre"] == [0, 0, 0]


@pytest.mark.slow
def test_item_table_takes_categories_from_each_items_latest_event(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,genre\nu,a,1700000200,NEW\nv,a,1700000100,OLD\nv,b,1700000300,OLD\n")
    run_rotorec("prepare", "--input", str(tmp_path / "log.csv"), "--out", str(tmp_path / "o"), "--categorical", "genre", "--no-progress")
    genre = {row["key"]: row["id"] for row in pq.read_table(tmp_path / "o" / "vocab" / "genre.parquet").to_pylist()}
    items = {row["key"]: row["cat_genre"] for row in pq.read_table(tmp_path / "o" / "items.parquet").to_pylist()}
    assert items["a"] == [genre["NEW"]] and items["b"] == [genre["OLD"]]
