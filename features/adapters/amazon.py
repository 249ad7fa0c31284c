"""Amazon sequences (S3-Rec/SASRec preprocessing): one line per user, `user item item …`,
items in chronological order and no timestamps, plus an optional item -> attribute-ids JSON
(categories and brand) that becomes the multi-valued categorical field `attribute`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from rotorec.features.errors import LogReadError
from rotorec.features.reader import SourceBatch
from rotorec.features.schema import LogSchema
from rotorec.features.source import LogSource

SCHEMA = LogSchema(timestamp=None, categorical={"attribute": {"max_values": 8}})


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _attributes_file(sequences: Path) -> Path | None:
    stem = sequences.name.split(".")[0]
    for name in (f"{stem}_item2attributes.json", f"{stem}_item2attributes.json.gz"):
        if (sequences.parent / name).is_file():
            return sequences.parent / name
    return None


def _read_attributes(path: Path) -> dict[str, list[str]]:
    try:
        with _open_text(path) as handle:
            raw = json.load(handle)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise LogReadError(path, f"not an item -> attributes JSON file ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise LogReadError(path, "expected a JSON object mapping item ids to attribute lists")
    return {str(k): [str(a) for a in (v if isinstance(v, list) else [v])] for k, v in raw.items()}


def amazon_sequence_source(path: str | Path) -> LogSource:
    root = Path(path)
    if root.is_dir():
        found = sorted(p for p in root.iterdir() if p.name.endswith((".txt", ".txt.gz")))
        if not found:
            raise LogReadError(root, "no <Category>.txt(.gz) sequence file found")
        root = found[0]
    if not root.is_file():
        raise LogReadError(root, "no such file")
    attributes_path = _attributes_file(root)
    attributes = _read_attributes(attributes_path) if attributes_path else {}
    catalogue = (
        pa.table(
            {
                "item_id": pa.array(list(attributes), pa.string()),
                "attribute": pa.array(list(attributes.values()), pa.list_(pa.string())),
            }
        )
        if attributes
        else None
    )

    def batches() -> Iterator[SourceBatch]:
        try:
            with _open_text(root) as handle:
                lines = [line.split() for line in handle if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise LogReadError(root, f"not a text sequence file ({str(exc).splitlines()[0]})") from exc
        if lines and all(len(line) < 2 for line in lines[:1000]):
            raise LogReadError(root, "lines must read 'user item item …'")
        users = np.repeat(np.array([line[0] for line in lines], dtype=object), [len(line) - 1 for line in lines])
        items = [item for line in lines for item in line[1:]]
        item_array = pa.array(items, pa.string())
        yield SourceBatch(
            pa.RecordBatch.from_pydict(
                {
                    "user_id": pa.array(users, pa.string()),
                    "item_id": item_array,
                    "attribute": pa.array([attributes.get(i) for i in items], pa.list_(pa.string())),
                }
            ),
            root.name,
            0,
        )

    return LogSource(
        format="amazon-seq",
        schema=SCHEMA,
        batches=batches,
        inputs=[str(p) for p in (root, attributes_path) if p],
        catalogue=catalogue,
        default_split="loo",
    )
