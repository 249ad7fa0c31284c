"""Streaming record batches out of Parquet and CSV/TSV logs.

Logs are read batch by batch so a log larger than memory streams through: only the compact
per-event columns that featurization keeps ever accumulate. CSV cells are read as text, and each
column is parsed by the validator, so a bad cell becomes a quarantined row instead of a reader
crash halfway through a file; a line with the wrong number of fields is set aside whole and
quarantined the same way. Failures to read the file at all become LogReadError with the
file's name and the problem in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.errors import LogReadError

DEFAULT_BATCH_ROWS = 1 << 20
MAX_PENDING_MALFORMED = 100_000
"""Malformed text lines held while no well-formed row follows them: a wrong delimiter or header
makes every line malformed, and holding a whole large file of them would exhaust memory, so
past this the file is refused with one line instead."""
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")


@dataclass(frozen=True)
class MalformedLine:
    """A text-log line that does not split into the header's fields, kept whole for the quarantine."""

    text: str
    fields: int
    expected: int


@dataclass(frozen=True)
class SourceBatch:
    """A record batch plus where its rows came from, so quarantined rows can be traced back.

    `malformed` carries text lines set aside by the parser since the previous batch (it reads
    ahead, so they may come from a later stretch of the file; every one is delivered once). For a
    text log that has any, `first_row` counts well-formed rows only: the parser does not report
    line numbers."""

    batch: pa.RecordBatch
    source: str
    first_row: int
    malformed: tuple[MalformedLine, ...] = ()


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
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise LogReadError(path, f"not a readable Parquet file ({_first_line(exc)})") from exc


def _check_columns(path: Path, available: list[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        shown = ", ".join(available[:12]) + (" …" if len(available) > 12 else "")
        raise LogReadError(path, f"missing column(s) {', '.join(map(repr, missing))} (found: {shown})")


def _iter_parquet(path: Path, columns: list[str], batch_rows: int) -> Iterator[SourceBatch]:
    handle = _parquet_file(path)
    _check_columns(path, handle.schema_arrow.names, columns)
    first = 0
    try:
        for batch in handle.iter_batches(batch_size=batch_rows, columns=columns):
            yield SourceBatch(batch, path.name, first)
            first += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise LogReadError(path, f"corrupt Parquet data after row {first} ({_first_line(exc)})") from exc


def _text_options(path: Path, on_malformed: Callable[[pacsv.InvalidRow], str]
                  ) -> tuple[pacsv.ParseOptions, pacsv.ReadOptions]:
    delimiter = "\t" if ".tsv" in path.name.lower() else ","
    return (pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_malformed),
            pacsv.ReadOptions(block_size=16 << 20))


def _skip(_: pacsv.InvalidRow) -> str:
    return "skip"


@contextmanager
def _decode_failures_noted(handler: Callable[[pacsv.InvalidRow], str], problems: list[str]) -> Iterator[None]:
    """Arrow decodes a malformed line to text before it calls `handler`; on bytes that are not
    UTF-8 it reports the UnicodeDecodeError through sys.unraisablehook (a stray traceback on
    stderr) and then fails the parse. That report becomes a note in `problems`, for the one-line
    LogReadError; every other report goes to the previous hook."""
    previous = sys.unraisablehook

    def hook(report: sys.UnraisableHookArgs) -> None:
        if report.object is handler and isinstance(report.exc_value, UnicodeDecodeError):
            problems.append("a line with the wrong number of fields is not UTF-8 text either")
        else:
            previous(report)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        if sys.unraisablehook is hook:  # left alone if someone installed another hook meanwhile
            sys.unraisablehook = previous


def read_text_header(path: Path) -> list[str]:
    parse, read = _text_options(path, _skip)
    problems: list[str] = []
    try:
        with _decode_failures_noted(_skip, problems), pacsv.open_csv(path, parse_options=parse, read_options=read) as probe:
            names = probe.schema.names
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise LogReadError(path, f"not a readable CSV/TSV log ({problems[0] if problems else _first_line(exc)})") from exc
    if not names or any("\x00" in n for n in names):
        raise LogReadError(path, "not a readable CSV/TSV log (no text header)")
    return names


def _iter_text(path: Path, columns: list[str], batch_rows: int) -> Iterator[SourceBatch]:
    names = read_text_header(path)
    _check_columns(path, names, columns)
    malformed: list[MalformedLine] = []
    problems: list[str] = []

    def set_aside(row: pacsv.InvalidRow) -> str:  # may run on Arrow's parser threads; append is atomic
        if len(malformed) >= MAX_PENDING_MALFORMED:
            problems.append(f"{MAX_PENDING_MALFORMED:,} lines in a row do not have the header's "
                            f"{row.expected_columns} fields (wrong delimiter or header?)")
            return "error"
        malformed.append(MalformedLine(row.text, row.actual_columns, row.expected_columns))
        return "skip"

    parse, read = _text_options(path, set_aside)
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in names},
        include_columns=columns,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    first = 0
    try:
        with (_decode_failures_noted(set_aside, problems),
              pacsv.open_csv(path, parse_options=parse, read_options=read, convert_options=convert) as reader):
            for batch in reader:
                for start in range(0, batch.num_rows, batch_rows):
                    piece = batch.slice(start, batch_rows)
                    yield SourceBatch(piece, path.name, first, _take_all(malformed))
                    first += piece.num_rows
            if malformed:  # lines after the last well-formed row, or a file without one
                yield SourceBatch(pa.RecordBatch.from_pylist([], schema=reader.schema), path.name, first,
                                  _take_all(malformed))
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        problem = problems[0] if problems else _first_line(exc)
        raise LogReadError(path, f"unreadable CSV/TSV data after row {first} ({problem})") from exc


def _take_all(lines: list[MalformedLine]) -> tuple[MalformedLine, ...]:
    """Empty the list into a tuple; lines the parser appends meanwhile stay for the next batch."""
    taken = tuple(lines)
    del lines[: len(taken)]
    return taken


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """The gist of a library error, safe to print on one terminal line."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
