"""From validated events to per-user ordered sequences with their per-event features.

Order within a user is (has timestamp, timestamp, input row): events without a time come first
in file order (MIND history clicks, Amazon's order-only sequences), and ties in time keep their
input order, so the same log always yields the same sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rotorec.features.events import MISSING_LABEL, EventColumns
from rotorec.features.localtime import cyclic_features, resolve_offsets
from rotorec.features.schema import LogSchema
from rotorec.features.windows import Windows


@dataclass
class OrderedEvents:
    """Events sorted by user then time; `starts`/`lengths` delimit each user's run."""

    events: EventColumns
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def sort(cls, events: EventColumns) -> OrderedEvents:
        """Events must arrive in input-row order, or grouped by user with each user's events in
        input-row order (as prepare reads a group back); stable sorts then break every tie by row.

        Most logs are written in time order, in which case one stable sort by user suffices."""
        user_steps, row_steps = np.diff(events.user), np.diff(events.row)
        grouped = bool(np.all(user_steps >= 0))
        if np.any(row_steps < 0) and not (grouped and np.all(row_steps[user_steps == 0] > 0)):
            raise ValueError("events must be in input-row order (or grouped by user, each user's in input-row order)")
        timed, owner = events.seconds[events.has_time], events.user[events.has_time]
        # In time order: overall, or (grouped input) within each user.
        in_time_order = np.all((timed[1:] >= timed[:-1]) | (grouped & (owner[1:] != owner[:-1])))
        if len(timed) < 2 or in_time_order:
            key = events.user * 2 + events.has_time
            # A group read back from prepare's spill is usually in this order already: no copy then.
            ordered = events if np.all(key[1:] >= key[:-1]) else events.take(np.argsort(key, kind="stable"))
        else:
            ordered = events.take(np.lexsort((events.seconds, events.has_time, events.user)))
        if len(ordered) == 0:
            return cls(ordered, np.zeros(0, np.int64), np.zeros(0, np.int64))
        boundary = np.flatnonzero(np.diff(ordered.user)) + 1
        starts = np.concatenate([[0], boundary]).astype(np.int64)
        lengths = np.diff(np.concatenate([starts, [len(ordered)]])).astype(np.int64)
        return cls(ordered, starts, lengths)


def impression_index(ordered: OrderedEvents) -> np.ndarray:
    """Dense impression numbers of ordered events (see `number_impressions`)."""
    events = ordered.events
    return number_impressions(events.user, events.impression, events.has_impression)


def number_impressions(user: np.ndarray, key: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Dense impression numbers 1..N in order of first appearance (0 = no impression), for events
    grouped by user and in time order; only equality of the int64 keys matters. The service numbers
    a request's history with it, so a served impression reads as a prepared one.

    A user's events of one impression are usually adjacent once ordered, so runs of equal keys
    are found in one pass; runs of the same (user, key) that are not adjacent (interleaved
    impressions) are then merged by sorting the runs, which are far fewer than the events."""
    starts = has.copy()
    continues = (user[1:] == user[:-1]) & has[:-1] & (key[1:] == key[:-1])
    starts[1:] &= ~continues
    run_of_event = np.cumsum(starts) - 1
    first_rows = np.flatnonzero(starts)
    run_keys, run_users = key[first_rows], user[first_rows]
    if np.all((run_keys[1:] > run_keys[:-1]) | (run_users[1:] != run_users[:-1])):
        # Each user's impression ids only grow along time (the usual case): no run repeats a key.
        return np.where(has, run_of_event + 1, 0)
    order = np.lexsort((np.arange(len(first_rows)), key[first_rows], user[first_rows]))
    same_as_prior = np.zeros(len(order), dtype=bool)
    same_as_prior[1:] = (user[first_rows][order][1:] == user[first_rows][order][:-1]) & (
        key[first_rows][order][1:] == key[first_rows][order][:-1]
    )
    group_start = order[np.maximum.accumulate(np.where(~same_as_prior, np.arange(len(order)), 0))]
    canonical = np.empty(len(order), dtype=np.int64)
    canonical[order] = group_start
    dense = np.cumsum(canonical == np.arange(len(order)))
    return np.where(has, dense[canonical][np.maximum(run_of_event, 0)] if len(order) else 0, 0)


def action_masks(labels: np.ndarray) -> np.ndarray:
    """An event's action as a bit mask of its positive labels (bit k = task k is 1)."""
    masks = np.zeros(len(labels), dtype=np.int64)
    for k in range(labels.shape[1]):  # column by column: a reduction over axis 1 is several times slower
        masks |= (labels[:, k] == 1).astype(np.int64) << k
    return masks


def action_name(mask: int, tasks: list[str]) -> str:
    """'none' for no positive label, else the positive tasks joined by '+' in task order."""
    positive = [task for k, task in enumerate(tasks) if mask >> k & 1]
    return "+".join(positive) if positive else "none"


def event_feature_columns(
    ordered: OrderedEvents,
    schema: LogSchema,
    item_ids: np.ndarray,
    categorical_ids: dict[str, np.ndarray],
    action_ids: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every per-event column stored in the sequence files, aligned with `ordered.events`."""
    events = ordered.events
    offsets = resolve_offsets(
        events.seconds, events.has_time, events.offset_minutes, schema.fixed_offset_minutes(), schema.default_timezone
    )
    second_of_day, day_of_week = cyclic_features(events.seconds, offsets, events.has_time)
    columns: dict[str, np.ndarray] = {"item": item_ids.astype(np.int32)}
    for name, ids in categorical_ids.items():
        columns[f"cat_{name}"] = ids.astype(np.int32)
    for k, task in enumerate(schema.labels):
        columns[f"label_{task}"] = events.labels[:, k]
    for k, task in enumerate(schema.probabilities):
        columns[f"prob_{task}"] = events.probabilities[:, k]
    columns.update(
        timestamp=events.seconds,
        has_time=events.has_time,
        tz_offset_minutes=offsets,
        second_of_day=second_of_day,
        day_of_week=day_of_week,
        impression=impression_index(ordered),
        action=action_ids.astype(np.int32),
        row=events.row,
    )
    return columns


def window_table(windows: Windows, columns: dict[str, np.ndarray], user_keys: np.ndarray) -> pa.Table:
    """One row per window; every per-event column becomes a list column (2-D ones flattened)."""
    index, offsets, target = windows.flat_index()
    list_offsets = pa.array(offsets, pa.int32() if offsets[-1] < 2**31 else pa.int64())
    make_list = pa.ListArray if list_offsets.type == pa.int32() else pa.LargeListArray
    data: dict[str, pa.Array] = {
        "user": pa.array(user_keys[windows.user].astype(str), pa.string()),
        "length": pa.array(windows.length, pa.int32()),
    }
    for name, values in columns.items():
        picked = values[index]
        width = picked.shape[1] if picked.ndim == 2 else 1
        data[name] = make_list.from_arrays(pa.array(offsets * width, list_offsets.type), pa.array(picked.reshape(-1)))
    data["target"] = make_list.from_arrays(list_offsets, pa.array(target))
    return pa.table(data)


def positives_and_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per task: (# positive, # observed) over rows of a label matrix."""
    # Column by column: a reduction over axis 0 of an [events, tasks] array is several times slower.
    positives = np.array([np.count_nonzero(labels[:, k] == 1) for k in range(labels.shape[1])], dtype=np.int64)
    observed = np.array([np.count_nonzero(labels[:, k] != MISSING_LABEL) for k in range(labels.shape[1])], dtype=np.int64)
    return positives, observed
