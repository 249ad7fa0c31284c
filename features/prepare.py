"""`rotorec prepare`: one streaming pass over a log, then vocabularies, sequences and splits.

Output folder (written to a temporary sibling and renamed into place, so a failed run never
leaves a half-written dataset):

    train.parquet valid.parquet test.parquet   windows of user sequences (list columns)
    items.parquet                              item id -> key, count, item-level categories
    vocab/<name>.parquet                       key -> id for items, categorical fields, actions
    schema.json                                the FeatureSchema every later stage reads
    stats.json                                 counts, quarantine reasons, split sizes, rates
    quarantine.parquet                         every rejected row, as read, with its reason
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field
from tqdm.auto import tqdm

from rotorec.features.artifacts import NO_FIRST_SEEN, SPLIT_FILES, CategoricalInfo, FeatureSchema, SplitInfo
from rotorec.features.errors import FeaturesError
from rotorec.features.events import EventColumns
from rotorec.features.files import replace_folder
from rotorec.features.sequences import (
    OrderedEvents,
    action_masks,
    action_name,
    event_feature_columns,
    positives_and_counts,
    window_table,
)
from rotorec.features.source import LogSource
from rotorec.features.splits import SPLITS, TemporalCutoffs, impression_start_seconds, leave_last_out_phases, phase_ranges, temporal_phases
from rotorec.features.strict import StrictModel
from rotorec.features.validate import BatchValidator, QuarantineWriter
from rotorec.features.vocab import PAD, RESERVED, Vocabulary
from rotorec.features.windows import WindowMode, plan_windows

log = logging.getLogger(__name__)

PARQUET_OPTIONS = {"compression": "lz4", "use_dictionary": False}
"""Sequence files are mostly high-cardinality ints: dictionary pages cost time and save nothing."""


class NoValidEvents(FeaturesError):
    """Every row was rejected; the output folder then holds only quarantine.parquet and stats.json."""


class PrepareOptions(StrictModel):
    """Knobs of `rotorec prepare`; defaults follow the protocols of docs/evaluation.md and
    docs/evaluation_details.md."""

    max_len: int = Field(200, ge=1, description="events per window (history cap)")
    split: Literal["auto", "loo", "temporal"] = "auto"
    holdout: int = Field(1, ge=1, description="leave-last-out: events held out for test (and as many for valid)")
    valid_days: int = Field(1, ge=1)
    test_days: int = Field(1, ge=1)
    windows: WindowMode = Field("recent", description="train windows: 'recent' (newest max_len) or 'all'")
    min_count: int = Field(1, ge=1, description="items/values seen fewer times map to OOV")
    batch_rows: int = Field(1 << 20, ge=1)
    progress: bool = True


def prepare(source: LogSource, out_dir: str | Path, options: PrepareOptions | None = None) -> dict:
    """Run the whole features stage; returns the stats written to stats.json."""
    options = options or PrepareOptions()
    out = Path(out_dir)
    staging = _staging_dir(out)
    started = time.perf_counter()
    try:
        try:
            stats = _prepare_into(source, staging, options)
        except NoValidEvents:
            replace_folder(staging, out)  # publish the quarantine and stats so nothing is lost
            raise
        stats["elapsed_s"] = round(time.perf_counter() - started, 3)
        stats["events_per_s"] = round(stats["input_rows"] / max(stats["elapsed_s"], 1e-9))
        _write_json(staging / "stats.json", stats)
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("prepared", extra={"out": str(out), "events": stats["events"], "quarantined": stats["quarantined"]})
    return stats


class _PhaseClock:
    """Wall time per pipeline phase, reported in stats.json so slow stages are visible."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = round(now - self._last, 4)
        self._last = now


def _prepare_into(source: LogSource, folder: Path, options: PrepareOptions) -> dict:
    clock = _PhaseClock()
    schema = source.schema
    quarantine = QuarantineWriter(folder / "quarantine.parquet", schema.source_columns())
    validator = BatchValidator(schema, quarantine)
    parts: list[EventColumns] = []
    try:
        with tqdm(
            total=source.total_rows, unit="rows", unit_scale=True, desc="validate", disable=None if options.progress else True, leave=False
        ) as bar:
            for batch in source.batches():
                parts.append(validator.validate(batch))
                bar.update(batch.batch.num_rows)
    finally:
        quarantine.close()
    catalogue_codes, catalogue_categories = _register_catalogue(source, validator)
    events = EventColumns.concat(parts) if parts else None
    if events is None or len(events) == 0:
        _write_json(
            folder / "stats.json",
            {
                "source_format": source.format,
                "inputs": source.inputs,
                "input_rows": validator.rows_read,
                "events": 0,
                "quarantined": sum(validator.reasons.values()),
                "quarantine_reasons": dict(sorted(validator.reasons.items())),
            },
        )
        raise NoValidEvents(
            f"{', '.join(source.inputs)}: no valid events among {validator.rows_read} rows "
            f"({dict(sorted(validator.reasons.items()))}); every row is in quarantine.parquet"
        )

    clock.lap("read_validate_s")
    vocab_dir = folder / "vocab"
    vocab_dir.mkdir()
    keep_catalogue = np.zeros(len(validator.items), dtype=bool)
    keep_catalogue[catalogue_codes] = True
    items, item_map = Vocabulary.build("item", validator.items.keys, validator.items.counts, options.min_count, keep_catalogue)
    items.save(vocab_dir)
    category_maps: dict[str, np.ndarray] = {}
    category_vocabs: dict[str, Vocabulary] = {}
    for name, index in validator.categories.items():
        vocab, category_maps[name] = Vocabulary.build(name, index.keys, index.counts, options.min_count)
        vocab.save(vocab_dir)
        category_vocabs[name] = vocab

    ordered = OrderedEvents.sort(events)
    events = ordered.events
    masks = action_masks(events.labels)
    mask_counts_all = np.bincount(masks)
    mask_values = np.flatnonzero(mask_counts_all)
    mask_counts = mask_counts_all[mask_values]
    actions, action_map = Vocabulary.build("action", np.array([action_name(int(m), schema.tasks) for m in mask_values]), mask_counts)
    actions.save(vocab_dir)
    action_ids = action_map[np.searchsorted(mask_values, masks)]
    categorical_ids = {name: _map_codes(events.categorical[name], category_maps[name]) for name in schema.categorical}
    columns = event_feature_columns(ordered, schema, item_map[events.item], categorical_ids, action_ids)

    clock.lap("vocab_order_features_s")
    protocol = options.split if options.split != "auto" else source.protocol()
    split_info, phase = _phases(protocol, ordered, columns["impression"], options)
    user_keys = validator.users.keys[events.user[ordered.starts]]
    split_stats: dict[str, dict] = {}
    targets_by_split: dict[str, np.ndarray] = {}
    for split, wanted in SPLITS.items():
        ranges = phase_ranges(phase, ordered.starts, ordered.lengths, wanted)
        mode: WindowMode = options.windows if split == "train" else "all"
        windows = plan_windows(ordered.starts, ranges, options.max_len, mode)
        table = window_table(windows, columns, user_keys)
        pq.write_table(table, folder / SPLIT_FILES[split], row_group_size=8192, **PARQUET_OPTIONS)
        index, _, target = windows.flat_index()
        targets_by_split[split] = index[target]
        split_stats[split] = _split_stats(windows, events, targets_by_split[split], schema.tasks)
    if protocol == "temporal":
        trained = set(np.unique(events.user[targets_by_split["train"]]).tolist())
        for split in ("valid", "test"):
            users = np.unique(events.user[targets_by_split[split]])
            split_stats[split]["cold_users"] = int(sum(u not in trained for u in users.tolist()))

    clock.lap("split_window_write_s")
    _write_item_table(folder, items, item_map, events, categorical_ids, schema, catalogue_codes, catalogue_categories, category_maps)

    feature_schema = FeatureSchema(
        source_format=source.format,
        tasks=schema.tasks,
        probabilities=list(schema.probabilities),
        item_vocab_size=items.size,
        actions=list(actions.keys),
        categorical={
            name: CategoricalInfo(vocab_size=category_vocabs[name].size, max_values=spec.max_values, level=spec.level)
            for name, spec in schema.categorical.items()
        },
        max_len=options.max_len,
        split=split_info,
        timestamp_unit=validator.times.resolved_unit if schema.timestamp else "none",
        default_timezone=schema.default_timezone,
        log_schema=schema.model_dump(mode="json"),
    )
    feature_schema.save(folder)
    impressions = int(columns["impression"].max()) if len(events) else 0
    stats = _summary(
        source, validator, events, schema, items, category_vocabs, actions, split_stats, split_info, catalogue_codes, impressions
    )
    clock.lap("items_schema_stats_s")
    stats["timings"] = clock.timings
    return stats


def _register_catalogue(source: LogSource, validator: BatchValidator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Known items join the item index even if never seen; their categories come from the catalogue."""
    if source.catalogue is None or source.catalogue.num_rows == 0:
        return np.zeros(0, dtype=np.int64), {}
    table = source.catalogue
    codes = validator.items.add_keys(table.column("item_id").to_numpy(zero_copy_only=False))
    categories = {
        name: validator.encode_categorical(table.column(name).combine_chunks(), name)
        for name in source.schema.categorical
        if name in table.column_names
    }
    return codes, categories


def _map_codes(codes: np.ndarray, code_to_id: np.ndarray) -> np.ndarray:
    """Running codes -> vocabulary ids; 'no value' (-1) -> PAD (also when a field never had a value)."""
    if len(code_to_id) == 0:
        return np.full(codes.shape, PAD, dtype=np.int64)
    return np.where(codes >= 0, code_to_id[np.maximum(codes, 0)], PAD)


def _phases(protocol: str, ordered: OrderedEvents, impression: np.ndarray, options: PrepareOptions) -> tuple[SplitInfo, np.ndarray]:
    events = ordered.events
    if protocol == "loo":
        phase = leave_last_out_phases(ordered.starts, ordered.lengths, options.holdout)
        return SplitInfo(protocol="loo", windows=options.windows, holdout=options.holdout), phase
    if not events.has_time.any():
        raise FeaturesError("a temporal split needs timestamps, and no event has one (use --split loo)")
    cutoffs = TemporalCutoffs.last_days(int(events.seconds[events.has_time].max()), options.valid_days, options.test_days)
    phase = temporal_phases(impression_start_seconds(events.seconds, impression), events.has_time, cutoffs)
    info = SplitInfo(protocol="temporal", windows=options.windows, valid_start=cutoffs.valid_start, test_start=cutoffs.test_start)
    return info, phase


def _split_stats(windows, events: EventColumns, targets: np.ndarray, tasks: list[str]) -> dict:
    positives, observed = positives_and_counts(events.labels[targets])
    return {
        "windows": len(windows),
        "users": int(np.count_nonzero(np.diff(windows.user)) + 1) if len(windows) else 0,
        "targets": int(len(targets)),
        "positives": {t: int(p) for t, p in zip(tasks, positives)},
        "base_rate": {t: (float(p / o) if o else None) for t, p, o in zip(tasks, positives, observed)},
    }


def _write_item_table(
    folder, items, item_map, events, categorical_ids, schema, catalogue_codes, catalogue_categories, category_maps
) -> None:
    """items.parquet: one row per item id (0 = PAD, 1 = OOV included) with item-level categories
    and the item's first timestamp in the log (what model.item_age measures ages from).

    A catalogue's categories win; otherwise an item carries the values of its latest event."""
    ids = np.arange(items.size)
    event_item_ids = item_map[events.item]
    data: dict[str, pa.Array] = {
        "id": pa.array(ids, pa.int32()),
        "key": pa.array(items.key_of(ids).astype(str), pa.string()),
        "count": pa.array(np.concatenate([[0, 0], items.counts]), pa.int64()),
        "first_seen": pa.array(_first_seen(event_item_ids, events.seconds, events.has_time, items.size), pa.int64()),
    }
    by_item_then_time = np.lexsort((events.row, events.seconds, event_item_ids))
    ordered_ids = event_item_ids[by_item_then_time]
    latest = by_item_then_time[np.flatnonzero(np.append(ordered_ids[1:] != ordered_ids[:-1], True))]
    for name, spec in schema.categorical.items():
        if spec.level != "item":
            continue
        table = np.zeros((items.size, spec.max_values), dtype=np.int32)
        table[event_item_ids[latest]] = categorical_ids[name][latest]  # each item's latest event
        if name in catalogue_categories:
            mapped = _map_codes(catalogue_categories[name], category_maps[name])
            known = item_map[catalogue_codes] >= RESERVED
            table[item_map[catalogue_codes][known]] = mapped[known]
        table[:RESERVED] = PAD
        offsets = pa.array(np.arange(items.size + 1) * spec.max_values, pa.int32())
        data[f"cat_{name}"] = pa.ListArray.from_arrays(offsets, pa.array(table.reshape(-1)))
    pq.write_table(pa.table(data), folder / "items.parquet")


def _first_seen(item_ids: np.ndarray, seconds: np.ndarray, has_time: np.ndarray, size: int) -> np.ndarray:
    """Each item's earliest timed event (UTC seconds), NO_FIRST_SEEN where it has none. OOV stays
    NO_FIRST_SEEN even when rare items (min_count) map to it: at serving time OOV stands for an
    item the run never saw, which is new, not as old as the log's first rare item."""
    never = np.iinfo(np.int64).max
    first = np.full(size, never, dtype=np.int64)
    np.minimum.at(first, item_ids[has_time], seconds[has_time])
    first[first == never] = NO_FIRST_SEEN
    first[:RESERVED] = NO_FIRST_SEEN
    return first


def _summary(
    source, validator, events, schema, items, category_vocabs, actions, split_stats, split_info, catalogue_codes, impressions
) -> dict:
    positives_scope = events.has_impression if schema.impression_id is not None else np.ones(len(events), bool)
    positives, observed = positives_and_counts(events.labels[positives_scope])
    timed = events.seconds[events.has_time]
    stats = {
        "source_format": source.format,
        "inputs": source.inputs,
        "input_rows": int(validator.rows_read),
        "events": int(len(events)),
        "quarantined": int(sum(validator.reasons.values())),
        "quarantine_reasons": dict(sorted(validator.reasons.items())),
        "users": int(np.count_nonzero(validator.users.counts)),
        "items": int(np.count_nonzero(validator.items.counts)),
        "catalogue_items": int(len(catalogue_codes)),
        "vocab_sizes": {"item": items.size, "action": actions.size, **{n: v.size for n, v in category_vocabs.items()}},
        "timestamp_unit": validator.times.resolved_unit if schema.timestamp else "none",
        "events_without_timestamp": int((~events.has_time).sum()),
        "first_timestamp": int(timed.min()) if len(timed) else None,
        "last_timestamp": int(timed.max()) if len(timed) else None,
        "positives": {t: int(p) for t, p in zip(schema.tasks, positives)},
        "label_rate": {t: (float(p / o) if o else None) for t, p, o in zip(schema.tasks, positives, observed)},
        "split": split_info.model_dump(mode="json"),
        "splits": split_stats,
    }
    if schema.impression_id is not None:
        stats["impressions"] = int(impressions)
    return stats


def _staging_dir(out: Path) -> Path:
    if out.exists() and any(out.iterdir()) and not (out / "stats.json").exists():
        raise FeaturesError(f"{out}: exists and does not look like a prepared dataset; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
