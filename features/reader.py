"""Streaming record batches out of Parquet and CSV/TSV logs.

Logs are read batch by batch so a log larger than memory streams through: only the compact
per-event columns that featurization keeps ever accumulate. CSV cells are read as text
(features.textlog), and each column is parsed by the validator, so a bad cell becomes a
quarantined row instead of a reader crash halfway through a file; a line that is not a row
(wrong number of fields, a stray quote, not UTF-8) is set aside whole and quarantined the same
way. Failures to read the file at all become LogReadError with the file's name and the problem
in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rotorec.features.errors import LogReadError, first_line
from rotorec.features.textframe import MalformedLine
from rotorec.features.textlog import check_columns, read_text_log

DEFAULT_BATCH_ROWS = 1 << 20
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")


@dataclass(frozen=True)
class SourceBatch:
    """A record batch plus where its rows came from, so quarantined rows can be traced back.

    `malformed` carries the text lines set aside while this batch was read. For a text log
    `rows` gives each row's data-row number in its file (physical line number − 2; the lines
    set aside and blank lines take their own numbers in between); elsewhere row k of the batch
    is data row `first_row + k`."""

    batch: pa.RecordBatch
    source: str
    first_row: int
    malformed: tuple[MalformedLine, ...] = ()
    rows: np.ndarray | None = None

    def source_rows(self, picked: np.ndarray) -> np.ndarray:
        """Data-row numbers in the source file of the batch rows `picked`."""
        return self.first_row + picked if self.rows is None else self.rows[picked]


@dataclass
class LogFiles:
    """The data files of one log: a single file or every Parquet/CSV file in a folder."""

    paths: list[Path]

    @classmethod
    def discover(cls, path: str | Path) -> LogFiles:
        root = Path(path)
        if not root.exists():
            raise LogReadError(root, "no such file or directory")
        if root.is_file():
            return cls([root])
        found = sorted(p for p in root.iterdir() if p.is_file() and _is_log_file(p))
        if not found:
            raise LogReadError(root, "folder holds no .parquet/.csv/.tsv log files")
        return cls(found)

    def row_count(self) -> int | None:
        """Total rows when cheap to know (Parquet footers); None for text files."""
        total = 0
        for path in self.paths:
            if not _is_parquet(path):
                return None
            total += _parquet_file(path).metadata.num_rows
        return total

    def iter_batches(self, columns: list[str], batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[SourceBatch]:
        for path in self.paths:
            reader = _iter_parquet if _is_parquet(path) else _iter_text
            yield from reader(path, columns, batch_rows)


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(PARQUET_SUFFIXES)


def _is_log_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(PARQUET_SUFFIXES) or name.endswith(TEXT_SUFFIXES)


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        # pre_buffer keeps every row group it has read buffered until the file is closed (about
        # 10 MB per million rows here): memory would grow with the log, and local reads gain nothing.
        return pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        raise LogReadError(path, f"not a readable Parquet file ({first_line(exc)})") from exc


def _iter_parquet(path: Path, columns: list[str], batch_rows: int) -> Iterator[SourceBatch]:
    handle = _parquet_file(path)
    check_columns(path, handle.schema_arrow.names, columns)
    first = 0
    try:
        for batch in handle.iter_batches(batch_size=batch_rows, columns=columns):
            yield SourceBatch(batch, path.name, first)
            first += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise LogReadError(path, f"corrupt Parquet data after row {first} ({first_line(exc)})") from exc


def _iter_text(path: Path, columns: list[str], batch_rows: int) -> Iterator[SourceBatch]:
    for read in read_text_log(path, columns, batch_rows):
        first = int(read.rows[0]) if len(read.rows) else read.set_aside[0].row
        yield SourceBatch(read.batch, path.name, first, read.set_aside, read.rows)
