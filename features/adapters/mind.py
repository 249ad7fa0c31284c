"""MIND: `behaviors.tsv` (impression_id, user, time, history, impressions) + `news.tsv`.

Every impression candidate becomes a `click`-labelled event at the impression time (read as
UTC, docs/evaluation_details.md, "MIND"). A user's click history becomes events without timestamps, placed
before the user's impressions: they feed the model as history, never as targets. Category and
subcategory come from news.tsv where the item is known (in the team's 5k sample, rarely).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rotorec.features.errors import LogReadError
from rotorec.features.reader import SourceBatch
from rotorec.features.schema import LogSchema
from rotorec.features.source import LogSource

BEHAVIOR_COLUMNS = ["impression_id", "user_id", "time", "history", "impressions"]
MIND_TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
SCHEMA = LogSchema(
    timestamp="timestamp",
    impression_id="impression_id",
    timestamp_unit="iso",
    labels={"click": {}},
    categorical={"category": {}, "subcategory": {}},
)


def _find(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{s}" for s in (".tsv", ".tsv.gz") if (folder / f"{stem}{s}").is_file()), None)


def _read_tsv(path: Path, names: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            path, sep="\t", header=None, names=names, dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE, usecols=range(len(names))
        )
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise LogReadError(path, f"not a MIND TSV file ({str(exc).splitlines()[0]})") from exc
    return frame


def mind_source(path: str | Path) -> LogSource:
    root = Path(path)
    folder = root if root.is_dir() else root.parent
    behaviors_path = root if root.is_file() else _find(folder, "behaviors")
    if behaviors_path is None:
        raise LogReadError(root, "no behaviors.tsv(.gz) found")
    news_path = _find(folder, "news")

    def batches() -> Iterator[SourceBatch]:
        behaviors = _read_tsv(behaviors_path, BEHAVIOR_COLUMNS)
        news = _read_tsv(news_path, ["news_id", "category", "subcategory"]) if news_path else None
        yield SourceBatch(_events(behaviors, news), behaviors_path.name, 0)

    return LogSource(
        format="mind", schema=SCHEMA, batches=batches, inputs=[str(p) for p in (behaviors_path, news_path) if p], default_split="temporal"
    )


def _iso_times(raw: pd.Series) -> np.ndarray:
    """MIND's US-style times as ISO-8601 UTC strings; unreadable ones stay as written (and get
    quarantined as bad timestamps by the validator)."""
    parsed = pd.to_datetime(raw, format=MIND_TIME_FORMAT, errors="coerce", utc=True)
    iso = parsed.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return np.where(parsed.notna(), iso, raw).astype(object)


def _events(behaviors: pd.DataFrame, news: pd.DataFrame | None) -> pa.RecordBatch:
    """One record batch: history events (no time, click = 1) then impression candidates."""
    times = _iso_times(behaviors["time"])
    order = np.lexsort((np.arange(len(behaviors)), pd.to_datetime(behaviors["time"], format=MIND_TIME_FORMAT, errors="coerce").to_numpy()))
    first_rows = behaviors.iloc[order].drop_duplicates("user_id")
    history = pa.array(first_rows["history"].to_numpy(), pa.string())
    tokens = pc.split_pattern(history, " ")
    history_items = pc.list_flatten(tokens)
    history_users = first_rows["user_id"].to_numpy()[pc.list_parent_indices(tokens).to_numpy()]
    kept = pc.not_equal(history_items, "")

    impressions = pc.split_pattern(pa.array(behaviors["impressions"].to_numpy(), pa.string()), " ")
    tokens_flat = pc.list_flatten(impressions)
    owner = pc.list_parent_indices(impressions).to_numpy()
    parts = pc.extract_regex(tokens_flat, r"^(?P<item>[^-\s]+)(?:-(?P<label>[^-\s]*))?$")
    candidate_items = pc.struct_field(parts, "item")
    candidate_labels = pc.struct_field(parts, "label")

    n_history = int(pc.sum(kept).as_py() or 0)
    item_id = pa.concat_arrays([history_items.filter(kept), candidate_items])
    columns = {
        "user_id": pa.concat_arrays(
            [pa.array(history_users, pa.string()).filter(kept), pa.array(behaviors["user_id"].to_numpy()[owner], pa.string())]
        ),
        "item_id": item_id,
        "timestamp": pa.concat_arrays([pa.nulls(n_history, pa.string()), pa.array(times[owner], pa.string())]),
        "impression_id": pa.concat_arrays(
            [pa.nulls(n_history, pa.string()), pa.array(behaviors["impression_id"].to_numpy()[owner], pa.string())]
        ),
        "click": pa.concat_arrays([pa.array(np.ones(n_history, np.int8)).cast(pa.string()), candidate_labels]),
    }
    columns.update(_news_fields(item_id, news))
    return pa.RecordBatch.from_pydict(columns)


def _news_fields(item_id: pa.Array, news: pd.DataFrame | None) -> dict[str, pa.Array]:
    if news is None:
        return {name: pa.nulls(len(item_id), pa.string()) for name in ("category", "subcategory")}
    position = pd.Index(news["news_id"].to_numpy()).get_indexer(item_id.fill_null("").to_numpy(zero_copy_only=False))
    known = position >= 0
    out = {}
    for name in ("category", "subcategory"):
        values = news[name].to_numpy()[np.maximum(position, 0)]
        out[name] = pa.array(np.where(known & (values != ""), values, None), pa.string())
    return out
