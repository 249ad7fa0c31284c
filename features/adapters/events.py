"""The canonical event log: Parquet or CSV/TSV files described by a LogSchema.

A folder written by `rotorec synth` carries its own `schema.yaml`, so it needs no flags; any
other log names its columns with `--labels`/`--categorical` or a YAML schema file.
"""

from __future__ import annotations

from pathlib import Path

from rotorec.features.reader import DEFAULT_BATCH_ROWS, LogFiles
from rotorec.features.schema import LogSchema
from rotorec.features.source import LogSource

SCHEMA_FILE = "schema.yaml"


def find_schema(path: Path) -> Path | None:
    """A schema.yaml in the log's folder (or beside a single log file), if there is one."""
    folder = path if path.is_dir() else path.parent
    candidate = folder / SCHEMA_FILE
    return candidate if candidate.is_file() else None


def events_source(path: str | Path, schema: LogSchema | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> LogSource:
    root = Path(path)
    files = LogFiles.discover(root)
    if schema is None:
        found = find_schema(root)
        schema = LogSchema.from_yaml(found) if found else LogSchema()
    columns = schema.source_columns()
    return LogSource(
        format="events",
        schema=schema,
        batches=lambda: files.iter_batches(columns, batch_rows),
        inputs=[str(p) for p in files.paths],
        total_rows=files.row_count(),
    )
