"""The per-group work of `rotorec prepare`: what one group of users needs and what it gives back.

Both functions read only their group's events from the spill and return plain arrays and Arrow
tables, so they run the same in the preparing process or on a worker of a distributed engine
(`features/engines.py`); the caller merges the results in group order (docs/prepare_at_scale.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rotorec.features.artifacts import shard_of_users
from rotorec.features.events import EventColumns
from rotorec.features.schema import LogSchema
from rotorec.features.sequences import OrderedEvents, action_masks, event_feature_columns, positives_and_counts, window_table
from rotorec.features.spill import CATEGORICAL_PREFIX, EventSpill
from rotorec.features.splits import (
    SPLITS,
    TemporalCutoffs,
    impression_start_seconds,
    leave_last_out_phases,
    phase_ranges,
    temporal_phases,
)
from rotorec.features.validate import first_occurrences
from rotorec.features.vocab import PAD
from rotorec.features.windows import WindowMode, plan_windows


@dataclass
class GroupDuplicates:
    """Pass 2 of one group: the repeated input rows, and their codes and labels (to take back
    from the counts the vocabularies are built from)."""

    rows: np.ndarray
    user: np.ndarray
    item: np.ndarray
    categorical: dict[str, np.ndarray]
    labels: np.ndarray


def deduplicate_group(spill: EventSpill, schema: LogSchema, users: tuple[int, int]) -> GroupDuplicates | None:
    """None for a group without duplicates, the usual case: then only its hashes are read."""
    again = ~first_occurrences(spill.read(users, ["hash"])["hash"])
    if not again.any():
        return None
    categorical = [CATEGORICAL_PREFIX + name for name in schema.categorical]
    columns = spill.read(users, ["row", "labels", "user", "item", *categorical])
    return GroupDuplicates(
        rows=columns["row"][again],
        user=columns["user"][again],
        item=columns["item"][again],
        categorical={name: columns[CATEGORICAL_PREFIX + name][again] for name in schema.categorical},
        labels=columns["labels"][again],
    )


@dataclass(frozen=True)
class IdMaps:
    """Running codes -> vocabulary ids, built once from whole-log counts and shared by every group."""

    item: np.ndarray
    categorical: dict[str, np.ndarray]
    mask_values: np.ndarray
    action: np.ndarray


@dataclass(frozen=True)
class FeaturizePlan:
    """Everything a group's featurization reads besides its events; the same for every group."""

    schema: LogSchema
    maps: IdMaps
    protocol: str
    cutoffs: TemporalCutoffs | None
    max_len: int
    windows: WindowMode
    holdout: int
    shards: int
    duplicates: np.ndarray  # sorted input rows to leave out


@dataclass
class SplitPart:
    tables: list[pa.Table]  # one per shard
    windows: int
    users: int
    targets: int
    positives: np.ndarray
    observed: np.ndarray
    cold_users: int


@dataclass
class EventTotals:
    """Counts over events that add up across groups: events, untimed ones, the time range, and
    per task the positives and observed labels (impression events only, in impression logs)."""

    events: int
    untimed: int
    first_timestamp: int | None
    last_timestamp: int | None
    positives: np.ndarray
    observed: np.ndarray

    @classmethod
    def of(cls, events: EventColumns, schema: LogSchema) -> EventTotals:
        scope = events.has_impression if schema.impression_id is not None else np.ones(len(events), bool)
        positives, observed = positives_and_counts(events.labels[scope])
        timed = events.seconds[events.has_time]
        first, last = (int(timed.min()), int(timed.max())) if len(timed) else (None, None)
        return cls(len(events), int((~events.has_time).sum()), first, last, positives, observed)

    def add(self, other: EventTotals) -> None:
        self.events += other.events
        self.untimed += other.untimed
        self.positives = self.positives + other.positives
        self.observed = self.observed + other.observed
        if other.first_timestamp is not None:
            first, last = self.first_timestamp, self.last_timestamp
            self.first_timestamp = other.first_timestamp if first is None else min(first, other.first_timestamp)
            self.last_timestamp = other.last_timestamp if last is None else max(last, other.last_timestamp)


@dataclass
class GroupFeatures:
    """Pass 3 of one group: its windows per split and shard, and its share of every total.
    Impressions are numbered from 1 within the group; the merge shifts them after the earlier
    groups' (`impressions` is how many this group has)."""

    splits: dict[str, SplitPart]
    impressions: int
    totals: EventTotals
    item_first_seen: tuple[np.ndarray, np.ndarray]  # (item ids, earliest timed second)
    item_latest: tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]  # (ids, seconds, rows, item-level values)


def featurize_group(spill: EventSpill, plan: FeaturizePlan, users: tuple[int, int], user_keys: np.ndarray) -> GroupFeatures:
    """Order, featurize, split, window one group. `user_keys` are the keys of user codes
    [users[0], users[1])."""
    schema, maps = plan.schema, plan.maps
    ordered = OrderedEvents.sort(spill.read_events(users, list(schema.categorical), plan.duplicates))
    events = ordered.events
    action_ids = maps.action[np.searchsorted(maps.mask_values, action_masks(events.labels))]
    categorical_ids = {name: map_codes(events.categorical[name], maps.categorical[name]) for name in schema.categorical}
    item_ids = maps.item[events.item]
    columns = event_feature_columns(ordered, schema, item_ids, categorical_ids, action_ids)
    impression = columns["impression"]
    if plan.protocol == "loo":
        phase = leave_last_out_phases(ordered.starts, ordered.lengths, plan.holdout)
    else:
        phase = temporal_phases(impression_start_seconds(events.seconds, impression), events.has_time, plan.cutoffs)
    keys = user_keys[events.user[ordered.starts] - users[0]]
    user_shards = shard_of_users(keys, plan.shards)
    splits: dict[str, SplitPart] = {}
    targets_by_split: dict[str, np.ndarray] = {}
    for split, wanted in SPLITS.items():
        ranges = phase_ranges(phase, ordered.starts, ordered.lengths, wanted)
        mode: WindowMode = plan.windows if split == "train" else "all"
        windows = plan_windows(ordered.starts, ranges, plan.max_len, mode)
        table = window_table(windows, columns, keys)
        if plan.shards == 1:
            tables = [table]
        else:
            window_shards = user_shards[windows.user]
            tables = [table.filter(pa.array(window_shards == shard)) for shard in range(plan.shards)]
        index, _, target = windows.flat_index()
        targets_by_split[split] = index[target]
        positives, observed = positives_and_counts(events.labels[targets_by_split[split]])
        splits[split] = SplitPart(
            tables=tables,
            windows=len(windows),
            users=int(np.count_nonzero(np.diff(windows.user)) + 1) if len(windows) else 0,
            targets=len(targets_by_split[split]),
            positives=positives,
            observed=observed,
            cold_users=0,
        )
    if plan.protocol == "temporal":
        trained = np.unique(events.user[targets_by_split["train"]])
        for split in ("valid", "test"):
            split_users = np.unique(events.user[targets_by_split[split]])
            splits[split].cold_users = int(np.count_nonzero(~np.isin(split_users, trained)))
    return GroupFeatures(
        splits=splits,
        impressions=int(impression.max()) if len(impression) else 0,
        totals=EventTotals.of(events, schema),
        **_per_item(item_ids, events, categorical_ids, schema),
    )


def map_codes(codes: np.ndarray, code_to_id: np.ndarray) -> np.ndarray:
    """Running codes -> vocabulary ids; 'no value' (-1) -> PAD (also when a field never had a value)."""
    if len(code_to_id) == 0:
        return np.full(codes.shape, PAD, dtype=np.int64)
    return np.where(codes >= 0, code_to_id[np.maximum(codes, 0)], PAD)


def distinct_with_slots(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(ids, return_inverse=True)` for non-negative ids. Vocabulary ids are dense, so
    unless their range far exceeds the group, counting replaces the sort: np.unique's inverse
    was a third of the featurizing time at 10M events."""
    if len(ids) == 0 or int(ids.max()) >= 4 * len(ids) + 4096:
        return np.unique(ids, return_inverse=True)
    present = np.bincount(ids) > 0
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present).astype(ids.dtype, copy=False), rank[ids]


def _per_item(item_ids: np.ndarray, events: EventColumns, categorical_ids: dict[str, np.ndarray], schema: LogSchema) -> dict:
    """Each item's earliest timed second in the group, and its latest event (by time, then input
    row) with the item-level values, from one pass over the group's distinct item ids."""
    ids, slot = distinct_with_slots(item_ids)
    earliest = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)  # stays at max: never timed
    np.minimum.at(earliest, slot[events.has_time], events.seconds[events.has_time])
    item_level = [name for name, spec in schema.categorical.items() if spec.level == "item"]
    if not item_level or len(item_ids) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return {"item_first_seen": (ids, earliest), "item_latest": (empty, empty, empty, {})}
    newest = np.full(len(ids), -1, dtype=np.int64)
    np.maximum.at(newest, slot, events.seconds)
    at_newest = np.flatnonzero(events.seconds == newest[slot])
    last_row = np.full(len(ids), -1, dtype=np.int64)
    np.maximum.at(last_row, slot[at_newest], events.row[at_newest])
    winners = at_newest[events.row[at_newest] == last_row[slot[at_newest]]]  # one per item: rows are unique
    values = {name: categorical_ids[name][winners] for name in item_level}
    return {"item_first_seen": (ids, earliest), "item_latest": (item_ids[winners], events.seconds[winners], events.row[winners], values)}
