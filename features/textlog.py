"""Reading a CSV/TSV event log block by block, with every row traced to its line.

The file is cut into blocks of whole lines and Arrow parses each block in C++. The Python side
only checks that Arrow's reading of a block matches its lines: the block is UTF-8, and Arrow
found one record per non-blank line (fewer means a quoted value ran across a line break). A
block that fails either check is re-framed line by line (features.textframe), which sets the
lines that cannot be rows aside, and is parsed again. So an unterminated quote or a line of
Latin-1 costs its own line and never the lines after it, while a clean block pays for a few byte
scans rather than a Python loop over its lines.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from rotorec.features.errors import LogReadError, first_line
from rotorec.features.textframe import Lines, MalformedLine, Quoting, frame_block

BLOCK_BYTES = 16 << 20
HEADER_READ_BYTES = 1 << 16
"""The header is looked for in reads this small, so the first block is not twice the size."""
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
MAX_MALFORMED_IN_A_ROW = 100_000
"""Consecutive lines with the wrong number of fields that make a file refused (a wrong delimiter
or header), before they fill memory."""


@dataclass(frozen=True)
class TextBatch:
    """Rows read from a text log: `rows` holds each batch row's data-row number (physical line
    number − 2), `set_aside` the lines that are not rows, met while reading this batch."""

    batch: pa.RecordBatch
    rows: np.ndarray
    set_aside: tuple[MalformedLine, ...]


def _delimiter(path: Path) -> str:
    return "\t" if ".tsv" in path.name.lower() else ","


def read_text_log(path: Path, columns: list[str], batch_rows: int, block_bytes: int = BLOCK_BYTES) -> Iterator[TextBatch]:
    """The rows of `columns` (text, parsed later by the validator) in batches of at most
    `batch_rows`; raises LogReadError naming the file for anything that is not a readable log."""
    try:
        with pa.input_stream(str(path)) as stream:  # decompresses .gz
            blocks = _LineBlocks(stream, block_bytes)
            names = _parse_header(path, blocks.header())
            check_columns(path, names, columns)
            parser = _BlockParser(path, names, columns)
            yield from parser.batches(blocks, batch_rows)
    except (pa.ArrowException, OSError) as exc:
        raise LogReadError(path, f"unreadable CSV/TSV data ({first_line(exc)})") from exc


def check_columns(path: Path, available: list[str], wanted: list[str]) -> None:
    """Refuses a log without the columns its schema names, listing the ones it has."""
    missing = [c for c in wanted if c not in available]
    if missing:
        shown = ", ".join(available[:12]) + (" …" if len(available) > 12 else "")
        raise LogReadError(path, f"missing column(s) {', '.join(map(repr, missing))} (found: {shown})")


def _parse_header(path: Path, line: bytes) -> list[str]:
    """Column names from the header line, read with the same quoting as the data."""
    line = line.removeprefix(codecs.BOM_UTF8)
    try:
        line.decode()
        names = pacsv.read_csv(
            io.BytesIO(line + b"\n"),
            parse_options=pacsv.ParseOptions(delimiter=_delimiter(path)),
            read_options=pacsv.ReadOptions(use_threads=False),
        ).schema.names
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        raise LogReadError(path, f"not a readable CSV/TSV log (header: {first_line(exc)})") from exc
    if not names or any("\x00" in n for n in names):
        raise LogReadError(path, "not a readable CSV/TSV log (no text header)")
    return names


class _LineBlocks:
    """Blocks of whole lines from a byte stream. The caller may hand the end of a block back
    (a quoted value still open there) to be read again at the front of the next block."""

    def __init__(self, stream: pa.NativeFile, block_bytes: int) -> None:
        self._stream, self._block_bytes = stream, block_bytes
        self._rest, self._exhausted = b"", False

    def _read(self, size: int) -> bytes:
        chunk = b"" if self._exhausted else self._stream.read(size)
        self._exhausted = not chunk
        return chunk

    def header(self) -> bytes:
        """The first line, without its line break; the blocks start after it."""
        while (found := _LINE_BREAK.search(self._rest)) is None or found.end() == len(self._rest):
            chunk = self._read(min(HEADER_READ_BYTES, self._block_bytes))  # a break at the end may be a CRLF's CR
            if not chunk:
                break
            self._rest += chunk
        line = self._rest if found is None else self._rest[: found.start()]
        self._rest = b"" if found is None else self._rest[found.end() :]
        return line

    def give_back(self, carry: bytes) -> None:
        self._rest = carry + self._rest

    def __iter__(self) -> Iterator[tuple[bytes, bool]]:
        """(block, whether it is the end of the file)."""
        while True:
            data = self._rest + self._read(self._block_bytes)
            cut = data.rfind(b"\n") + 1 or data.rfind(b"\r", 0, len(data) - 1) + 1  # CR-only files too
            if self._exhausted:
                self._rest = b""
                if data:
                    yield data, True
                return
            self._rest = data[cut:]
            if cut:
                yield data[:cut], False


class _MalformedRecords:
    """Arrow's invalid-row handler: notes records with the wrong number of fields by their
    record number in the block parsed, and stops the file once MAX_MALFORMED_IN_A_ROW come in a
    row (across blocks too), since a wrong delimiter or header makes every line one."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str, int]] = []  # (record number from 1, text, fields)
        self.problem: str | None = None
        self._run = self._carried_run = 0
        self._previous = 0

    def begin(self) -> None:
        """Before each parse: a run open at the end of the last finished block continues."""
        self.found, self._run = [], self._carried_run
        self._previous = 0 if self._carried_run else -1

    def finish(self, records: int) -> None:
        """After the parse that is kept: whether its last record extends the run."""
        ends_malformed = bool(self.found) and self.found[-1][0] == records
        self._carried_run = self._run if ends_malformed else 0

    def __call__(self, row: pacsv.InvalidRow) -> str:
        self._run = self._run + 1 if row.number == self._previous + 1 else 1
        self._previous = row.number
        if self._run >= MAX_MALFORMED_IN_A_ROW:
            self.problem = (
                f"{MAX_MALFORMED_IN_A_ROW:,} lines in a row do not have the header's "
                f"{row.expected_columns} fields (wrong delimiter or header?)"
            )
            return "error"
        self.found.append((row.number, row.text, row.actual_columns))
        return "skip"


class _BlockParser:
    """Parses the blocks of one text log with Arrow and numbers their rows by line."""

    def __init__(self, path: Path, names: list[str], columns: list[str]) -> None:
        self.path = path
        self.quoting = Quoting(_delimiter(path))
        self.expected = len(names)
        self.malformed = _MalformedRecords()
        self._names = names
        self._parse = pacsv.ParseOptions(delimiter=_delimiter(path), invalid_row_handler=self.malformed)
        self._convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            include_columns=columns,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        self._schema = pa.schema([(name, pa.string()) for name in columns])

    def batches(self, blocks: _LineBlocks, batch_rows: int) -> Iterator[TextBatch]:
        next_row = 0  # data-row number of the next block's first line
        for data, at_end in blocks:
            table, rows, set_aside, lines = self._block(data, next_row, blocks, at_end)
            next_row += lines
            if table.num_rows == 0:
                if set_aside:  # a block of lines that are no rows still reports them
                    yield TextBatch(pa.RecordBatch.from_pylist([], schema=self._schema), rows, set_aside)
                continue
            start = 0
            for piece in table.to_batches(max_chunksize=batch_rows):
                yield TextBatch(piece, rows[start : start + piece.num_rows], set_aside if start == 0 else ())
                start += piece.num_rows

    def _block(
        self, data: bytes, first_row: int, blocks: _LineBlocks, at_end: bool
    ) -> tuple[pa.Table, np.ndarray, tuple[MalformedLine, ...], int]:
        """(table, data-row number of each of its rows, lines set aside, lines used) of one
        block: Arrow's reading where it agrees with the lines, else that of the re-framed block."""
        if _is_utf8(data) and not self._ends_in_quotes(data):
            table = self._arrow(data, first_row)
            lines = _line_count(data)
            records = table.num_rows + len(self.malformed.found)
            if records == lines:
                return self._kept(table, np.arange(first_row, first_row + lines), (), lines)
            line_rows = first_row + np.flatnonzero(~Lines(data).blank)
            if records == len(line_rows):
                return self._kept(table, line_rows, (), lines)
        framed = frame_block(data, first_row, self.quoting, self.expected, at_end)
        if framed.carry:
            blocks.give_back(framed.carry)
        table = self._arrow(framed.data, first_row)
        if table.num_rows + len(self.malformed.found) != len(framed.rows):
            raise LogReadError(self.path, f"the lines after data row {first_row} could not be told apart as rows")
        return self._kept(table, framed.rows, framed.set_aside, framed.lines)

    def _ends_in_quotes(self, data: bytes) -> bool:
        """Whether the block's last line leaves a quoted value open: Arrow would close it at the
        end of the block, where the line count cannot tell."""
        text = data.rstrip(b"\r\n")
        last = text[max(text.rfind(b"\n"), text.rfind(b"\r")) + 1 :]
        return b'"' in last and not self.quoting.closed(last)

    def _arrow(self, data: bytes, first_row: int) -> pa.Table:
        """Arrow's reading of whole lines; Arrow's malformed records land in self.malformed."""
        self.malformed.begin()
        if not data:
            return self._schema.empty_table()
        read = pacsv.ReadOptions(column_names=self._names, use_threads=False, block_size=len(data) + 1)
        try:
            return pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=self._parse, convert_options=self._convert)
        except pa.ArrowInvalid as exc:
            problem = self.malformed.problem or first_line(exc)
            raise LogReadError(self.path, f"unreadable CSV/TSV data after data row {first_row} ({problem})") from exc

    def _kept(
        self, table: pa.Table, records: np.ndarray, set_aside: tuple[MalformedLine, ...], lines: int
    ) -> tuple[pa.Table, np.ndarray, tuple[MalformedLine, ...], int]:
        """Splits the block's records (their data-row numbers) into the table's rows and the
        records Arrow found malformed, which join the lines set aside."""
        found = self.malformed.found
        self.malformed.finish(len(records))
        picked = np.array([number - 1 for number, _, _ in found], dtype=np.int64)
        malformed = tuple(
            MalformedLine("malformed_row", f"{fields} of {self.expected} fields", text, int(records[k]))
            for k, (_, text, fields) in zip(picked, found)
        )
        every = tuple(sorted(set_aside + malformed, key=lambda line: line.row))
        return table, np.delete(records, picked), every, lines


def _is_utf8(data: bytes) -> bool:
    """Whole-block check with Arrow's validator, which allocates nothing (decoding would build a
    str as large as the block)."""
    if data.isascii():
        return True
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)]).cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _line_count(data: bytes) -> int:
    """Lines of a block as Arrow sees them: LF, CRLF and lone CR end one, and a last line may
    have no line break. Quicker than Lines(data) (numpy counts ~3x faster than bytes.count)."""
    text = np.frombuffer(data, dtype=np.uint8)
    breaks = int(np.count_nonzero(text == 10))
    if b"\r" in data:
        returns = np.flatnonzero(text == 13)
        breaks += int(np.count_nonzero(text[np.minimum(returns + 1, len(text) - 1)] != 10))
    return breaks + (not data.endswith((b"\n", b"\r")))
