"""The prepared-data contract: `schema.json` beside the split files, read by every later stage.

Training builds its embedding tables and heads from it, the service maps request fields with it,
and a run stores its hash so a model is never paired with data prepared differently.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq

from rotorec.features.errors import FeaturesError
from rotorec.features.strict import StrictModel
from rotorec.features.vocab import RESERVED

FORMAT_VERSION = 1
SPLIT_FILES = {"train": "train.parquet", "valid": "valid.parquet", "test": "test.parquet"}
NO_FIRST_SEEN = -1  # items.parquet's first_seen of an item with no timed event (and of PAD, OOV)


class CategoricalInfo(StrictModel):
    vocab_size: int
    max_values: int
    level: Literal["item", "event"]


class SplitInfo(StrictModel):
    protocol: Literal["loo", "temporal"]
    windows: Literal["recent", "all"]
    holdout: int | None = None
    valid_start: int | None = None
    test_start: int | None = None


class FeatureSchema(StrictModel):
    """Everything a model needs to know about prepared sequences."""

    format_version: int = FORMAT_VERSION
    source_format: str
    tasks: list[str]
    probabilities: list[str]
    item_vocab_size: int
    actions: list[str]
    """Action names by id, starting at id 2 (0 = PAD, 1 = OOV)."""
    categorical: dict[str, CategoricalInfo]
    max_len: int
    split: SplitInfo
    timestamp_unit: str
    default_timezone: str
    log_schema: dict

    @property
    def action_vocab_size(self) -> int:
        return RESERVED + len(self.actions)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "schema.json"
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FeatureSchema:
        return cls.model_validate_json((Path(folder) / "schema.json").read_text(encoding="utf-8"))

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: equal fingerprints mean interchangeable data."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shard_file(split: str, shard: int, shards: int) -> str:
    """File name of one shard of a split: `train.parquet` unsharded, else `train-00003-of-00008.parquet`."""
    return SPLIT_FILES[split] if shards == 1 else f"{split}-{shard:05d}-of-{shards:05d}.parquet"


def split_files(folder: str | Path, split: str) -> list[Path]:
    """A split's files in shard order (one file unless prepared with --shards)."""
    folder = Path(folder)
    single = folder / SPLIT_FILES[split]
    if single.exists():
        return [single]
    found = sorted(p for p in folder.glob(f"{split}-*-of-*.parquet") if re.fullmatch(rf"{split}-\d{{5}}-of-\d{{5}}\.parquet", p.name))
    if not found:
        raise FeaturesError(f"{folder}: no {split} split ({single.name}, or {split}-KKKKK-of-NNNNN.parquet shards)")
    shards = int(found[0].name[-13:-8])
    expected = [folder / shard_file(split, k, shards) for k in range(shards)]
    if found != expected:
        raise FeaturesError(f"{folder}: the {split} shards are not {split}-00000 … {shards - 1:05d} of {shards:05d}")
    return found


def shard_of_users(keys: np.ndarray, shards: int) -> np.ndarray:
    """Shard of each user key: CRC-32 of its text, mod `shards`. It depends on the key alone, so a
    user lands in the same shard whatever else the log holds, on any machine."""
    if shards == 1:
        return np.zeros(len(keys), dtype=np.int64)
    return np.fromiter((zlib.crc32(str(key).encode("utf-8")) for key in keys), dtype=np.int64, count=len(keys)) % shards


def item_first_seen(folder: str | Path) -> np.ndarray:
    """items.parquet's first_seen column, indexed by item id."""
    path = Path(folder) / "items.parquet"
    table = pq.read_table(path)
    if "first_seen" not in table.column_names:
        raise FeaturesError(f"{path} has no first_seen column (prepared by an older rotorec): run `rotorec prepare` again")
    first_seen = np.full(len(table), NO_FIRST_SEEN, dtype=np.int64)
    first_seen[table.column("id").to_numpy()] = table.column("first_seen").to_numpy()
    return first_seen
