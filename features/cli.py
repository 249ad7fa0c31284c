"""`rotorec synth` and `rotorec prepare`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from rotorec.features.adapters import ADAPTERS, adapter
from rotorec.features.errors import FeaturesError
from rotorec.features.prepare import PrepareOptions, prepare
from rotorec.features.schema import LogSchema
from rotorec.features.strict import first_validation_error


def register(commands: argparse._SubParsersAction) -> None:
    _register_synth(commands)
    _register_prepare(commands)


def _register_synth(commands: argparse._SubParsersAction) -> None:
    from rotorec.features.synth.config import PRESETS

    p = commands.add_parser(
        "synth",
        help="write the synthetic feed (the embedded default dataset)",
        description="Simulate a feed with known click/like/dwell probabilities (docs/synthetic_feed.md).",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for events.parquet, schema.yaml, manifest.json")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--users", type=int, help="override the preset's number of users")
    p.add_argument("--items", type=int, help="override the preset's number of items")
    p.add_argument("--days", type=int, help="override the preset's number of days")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeless", action="store_true", help="no rhythm and no recency effect (negative control)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_run_synth)


def _checked(build, what: str):
    """Build a pydantic object from command-line values, turning a bad value into one line."""
    try:
        return build()
    except ValidationError as exc:
        where, message = first_validation_error(exc)
        raise FeaturesError(f"{what}: --{where.replace('_', '-')}: {message}") from exc


def _run_synth(args: argparse.Namespace) -> int:
    from rotorec.features.synth.config import SynthConfig
    from rotorec.features.synth.writer import write_feed

    config = _checked(
        lambda: SynthConfig.from_preset(
            args.preset, users=args.users, items=args.items, days=args.days, seed=args.seed, timeless=args.timeless
        ),
        "synth",
    )
    manifest = write_feed(config, args.out, progress=not args.no_progress)
    print(json.dumps({"out": str(args.out), "rows": manifest["rows"], "oracle_ne": manifest["oracle_ne"]}, indent=2))
    return 0


def _register_prepare(commands: argparse._SubParsersAction) -> None:
    defaults = PrepareOptions()
    p = commands.add_parser(
        "prepare",
        help="validate a log and write split, featurized sequences",
        description="Event log -> validated, featurized, split user sequences.",
    )
    p.add_argument("--format", choices=sorted(ADAPTERS), default="events")
    p.add_argument("--input", required=True, type=Path, help="log file or folder")
    p.add_argument("--out", required=True, type=Path)
    schema = p.add_argument_group("log schema (format 'events'; default: schema.yaml beside the log)")
    schema.add_argument("--schema", type=Path, help="YAML log schema")
    schema.add_argument("--labels", help="label columns: 'click,like' or 'like=rating>=4'")
    schema.add_argument("--categorical", help="categorical columns: 'category,surface'")
    schema.add_argument("--user-column", help="column holding the user id (default user_id)")
    schema.add_argument("--item-column", help="column holding the item id (default item_id)")
    schema.add_argument("--timestamp-column", help="column holding the time (default timestamp)")
    schema.add_argument("--impression-column", help="column grouping events into impressions")
    schema.add_argument("--tz-offset-column", help="per-event UTC offset in minutes")
    schema.add_argument("--timestamp-unit", choices=["auto", "s", "ms", "us", "ns", "iso"])
    schema.add_argument("--default-timezone", help="'UTC', '+05:30' or an IANA zone like 'Europe/Berlin'")
    seq = p.add_argument_group("sequences and splits")
    seq.add_argument("--max-len", type=int, default=defaults.max_len)
    seq.add_argument(
        "--split",
        choices=["auto", "loo", "temporal"],
        default=defaults.split,
        help="auto: temporal for impression logs, leave-last-out otherwise",
    )
    seq.add_argument("--holdout", type=int, default=defaults.holdout, help="leave-last-out: events per held-out split")
    seq.add_argument("--valid-days", type=int, default=defaults.valid_days)
    seq.add_argument("--test-days", type=int, default=defaults.test_days)
    seq.add_argument("--windows", choices=["recent", "all"], default=defaults.windows)
    seq.add_argument("--min-count", type=int, default=defaults.min_count)
    p.add_argument(
        "--shards",
        type=int,
        default=defaults.shards,
        help="write each split as N files by a hash of the user (torchrun ranks then read only their own)",
    )
    engine = p.add_argument_group("engines (docs/prepare_at_scale.md)")
    engine.add_argument(
        "--engine",
        choices=["local", "dask"],
        default=defaults.engine,
        help="where the per-user-group passes run: this process, or Dask workers",
    )
    engine.add_argument("--engine-address", help="Dask scheduler (tcp://host:8786); default: a local cluster")
    engine.add_argument("--engine-workers", type=int, default=defaults.engine_workers, help="processes of the local Dask cluster")
    engine.add_argument(
        "--threads",
        type=int,
        default=defaults.threads,
        help="local engine: threads that read ahead, write the spill, featurize groups and encode files beside the main one",
    )
    p.add_argument(
        "--group-events",
        type=int,
        default=defaults.group_events,
        help="events featurized at once: bounds memory whatever the log's size (users are never split)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_run_prepare)


def _schema_from_args(args: argparse.Namespace) -> LogSchema | None:
    """The schema file (--schema, else a schema.yaml beside the log) with the flags applied on top:
    column flags replace, --labels/--categorical add or replace entries."""
    from rotorec.features.adapters.events import find_schema

    overrides = {
        "user_id": args.user_column,
        "item_id": args.item_column,
        "timestamp": args.timestamp_column,
        "impression_id": args.impression_column,
        "tz_offset_minutes": args.tz_offset_column,
        "timestamp_unit": args.timestamp_unit,
        "default_timezone": args.default_timezone,
    }
    flags_given = bool(args.labels or args.categorical or any(v is not None for v in overrides.values()))
    schema_file = args.schema or (find_schema(args.input) if args.format == "events" and args.input.exists() else None)
    if schema_file is None:
        return LogSchema.from_flags(args.labels, args.categorical, **overrides) if flags_given else None
    base = LogSchema.from_yaml(schema_file).model_dump(mode="json", exclude_defaults=True)
    if not flags_given:
        return LogSchema.from_mapping(base, origin=str(schema_file))
    from_flags = LogSchema.from_flags(args.labels, args.categorical).model_dump(mode="json", exclude_defaults=True)
    base.update({k: v for k, v in overrides.items() if v is not None})
    for section in ("labels", "categorical"):
        base[section] = {**base.get(section, {}), **from_flags.get(section, {})}
    return LogSchema.from_mapping(base, origin=str(schema_file))


def _run_prepare(args: argparse.Namespace) -> int:
    options = _checked(
        lambda: PrepareOptions(
            max_len=args.max_len,
            split=args.split,
            holdout=args.holdout,
            valid_days=args.valid_days,
            test_days=args.test_days,
            windows=args.windows,
            min_count=args.min_count,
            group_events=args.group_events,
            shards=args.shards,
            engine=args.engine,
            engine_address=args.engine_address,
            engine_workers=args.engine_workers,
            threads=args.threads,
            progress=not args.no_progress,
        ),
        "prepare",
    )
    schema = _schema_from_args(args)
    build = adapter(args.format)
    if args.format != "events" and schema is not None:
        raise FeaturesError(f"--format {args.format} defines its own columns; schema flags apply to --format events")
    source = build(args.input, schema) if args.format == "events" else build(args.input)
    stats = prepare(source, args.out, options)
    summary = {k: stats[k] for k in ("users", "items", "events", "quarantined", "quarantine_reasons")}
    summary.update({k: stats[k] for k in ("impressions",) if k in stats})
    summary["positives"] = stats["positives"]
    print(json.dumps({"out": str(args.out), **summary}, indent=2))
    return 0
