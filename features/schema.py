"""The log schema: which columns of an event log mean what.

One schema object describes a canonical event log whatever its origin: `rotorec synth` writes it
as YAML beside the log, `--labels`/`--categorical` flags build it on the command line, and the
format adapters (MovieLens, MIND, Amazon) construct it in code. Everything downstream reads only
this object, so a new source format never needs changes past its adapter.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from rotorec.features.errors import SchemaError
from rotorec.features.strict import StrictModel, first_validation_error

TimestampUnit = Literal["auto", "s", "ms", "us", "ns", "iso"]
CategoricalLevel = Literal["item", "event"]

_FIXED_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{2}):?(\d{2})$")
_LABEL_FLAG = re.compile(r"^(?P<name>\w+)(?:=(?P<column>[^>]+)>=(?P<threshold>[-+0-9.eE]+))?$")


def _epoch_seconds(value: int | str | dt.date) -> int:
    """Accept plausibility bounds as Unix seconds or as an ISO date/datetime (UTC if naive);
    YAML hands unquoted dates over as date/datetime objects."""
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not Unix seconds or an ISO date") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp())


class LabelSpec(StrictModel):
    """A task label. Binary columns are used as they are; numeric ones through a threshold."""

    column: str | None = Field(None, description="source column; defaults to the label's name")
    threshold: float | None = Field(None, description="label = 1[value >= threshold]")
    domain: tuple[float, float] | None = Field(None, description="inclusive range of valid raw values for a thresholded label")

    @model_validator(mode="after")
    def _domain_needs_threshold(self) -> LabelSpec:
        if self.domain is not None:
            if self.threshold is None:
                raise ValueError("'domain' only applies to a label with a 'threshold'")
            if self.domain[0] > self.domain[1]:
                raise ValueError(f"domain {self.domain} is empty")
        return self


class CategoricalSpec(StrictModel):
    """A categorical field. Multi-valued fields (genres, attributes) keep up to `max_values`."""

    column: str | None = Field(None, description="source column; defaults to the field's name")
    separator: str | None = Field(None, description="splits a string cell into several values (max_values then defaults to 8)")
    max_values: int = Field(1, ge=1, le=64, description="values kept per event, in cell order")
    level: CategoricalLevel = Field(
        "item",
        description="'item': a property of the item, also stored in the item table for "
        "candidates; 'event': a property of the event only (surface, slot, action type)",
    )

    @model_validator(mode="after")
    def _multi_needs_room(self) -> CategoricalSpec:
        if self.separator is not None and self.max_values < 2:
            self.max_values = 8
        return self


class LogSchema(StrictModel):
    """How to read one event log. Unknown keys are rejected so a typo never goes unnoticed."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str | None = "timestamp"
    impression_id: str | None = None
    tz_offset_minutes: str | None = None
    timestamp_unit: TimestampUnit = "auto"
    default_timezone: str = Field(
        "UTC",
        description="local time for events without a per-event offset: 'UTC', '+05:30' or an "
        "IANA zone such as 'Europe/Berlin' (daylight saving time is then applied per event)",
    )
    timestamp_min: int = Field(_epoch_seconds("1990-01-01"), description="earliest plausible event time (Unix s)")
    timestamp_max: int = Field(_epoch_seconds("2100-01-01"), description="latest plausible event time (Unix s)")
    labels: dict[str, LabelSpec] = Field(default_factory=dict)
    categorical: dict[str, CategoricalSpec] = Field(default_factory=dict)
    probabilities: dict[str, str] = Field(
        default_factory=dict,
        description="task -> column holding the label's true probability (synthetic data)",
    )

    @field_validator("timestamp_min", "timestamp_max", mode="before")
    @classmethod
    def _bound_to_seconds(cls, value: int | str | dt.date) -> int:
        return _epoch_seconds(value)

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value.upper() == "UTC" or _FIXED_OFFSET.match(value):
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LogSchema:
        for task in self.probabilities:
            if task not in self.labels:
                raise ValueError(f"probability column given for {task!r}, which is not a label")
        for name in list(self.labels) + list(self.categorical):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a valid label/field name (letters, digits, _)")
        clash = set(self.labels) & set(self.categorical)
        if clash:
            raise ValueError(f"{sorted(clash)} declared both as label and as categorical")
        if self.timestamp_min >= self.timestamp_max:
            raise ValueError("timestamp_min must be before timestamp_max")
        return self

    def label_column(self, task: str) -> str:
        return self.labels[task].column or task

    def categorical_column(self, field: str) -> str:
        return self.categorical[field].column or field

    @property
    def tasks(self) -> list[str]:
        return list(self.labels)

    def source_columns(self) -> list[str]:
        """Every column the log must provide, in a stable order, without repeats."""
        wanted = [self.user_id, self.item_id, self.timestamp, self.impression_id, self.tz_offset_minutes]
        wanted += [self.label_column(t) for t in self.labels]
        wanted += [self.categorical_column(f) for f in self.categorical]
        wanted += list(self.probabilities.values())
        return list(dict.fromkeys(c for c in wanted if c is not None))

    def fixed_offset_minutes(self) -> int | None:
        """The default zone's offset if it is fixed (UTC or ±HH:MM); None for IANA zones."""
        if self.default_timezone.upper() == "UTC":
            return 0
        match = _FIXED_OFFSET.match(self.default_timezone)
        if match is None:
            return None
        sign = -1 if match.group(1) == "-" else 1
        return sign * (int(match.group(2)) * 60 + int(match.group(3)))

    # -- persistence -------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> LogSchema:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SchemaError(f"{path}: cannot read schema: {exc}".splitlines()[0]) from exc
        return cls.from_mapping(raw or {}, origin=str(path))

    @classmethod
    def from_mapping(cls, raw: dict, origin: str = "schema") -> LogSchema:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            where, message = first_validation_error(exc)
            raise SchemaError(f"{origin}: {where or '<root>'}: {message}") from exc

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(
            yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False),
            encoding="utf-8",
        )

    @classmethod
    def from_flags(
        cls,
        labels: str | None = None,
        categorical: str | None = None,
        **overrides: object,
    ) -> LogSchema:
        """Build a schema from `--labels click,like=rating>=4 --categorical genre,surface`."""
        raw: dict = {k: v for k, v in overrides.items() if v is not None}
        raw["labels"] = {}
        for token in filter(None, (t.strip() for t in (labels or "").split(","))):
            match = _LABEL_FLAG.match(token)
            if match is None:
                raise SchemaError(f"--labels: cannot read {token!r} (use name or name=column>=threshold)")
            spec: dict = {}
            if match.group("column"):
                try:
                    threshold = float(match.group("threshold"))
                except ValueError as exc:
                    raise SchemaError(f"--labels: {match.group('threshold')!r} in {token!r} is not a number") from exc
                spec = {"column": match.group("column").strip(), "threshold": threshold}
            raw["labels"][match.group("name")] = spec
        raw["categorical"] = {name: {} for name in filter(None, (t.strip() for t in (categorical or "").split(",")))}
        return cls.from_mapping(raw, origin="command line")
