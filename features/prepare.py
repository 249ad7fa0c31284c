"""`rotorec prepare`: one streaming pass over a log, then vocabularies, sequences and splits,
one group of users at a time so memory does not grow with the log (docs/prepare_at_scale.md).

Output folder (written to a temporary sibling and renamed into place, so a failed run never
leaves a half-written dataset):

    train.parquet valid.parquet test.parquet   windows of user sequences (list columns); with
                                               --shards N, train-KKKKK-of-NNNNN.parquet etc.,
                                               users spread over the shards by a hash of their key
    items.parquet                              item id -> key, count, item-level categories
    vocab/<name>.parquet                       key -> id for items, categorical fields, actions
    schema.json                                the FeatureSchema every later stage reads
    stats.json                                 counts, quarantine reasons, split sizes, rates
    quarantine.parquet                         every rejected row, as read, with its reason
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field
from tqdm.auto import tqdm

from rotorec.features.background import InOrder, read_ahead
from rotorec.features.artifacts import NO_FIRST_SEEN, CategoricalInfo, FeatureSchema, SplitInfo, shard_file
from rotorec.features.engines import ENGINES, Engine, open_engine
from rotorec.features.errors import FeaturesError
from rotorec.features.files import replace_folder
from rotorec.features.groups import EventTotals, FeaturizePlan, GroupFeatures, IdMaps, deduplicate_group, featurize_group, map_codes
from rotorec.features.sequences import action_name
from rotorec.features.source import LogSource
from rotorec.features.splits import SPLITS, TemporalCutoffs
from rotorec.features.strict import StrictModel
from rotorec.features.spill import EventSpill, user_groups
from rotorec.features.validate import BatchValidator, QuarantineWriter
from rotorec.features.vocab import PAD, RESERVED, Vocabulary
from rotorec.features.windows import WindowMode

log = logging.getLogger(__name__)

PARQUET_OPTIONS = {"compression": "lz4", "use_dictionary": False, "write_statistics": False}
"""Sequence files are mostly high-cardinality ints: dictionary pages cost time and save nothing,
and min/max statistics of list columns (which no reader here uses) double the write time."""
ROW_GROUP = 8192
"""Windows per Parquet row group in the split files."""


def _glibc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_trim()


def _release_freed_memory() -> None:
    """Hand the memory one group freed back to the OS before the next. glibc keeps freed heap
    memory for reuse, and each group's large arrays leave it fragmented: without this, peak RSS
    at 30M events was 1.73 GB instead of 1.33 GB (benchmarks/RESULTS.md). Not more often than
    that: memory handed back is zeroed again by the kernel when next touched."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


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
    shards: int = Field(1, ge=1, description="split files per split, users spread by a hash of their key (distributed training)")
    engine: Literal[ENGINES] = Field("local", description="where the per-group passes run: this process, or Dask workers")
    engine_address: str | None = Field(None, description="Dask scheduler address; none: a local cluster of engine_workers processes")
    engine_workers: int = Field(2, ge=1, description="processes of the local Dask cluster")
    threads: int = Field(
        1, ge=1, description="threads: read ahead, spill and encode beside the main one; with the local engine, groups featurized at once"
    )
    group_events: int = Field(
        2_000_000,
        ge=1,
        description="events featurized at once, across the local engine's threads (bounds memory; a user is never split)",
    )
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
    """Three passes: read + validate + spill by user; find duplicates per user group (then
    vocabularies); featurize, split and write each user group in turn."""
    clock = _PhaseClock()
    schema = source.schema
    quarantine = QuarantineWriter(folder / "quarantine.parquet", schema.source_columns())
    validator = BatchValidator(schema, quarantine)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}.spill-", dir=folder.parent) as scratch, ExitStack() as cleanup:
        cleanup.callback(quarantine.close)  # closing twice is harmless; it is closed early where it must be
        spill = EventSpill(Path(scratch), memory_events=options.group_events, background=options.threads > 1)
        cleanup.callback(spill.close)
        latest = _read_and_spill(source, validator, spill, options)
        clock.lap("read_validate_s")
        if validator.events_kept == 0:
            quarantine.close()
            _no_valid_events(source, validator, folder)
        # Opened once the log is read (none for a log without a valid event) and closed on every
        # way out, so a Dask cluster never outlives the job.
        # Local threads share --group-events: N groups of 1/N the size are out at once, so memory
        # stays where one thread puts it, and smaller groups keep the threads evenly busy.
        sharing = options.threads if options.engine == "local" else 1
        per_group = -(-options.group_events // sharing)
        engine = open_engine(options.engine, options.engine_address, options.engine_workers, options.threads, budget=sharing * per_group)
        cleanup.callback(engine.close)
        spill.finish(on_disk=engine.on_disk)
        groups = user_groups(validator.users.counts, per_group)
        duplicates = _find_duplicates(engine, spill, groups, validator, options)
        _quarantine_duplicates(source, quarantine, duplicates)
        quarantine.close()
        clock.lap("deduplicate_s")
        vocabularies = _Vocabularies.build(source, validator, folder / "vocab", options)
        protocol = options.split if options.split != "auto" else source.protocol()
        split_info, cutoffs = _split_plan(protocol, latest, options)
        plan = FeaturizePlan(
            schema=schema,
            maps=vocabularies.maps,
            protocol=protocol,
            cutoffs=cutoffs,
            max_len=options.max_len,
            windows=options.windows,
            holdout=options.holdout,
            shards=options.shards,
            duplicates=duplicates,
        )
        totals = _Totals.empty(schema.tasks, vocabularies)
        # Entered last, so shut down (after its writes) before the spill and the engine go.
        encoders = cleanup.enter_context(ThreadPoolExecutor(len(SPLITS), thread_name_prefix="encode")) if options.threads > 1 else None
        writers = {
            split: [_SplitWriter(folder / shard_file(split, k, options.shards), encoders) for k in range(options.shards)]
            for split in SPLITS
        }
        user_keys = [validator.users.keys[first:end] for first, end in groups]
        results = engine.map(featurize_group, (spill, plan), groups, user_keys, _sizes(groups, validator))
        for result in _progress(results, len(groups), "featurize", options):
            _merge_group(result, writers, totals, schema)
            del result
            _release_freed_memory()
        for shard_writers in writers.values():
            for writer in shard_writers:
                writer.close()
    clock.lap("featurize_split_write_s")

    items, actions = vocabularies.items, vocabularies.actions
    _write_item_table(folder, items, totals, vocabularies, schema)
    feature_schema = FeatureSchema(
        source_format=source.format,
        tasks=schema.tasks,
        probabilities=list(schema.probabilities),
        item_vocab_size=items.size,
        actions=list(actions.keys),
        categorical={
            name: CategoricalInfo(vocab_size=vocabularies.categories[name].size, max_values=spec.max_values, level=spec.level)
            for name, spec in schema.categorical.items()
        },
        max_len=options.max_len,
        split=split_info,
        timestamp_unit=validator.times.resolved_unit if schema.timestamp else "none",
        default_timezone=schema.default_timezone,
        log_schema=schema.model_dump(mode="json"),
    )
    feature_schema.save(folder)
    stats = _summary(source, validator, totals, vocabularies, split_info)
    if options.shards > 1:
        stats["shards"] = options.shards
    clock.lap("items_schema_stats_s")
    stats["timings"] = clock.timings
    return stats


def _progress(results, total: int, phase: str, options: PrepareOptions):
    return tqdm(results, total=total, unit="groups", desc=phase, disable=None if options.progress else True, leave=False)


def _read_and_spill(source: LogSource, validator: BatchValidator, spill: EventSpill, options: PrepareOptions) -> int | None:
    """Pass 1: every row is validated once; good events go to the spill. Returns the latest time."""
    latest: int | None = None
    with tqdm(
        total=source.total_rows, unit="rows", unit_scale=True, desc="validate", disable=None if options.progress else True, leave=False
    ) as bar:
        batches = source.batches()
        for batch in read_ahead(batches) if options.threads > 1 else batches:
            events = validator.validate(batch)
            if spill.append(events, validator.event_hashes(events)):
                _release_freed_memory()  # once per run, not per batch: each release costs the next batch page faults
            if events.has_time.any():
                newest = int(events.seconds[events.has_time].max())
                latest = newest if latest is None else max(latest, newest)
            bar.update(batch.batch.num_rows)
    return latest


def _no_valid_events(source: LogSource, validator: BatchValidator, folder: Path) -> None:
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


def _find_duplicates(
    engine: Engine, spill: EventSpill, groups: list[tuple[int, int]], validator: BatchValidator, options: PrepareOptions
) -> np.ndarray:
    """Pass 2: input rows that repeat an earlier event (sorted), with their counts taken back."""
    repeated: list[np.ndarray] = []
    results = engine.map(deduplicate_group, (spill, validator.schema), groups, sizes=_sizes(groups, validator))
    for found in _progress(results, len(groups), "deduplicate", options):
        if found is not None:
            repeated.append(found.rows)
            validator.discount(found.user, found.item, found.categorical, found.labels)
        _release_freed_memory()
    return np.sort(np.concatenate(repeated)) if repeated else np.zeros(0, dtype=np.int64)


def _sizes(groups: list[tuple[int, int]], validator: BatchValidator) -> list[int]:
    """Events per group, as counted so far (duplicates are taken back after pass 2)."""
    total = np.concatenate([[0], np.cumsum(validator.users.counts)])
    return [int(total[end] - total[first]) for first, end in groups]


def _quarantine_duplicates(source: LogSource, quarantine: QuarantineWriter, duplicates: np.ndarray) -> None:
    """Duplicates are known only once every event is read, so their rows are fetched by a second
    read of the log (only when there are any) and quarantined as read, after the other rejects."""
    if len(duplicates) == 0:
        return
    first = 0  # the validator's input-row ordinal: malformed lines count before their batch's rows
    for batch in source.batches():
        first += len(batch.malformed)
        n = batch.batch.num_rows
        lo, hi = np.searchsorted(duplicates, [first, first + n])
        if hi > lo:
            rows = duplicates[lo:hi] - first
            quarantine.write(batch, rows, np.full(len(rows), "duplicate", dtype=object), np.full(len(rows), "", dtype=object))
        first += n
        if hi == len(duplicates):
            return


@dataclass
class _Vocabularies:
    """Every id mapping, built from whole-log counts before any group is featurized."""

    items: Vocabulary
    item_map: np.ndarray
    categories: dict[str, Vocabulary]
    category_maps: dict[str, np.ndarray]
    actions: Vocabulary
    mask_values: np.ndarray
    action_map: np.ndarray
    catalogue_codes: np.ndarray
    catalogue_categories: dict[str, np.ndarray]

    @classmethod
    def build(cls, source: LogSource, validator: BatchValidator, folder: Path, options: PrepareOptions):
        catalogue_codes, catalogue_categories = _register_catalogue(source, validator)
        folder.mkdir()
        keep_catalogue = np.zeros(len(validator.items), dtype=bool)
        keep_catalogue[catalogue_codes] = True
        items, item_map = Vocabulary.build("item", validator.items.keys, validator.items.counts, options.min_count, keep_catalogue)
        items.save(folder)
        categories: dict[str, Vocabulary] = {}
        category_maps: dict[str, np.ndarray] = {}
        for name, index in validator.categories.items():
            categories[name], category_maps[name] = Vocabulary.build(name, index.keys, index.counts, options.min_count)
            categories[name].save(folder)
        mask_counts = validator.action_counts
        mask_values = np.flatnonzero(mask_counts)
        names = np.array([action_name(int(m), source.schema.tasks) for m in mask_values])
        actions, action_map = Vocabulary.build("action", names, mask_counts[mask_values])
        actions.save(folder)
        return cls(items, item_map, categories, category_maps, actions, mask_values, action_map, catalogue_codes, catalogue_categories)

    @property
    def maps(self) -> IdMaps:
        return IdMaps(item=self.item_map, categorical=self.category_maps, mask_values=self.mask_values, action=self.action_map)


@dataclass
class _Totals:
    """What the stats and the item table need from every group, summed as groups pass."""

    split_stats: dict[str, dict]
    split_observed: dict[str, np.ndarray]
    events: EventTotals
    impressions: int
    item_first_seen: np.ndarray
    item_latest: np.ndarray  # [2, items]: (seconds, row) of each item's latest event, −1 if none
    item_categories: dict[str, np.ndarray]  # item-level fields: the latest event's values

    @classmethod
    def empty(cls, tasks: list[str], vocabularies: _Vocabularies) -> _Totals:
        size = vocabularies.items.size
        zero = np.zeros(len(tasks), dtype=np.int64)
        return cls(
            split_stats={split: {"windows": 0, "users": 0, "targets": 0, "cold_users": 0} for split in SPLITS},
            split_observed={split: np.zeros((2, len(tasks)), dtype=np.int64) for split in SPLITS},
            events=EventTotals(0, 0, None, None, zero.copy(), zero.copy()),
            impressions=0,
            item_first_seen=np.full(size, np.iinfo(np.int64).max, dtype=np.int64),
            item_latest=np.full((2, size), -1, dtype=np.int64),
            item_categories={},
        )


def _merge_group(result: GroupFeatures, writers: dict[str, list[_SplitWriter]], totals: _Totals, schema) -> None:
    """Append one group's windows (in group order, whichever engine made them) and add its share
    of every total."""
    shift = totals.impressions  # impressions are numbered densely across groups, in user order
    for split, part in result.splits.items():
        for writer, table in zip(writers[split], part.tables):
            writer.write(_shift_impressions(table, shift) if shift else table)
        stats = totals.split_stats[split]
        stats["windows"] += part.windows
        stats["users"] += part.users
        stats["targets"] += part.targets
        stats["cold_users"] += part.cold_users
        totals.split_observed[split] += np.stack([part.positives, part.observed])
    totals.impressions += result.impressions
    totals.events.add(result.totals)
    ids, earliest = result.item_first_seen
    np.minimum.at(totals.item_first_seen, ids, earliest)
    _merge_latest(totals, *result.item_latest, schema)


def _shift_impressions(table: pa.Table, shift: int) -> pa.Table:
    lists = table.column("impression").combine_chunks()
    values = lists.values.to_numpy()
    shifted = pa.array(np.where(values > 0, values + shift, 0))
    column = type(lists).from_arrays(lists.offsets, shifted)
    return table.set_column(table.schema.get_field_index("impression"), "impression", column)


def _merge_latest(totals: _Totals, ids: np.ndarray, seconds: np.ndarray, rows: np.ndarray, values: dict, schema) -> None:
    """Keep each item's latest event (by time, then input row) and its item-level values over
    the groups merged so far; a group offers at most one event per item."""
    if len(ids) == 0:
        return
    best_seconds, best_rows = totals.item_latest
    newer = (seconds > best_seconds[ids]) | ((seconds == best_seconds[ids]) & (rows > best_rows[ids]))
    ids = ids[newer]
    best_seconds[ids], best_rows[ids] = seconds[newer], rows[newer]
    for name, picked in values.items():
        table = totals.item_categories.setdefault(name, np.zeros((len(best_seconds), schema.categorical[name].max_values), dtype=np.int32))
        table[ids] = picked[newer]


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


def _split_plan(protocol: str, latest: int | None, options: PrepareOptions) -> tuple[SplitInfo, TemporalCutoffs | None]:
    if protocol == "loo":
        return SplitInfo(protocol="loo", windows=options.windows, holdout=options.holdout), None
    if latest is None:
        raise FeaturesError("a temporal split needs timestamps, and no event has one (use --split loo)")
    cutoffs = TemporalCutoffs.last_days(latest, options.valid_days, options.test_days)
    info = SplitInfo(protocol="temporal", windows=options.windows, valid_start=cutoffs.valid_start, test_start=cutoffs.test_start)
    return info, cutoffs


class _SplitWriter:
    """Appends each group's windows to one Parquet file in row groups of ROW_GROUP rows, exactly
    the row groups one write of the whole table would give. Given a `pool`, row groups are
    encoded and written on its threads (Arrow encodes without the GIL) while the caller goes on
    to the next group; one write per file is out at a time, so a file's row groups stay in order."""

    def __init__(self, path: Path, pool: ThreadPoolExecutor | None = None) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._template: pa.Table | None = None
        self._writing = InOrder(pool) if pool is not None else None

    def write(self, table: pa.Table) -> None:
        if self._template is None:
            self._template = table.slice(0, 0)
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROW_GROUP:
            self._flush(whole_groups_only=True)

    def close(self) -> None:
        self._flush(whole_groups_only=False)
        if self._writing is not None:
            self._writing.wait()
        if self._writer is not None:
            self._writer.close()
        elif self._template is not None:
            pq.write_table(self._template, self.path, row_group_size=ROW_GROUP, **PARQUET_OPTIONS)

    def _flush(self, whole_groups_only: bool) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        cut = table.num_rows - table.num_rows % ROW_GROUP if whole_groups_only else table.num_rows
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, **PARQUET_OPTIONS)
        rest = table.slice(cut)
        self._pending, self._pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        if self._writing is None:
            self._writer.write_table(table.slice(0, cut), row_group_size=ROW_GROUP)
        else:
            self._writing.submit(self._writer.write_table, table.slice(0, cut), row_group_size=ROW_GROUP)


def _write_item_table(folder: Path, items: Vocabulary, totals: _Totals, vocab: _Vocabularies, schema) -> None:
    """items.parquet: one row per item id (0 = PAD, 1 = OOV included) with item-level categories
    and the item's first timestamp in the log (what model.item_age measures ages from).

    A catalogue's categories win; otherwise an item carries the values of its latest event. OOV
    keeps no first timestamp even when rare items (min_count) map to it: at serving time OOV
    stands for an item the run never saw, which is new, not as old as the log's first rare item."""
    ids = np.arange(items.size)
    first_seen = totals.item_first_seen.copy()
    first_seen[(first_seen == np.iinfo(np.int64).max) | (ids < RESERVED)] = NO_FIRST_SEEN
    data: dict[str, pa.Array] = {
        "id": pa.array(ids, pa.int32()),
        "key": pa.array(items.key_of(ids).astype(str), pa.string()),
        "count": pa.array(np.concatenate([[0, 0], items.counts]), pa.int64()),
        "first_seen": pa.array(first_seen, pa.int64()),
    }
    for name, spec in schema.categorical.items():
        if spec.level != "item":
            continue
        table = totals.item_categories.get(name, np.zeros((items.size, spec.max_values), dtype=np.int32))
        if name in vocab.catalogue_categories:
            mapped = map_codes(vocab.catalogue_categories[name], vocab.category_maps[name])
            catalogue_ids = vocab.item_map[vocab.catalogue_codes]
            known = catalogue_ids >= RESERVED
            table[catalogue_ids[known]] = mapped[known]
        table[:RESERVED] = PAD
        offsets = pa.array(np.arange(items.size + 1) * spec.max_values, pa.int32())
        data[f"cat_{name}"] = pa.ListArray.from_arrays(offsets, pa.array(table.reshape(-1)))
    pq.write_table(pa.table(data), folder / "items.parquet")


def _summary(source: LogSource, validator: BatchValidator, totals: _Totals, vocab: _Vocabularies, split_info: SplitInfo) -> dict:
    schema = validator.schema
    rate = lambda p, o: {t: (float(pt / ot) if ot else None) for t, pt, ot in zip(schema.tasks, p, o)}  # noqa: E731
    splits = {}
    for split, counted in totals.split_stats.items():
        positives, observed = totals.split_observed[split]
        splits[split] = {
            "windows": counted["windows"],
            "users": counted["users"],
            "targets": counted["targets"],
            "positives": {t: int(p) for t, p in zip(schema.tasks, positives)},
            "base_rate": rate(positives, observed),
        }
        if split_info.protocol == "temporal" and split != "train":
            splits[split]["cold_users"] = counted["cold_users"]
    stats = {
        "source_format": source.format,
        "inputs": source.inputs,
        "input_rows": int(validator.rows_read),
        "events": int(totals.events.events),
        "quarantined": int(sum(validator.reasons.values())),
        "quarantine_reasons": dict(sorted(validator.reasons.items())),
        "users": int(np.count_nonzero(validator.users.counts)),
        "items": int(np.count_nonzero(validator.items.counts)),
        "catalogue_items": int(len(vocab.catalogue_codes)),
        "vocab_sizes": {"item": vocab.items.size, "action": vocab.actions.size, **{n: v.size for n, v in vocab.categories.items()}},
        "timestamp_unit": validator.times.resolved_unit if schema.timestamp else "none",
        "events_without_timestamp": int(totals.events.untimed),
        "first_timestamp": totals.events.first_timestamp,
        "last_timestamp": totals.events.last_timestamp,
        "positives": {t: int(p) for t, p in zip(schema.tasks, totals.events.positives)},
        "label_rate": rate(totals.events.positives, totals.events.observed),
        "split": split_info.model_dump(mode="json"),
        "splits": splits,
    }
    if schema.impression_id is not None:
        stats["impressions"] = int(totals.impressions)
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
