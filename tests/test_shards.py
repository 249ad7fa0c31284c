"""Sharded splits: `prepare --shards N` spreads users over N files by a hash of their key, and
each training rank reads only its own shards yet the ranks' batches make the one-process batch."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rotorec.features.adapters.events import events_source
from rotorec.features.artifacts import shard_file, shard_of_users, split_files
from rotorec.features.errors import FeaturesError
from rotorec.features.prepare import PrepareOptions, prepare
from rotorec.training.batches import Distributed, TrainingBatches
from rotorec.training.config import ConfigError

SHARDS = 3


@pytest.fixture(scope="module")
def sharded(tiny_feed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "data"
    prepare(events_source(tiny_feed), out, PrepareOptions(max_len=50, windows="all", shards=SHARDS, progress=False))
    return out


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_shards_hold_each_users_windows_of_the_unsharded_split(tiny_prepared: Path, sharded: Path, split: str) -> None:
    whole = pq.read_table(tiny_prepared / f"{split}.parquet")
    user_shard = shard_of_users(np.asarray(whole.column("user").to_pylist(), dtype=object), SHARDS)
    files = split_files(sharded, split)
    assert [p.name for p in files] == [shard_file(split, k, SHARDS) for k in range(SHARDS)]
    for shard, path in enumerate(files):
        assert pq.read_table(path).equals(whole.filter(user_shard == shard)), f"{path.name} differs"
    assert len(np.unique(user_shard)) == SHARDS  # the tiny feed's users do reach every shard


def test_shard_of_a_user_depends_on_its_key_only() -> None:
    keys = np.array(["u1", "u2", "alice", 42], dtype=object)
    assert shard_of_users(keys, 7).tolist() == shard_of_users(keys[::-1], 7)[::-1].tolist()
    assert shard_of_users(keys, 7).tolist() == [zlib.crc32(str(key).encode()) % 7 for key in keys]  # documented: CRC-32 of the text
    assert shard_of_users(np.array([42]), 7).tolist() == shard_of_users(np.array(["42"], dtype=object), 7).tolist()


def test_each_rank_reads_only_its_shards_and_ranks_make_the_one_process_batch(sharded: Path) -> None:
    one = TrainingBatches(sharded, batch_size=12, seed=5, distributed=None)
    # Three shards over three ranks: rank r reads shard r only.
    ranks = [TrainingBatches(sharded, 12, 5, Distributed(rank, 3, 0)) for rank in range(3)]
    for rank, part in enumerate(ranks):
        assert len(part.dataset) == pq.ParquetFile(split_files(sharded, "train")[rank]).metadata.num_rows
    for step in (0, 1, 7, 40):
        whole = one.batch(step)
        parts = [part.batch(step) for part in ranks]
        assert sorted(zip(whole.users, whole.row[:, 0].tolist())) == sorted(
            (user, int(row)) for p in parts for user, row in zip(p.users, p.row[:, 0].tolist())
        )
        assert len(whole.users) == 12


def test_sharded_training_refuses_uneven_ranks_and_batches(sharded: Path) -> None:
    with pytest.raises(ConfigError, match="shared evenly by 2"):
        TrainingBatches(sharded, 12, 0, Distributed(0, 2, 0))
    with pytest.raises(ConfigError, match="multiple of the 3"):
        TrainingBatches(sharded, 10, 0, None)


def test_a_missing_shard_is_named(sharded: Path, tmp_path: Path) -> None:
    for path in sharded.glob("valid-*"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / shard_file("valid", 1, SHARDS)).unlink()
    with pytest.raises(FeaturesError, match="valid shards are not"):
        split_files(tmp_path, "valid")


@pytest.mark.slow
def test_cli_dask_engine_writes_the_local_engines_shards(tiny_feed: Path, sharded: Path, tmp_path: Path) -> None:
    """`rotorec prepare --engine dask --shards 3` on a 2-process local cluster equals the local run."""
    pytest.importorskip("distributed", reason="the dask extra is not installed (pip install 'rotorec[dask]')")
    from conftest import run_rotorec
    from test_prepare_reference import assert_same_prepared

    out = tmp_path / "dask"
    flags = ["--max-len", "50", "--windows", "all", "--shards", str(SHARDS), "--group-events", "500"]
    run_rotorec(
        "prepare", "--input", str(tiny_feed), "--out", str(out), *flags, "--engine", "dask", "--engine-workers", "2", "--no-progress"
    )
    assert_same_prepared(out, sharded)
