"""Row validation: every input row ends up either as a compact event or in the quarantine file.

The checks run column-wise over a whole record batch. A row that fails several checks is filed
under the first failing reason in REASONS order, so counts are exact and add up: good rows plus
quarantined rows always equal the rows read. Nulls are not errors where the data model has a
place for them (a missing timestamp, label or category is masked downstream); values that are
present but unreadable or out of their domain are.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rotorec.features.encoding import RunningIndex, canonical_keys
from rotorec.features.errors import FeaturesError
from rotorec.features.events import MISSING_LABEL, NO_VALUE, EventColumns
from rotorec.features.localtime import MAX_OFFSET_MINUTES
from rotorec.features.reader import SourceBatch
from rotorec.features.schema import LogSchema
from rotorec.features.sequences import action_masks
from rotorec.features.textframe import MalformedLine
from rotorec.features.timestamps import NO_OFFSET, NUMBER_TEXT, TimestampParser, mask_of

REASONS = (
    "bad_encoding",  # a text line that is not UTF-8 (kept as hex)
    "malformed_row",  # a text line that is not a row: wrong number of fields, or a stray quote
    "missing_user_id",
    "missing_item_id",
    "bad_timestamp",
    "implausible_timestamp",
    "bad_tz_offset",
    "bad_label",
    "bad_probability",
    "duplicate",
)


def parse_numbers(column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values, present, readable) for a numeric-ish column of any Arrow type.

    Text cells are read only if they look like a plain decimal number, so 'NaN', 'inf' and
    'abc' are all 'present but unreadable'."""
    present = column.is_valid().to_numpy(zero_copy_only=False)
    kind = column.type
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = pc.cast(column, pa.float64()).fill_null(np.nan).to_numpy()
        return values, present, present & np.isfinite(values)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        looks_numeric = mask_of(pc.match_substring_regex(column, NUMBER_TEXT))
        values = np.full(len(column), np.nan)
        if looks_numeric.any():
            picked = pc.utf8_trim_whitespace(column.filter(pa.array(looks_numeric)))
            values[looks_numeric] = pc.cast(picked, pa.float64()).to_numpy()
        return values, present, looks_numeric & np.isfinite(values)
    return np.full(len(column), np.nan), present, np.zeros(len(column), dtype=bool)


def _text_or_keys(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Id-like values and which rows hold one (nulls and blank strings do not)."""
    column = canonical_keys(column)
    if pa.types.is_string(column.type):
        column = pc.utf8_trim_whitespace(column)
        return column, mask_of(pc.not_equal(column, ""))
    return column, column.is_valid().to_numpy(zero_copy_only=False)


def row_hashes(columns: list[np.ndarray]) -> np.ndarray:
    """64-bit hash of each row over integer/float columns.

    Each 64-bit word is folded in with xor-multiply-xorshift (a bijection of the state for a
    fixed word, so rows that differ in one word never collide), then the splitmix64 finaliser
    spreads every input bit over the whole hash."""
    rows = len(columns[0]) if columns else 0
    state = np.full(rows, 0x9E3779B97F4A7C15, dtype=np.uint64)
    if rows == 0:
        return state
    multiplier, shift = np.uint64(0xFF51AFD7ED558CCD), np.uint64(32)
    with np.errstate(over="ignore"):
        for column in columns:
            values = np.ascontiguousarray(column)
            if values.dtype.kind == "f":
                values = np.where(np.isnan(values), -1.0, values).astype(np.float64).view(np.uint64)
            for word in values.reshape(len(values), -1).T:
                state ^= word.astype(np.uint64)
                state *= multiplier
                state ^= state >> shift
        state ^= state >> np.uint64(30)
        state *= np.uint64(0xBF58476D1CE4E5B9)
        state ^= state >> np.uint64(27)
        state *= np.uint64(0x94D049BB133111EB)
        state ^= state >> np.uint64(31)
    return state


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """True for the earliest row of each distinct hash; every later one is a duplicate.

    Duplicates always share their user (the user code is hashed), so this runs per group of
    users. A 64-bit collision (a false duplicate) has probability about n^2 / 2^65 among a
    user group's n events, and such a row lands in quarantine, not lost."""
    return ~pd.Series(hashes, copy=False).duplicated(keep="first").to_numpy()


class QuarantineWriter:
    """Appends rejected rows, as text exactly as read, with the reason and where they came from.

    A text line that is not a row has no fields to show: its columns are null, `line` holds the
    line whole (in hex where it is not UTF-8) and `field` says what is wrong with it."""

    def __init__(self, path: str | Path, source_columns: list[str]) -> None:
        self.path = Path(path)
        self.source_columns = source_columns
        fields = [("reason", pa.string()), ("field", pa.string()), ("source", pa.string()), ("source_row", pa.int64())]
        fields += [(c, pa.string()) for c in source_columns]
        fields += [("line", pa.string())]
        self.schema = pa.schema(fields)
        self._writer = pq.ParquetWriter(self.path, self.schema)

    def write_lines(self, lines: tuple[MalformedLine, ...], source: str) -> None:
        rows = len(lines)
        data = {
            "reason": pa.array([line.reason for line in lines], pa.string()),
            "field": pa.array([line.detail for line in lines], pa.string()),
            "source": pa.array([source] * rows, pa.string()),
            "source_row": pa.array([line.row for line in lines], pa.int64()),
            **{name: pa.nulls(rows, pa.string()) for name in self.source_columns},
            "line": pa.array([line.text for line in lines], pa.string()),
        }
        self._writer.write_table(pa.table(data, schema=self.schema))

    def write(self, source: SourceBatch, rows: np.ndarray, reasons: np.ndarray, fields: np.ndarray) -> None:
        if len(rows) == 0:
            return
        picked = pa.array(rows)
        data = {
            "reason": pa.array(reasons.astype(str), pa.string()),
            "field": pa.array(fields.astype(str), pa.string()),
            "source": pa.array([source.source] * len(rows), pa.string()),
            "source_row": pa.array(source.source_rows(rows), pa.int64()),
        }
        for name in self.source_columns:
            data[name] = _as_text(source.batch.column(name).take(picked))
        data["line"] = pa.nulls(len(rows), pa.string())
        self._writer.write_table(pa.table(data, schema=self.schema))

    def close(self) -> None:
        self._writer.close()


def _as_text(column: pa.Array) -> pa.Array:
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())


class BatchValidator:
    """Validates and encodes record batches one after another, keeping running vocabularies."""

    def __init__(self, schema: LogSchema, quarantine: QuarantineWriter) -> None:
        self.schema = schema
        self.quarantine = quarantine
        self.users = RunningIndex()
        self.items = RunningIndex()
        self.impressions = RunningIndex()
        self._impression_kind: str | None = None
        self.categories = {name: RunningIndex() for name in schema.categorical}
        fixed = schema.fixed_offset_minutes()
        self.times = TimestampParser(
            schema.timestamp_unit, naive_offset_minutes=fixed, naive_zone=None if fixed is not None else schema.default_timezone
        )
        self.action_counts = np.zeros(1 << len(schema.tasks), dtype=np.int64)  # events per action mask
        self.reasons: Counter[str] = Counter()
        self.rows_read = 0
        self.events_kept = 0

    def validate(self, source: SourceBatch) -> EventColumns:
        if source.malformed:
            self.quarantine.write_lines(source.malformed, source.source)
            self.reasons.update(line.reason for line in source.malformed)
            self.rows_read += len(source.malformed)
        batch, n = source.batch, source.batch.num_rows
        failed = np.zeros(n, dtype=bool)
        reason = np.zeros(n, dtype=np.int8)  # index into REASONS, meaningful where failed
        fields: list[str] = [""]
        field = np.zeros(n, dtype=np.int16)  # index into `fields`

        def flag(mask: np.ndarray, why: str, column: str) -> None:
            if not mask.any():
                return
            new = mask & ~failed
            reason[new] = REASONS.index(why)
            fields.append(column)
            field[new] = len(fields) - 1
            failed[:] |= new

        schema = self.schema
        user_values, has_user = _text_or_keys(batch.column(schema.user_id))
        flag(~has_user, "missing_user_id", schema.user_id)
        item_values, has_item = _text_or_keys(batch.column(schema.item_id))
        flag(~has_item, "missing_item_id", schema.item_id)

        seconds, has_time = np.zeros(n, np.int64), np.zeros(n, bool)
        offsets = np.full(n, NO_OFFSET, np.int16)
        if schema.timestamp is not None:
            parsed = self.times.parse(batch.column(schema.timestamp))
            flag(parsed.present & ~parsed.valid, "bad_timestamp", schema.timestamp)
            plausible = (parsed.seconds >= schema.timestamp_min) & (parsed.seconds <= schema.timestamp_max)
            flag(parsed.valid & ~plausible, "implausible_timestamp", schema.timestamp)
            seconds, has_time = np.where(parsed.valid, parsed.seconds, 0), parsed.valid & plausible
            offsets = parsed.offset_minutes
        if schema.tz_offset_minutes is not None:
            values, present, readable = parse_numbers(batch.column(schema.tz_offset_minutes))
            good = readable & (np.abs(values) <= MAX_OFFSET_MINUTES) & (np.round(values) == values)
            flag(present & ~good, "bad_tz_offset", schema.tz_offset_minutes)
            offsets = np.where(present & good, np.nan_to_num(values).astype(np.int16), offsets)

        labels = np.full((n, len(schema.labels)), MISSING_LABEL, dtype=np.int8)
        for k, task in enumerate(schema.labels):
            column_name = schema.label_column(task)
            value, present, good = self._label(batch.column(column_name), task)
            flag(present & ~good, "bad_label", column_name)
            labels[:, k] = np.where(present & good, value, MISSING_LABEL)

        probabilities = np.full((n, len(schema.probabilities)), np.nan)
        for k, column_name in enumerate(schema.probabilities.values()):
            values, present, readable = parse_numbers(batch.column(column_name))
            good = readable & (values >= 0.0) & (values <= 1.0)
            flag(present & ~good, "bad_probability", column_name)
            probabilities[:, k] = np.where(good, values, np.nan)

        valid_rows = np.flatnonzero(~failed)
        keep = pa.array(valid_rows)
        events = EventColumns(
            user=self.users.encode(user_values.take(keep)),
            item=self.items.encode(item_values.take(keep)),
            seconds=seconds[valid_rows],
            has_time=has_time[valid_rows],
            offset_minutes=offsets[valid_rows],
            row=self.rows_read + valid_rows.astype(np.int64),
            **self._impressions(batch, valid_rows),
            labels=labels[valid_rows],
            probabilities=probabilities[valid_rows],
            categorical={
                name: self.encode_categorical(batch.column(schema.categorical_column(name)).take(keep), name) for name in schema.categorical
            },
        )
        self._count(events)
        bad = np.flatnonzero(failed)
        if len(bad):
            why = np.array(REASONS, dtype=object)[reason[bad]]
            self.reasons.update(why.tolist())
            self.quarantine.write(source, bad, why, np.array(fields, dtype=object)[field[bad]])
        self.rows_read += n
        self.events_kept += len(events)
        return events

    # -- column helpers ------------------------------------------------------------------

    def _label(self, column: pa.Array, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spec = self.schema.labels[task]
        values, present, readable = parse_numbers(column)
        if spec.threshold is None:
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                lowered = pc.utf8_lower(pc.utf8_trim_whitespace(column))
                is_true, is_false = mask_of(pc.equal(lowered, "true")), mask_of(pc.equal(lowered, "false"))
                values = np.where(is_true, 1.0, np.where(is_false, 0.0, values))
                readable = readable | is_true | is_false
            good = readable & ((values == 0.0) | (values == 1.0))
            return np.nan_to_num(values).astype(np.int8), present, good
        good = readable
        if spec.domain is not None:
            good = good & (values >= spec.domain[0]) & (values <= spec.domain[1])
        return (np.nan_to_num(values) >= spec.threshold).astype(np.int8), present, good

    def _impressions(self, batch: pa.RecordBatch, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Impression keys need only be consistent within a user, so integer ids are kept as
        they are (no global dictionary: an impression log has nearly one new id per slate);
        text ids get running codes. Impressions are numbered densely after ordering."""
        keys, present = np.zeros(len(rows), dtype=np.int64), np.zeros(len(rows), dtype=bool)
        if self.schema.impression_id is None:
            return {"impression": keys, "has_impression": present}
        values, present = _text_or_keys(batch.column(self.schema.impression_id).take(pa.array(rows)))
        kind = "int" if pa.types.is_integer(values.type) else "text"
        if self._impression_kind not in (None, kind):
            raise FeaturesError(f"{self.schema.impression_id}: impression ids mix integers and text across files")
        self._impression_kind = kind
        if kind == "int":
            keys = values.fill_null(0).to_numpy().astype(np.int64)
        elif present.any():
            keys[present] = self.impressions.encode(values.filter(pa.array(present)))
        return {"impression": np.where(present, keys, 0), "has_impression": present}

    def encode_categorical(self, column: pa.Array, name: str) -> np.ndarray:
        """Codes [rows, max_values] for one categorical field (also used for catalogue tables)."""
        spec = self.schema.categorical[name]
        n = len(column)
        codes = np.full((n, spec.max_values), NO_VALUE, dtype=np.int64)
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or spec.separator is not None:
            lists = column if spec.separator is None else pc.split_pattern(pc.cast(column, pa.string()), spec.separator)
            flat, present = _text_or_keys(pc.list_flatten(lists))
            parent = pc.list_parent_indices(lists).to_numpy()[present]
            flat = flat.filter(pa.array(present))
            position = np.arange(len(parent)) - np.searchsorted(parent, parent, side="left")
            fits = position < spec.max_values
            codes[parent[fits], position[fits]] = self.categories[name].encode(flat.filter(pa.array(fits)))
        else:
            values, present = _text_or_keys(column)
            if present.any():
                codes[present, 0] = self.categories[name].encode(values.filter(pa.array(present)))
        return codes

    @staticmethod
    def event_hashes(events: EventColumns) -> np.ndarray:
        """What makes two events duplicates: every encoded field (codes are fixed for the whole prepare)."""
        columns = [
            events.user,
            events.item,
            events.seconds,
            events.has_time.astype(np.int64),
            events.offset_minutes,
            events.impression,
            events.has_impression,
            events.labels,
            events.probabilities,
        ]
        columns += [events.categorical[name] for name in sorted(events.categorical)]
        return row_hashes(columns)

    def _count(self, events: EventColumns) -> None:
        self._count_codes(events.user, events.item, events.categorical, events.labels, 1)

    def _count_codes(self, user: np.ndarray, item: np.ndarray, categorical: dict[str, np.ndarray], labels: np.ndarray, sign: int) -> None:
        self.users.count(user, sign)
        self.items.count(item, sign)
        for name, codes in categorical.items():
            self.categories[name].count(codes.reshape(-1), sign)
        self.action_counts += sign * np.bincount(action_masks(labels), minlength=len(self.action_counts))

    def discount(self, user: np.ndarray, item: np.ndarray, categorical: dict[str, np.ndarray], labels: np.ndarray) -> None:
        """Take back the counts of events found to be duplicates after they were counted."""
        self._count_codes(user, item, categorical, labels, -1)
        self.events_kept -= len(user)
        self.reasons["duplicate"] += len(user)
