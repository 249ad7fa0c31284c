"""Line-exact framing of CSV/TSV text: which lines make which rows, and which lines cannot be rows.

Arrow's CSV parser follows an opening quote across line breaks until it finds the closing one.
That is right for a value that really holds a line break, and ruinous for a stray quote:
`u2,"i9,1706401300,1,4` swallows every line after it into one malformed row. This module decides,
with Arrow's own quoting rules (a quote opens a value only at the start of a field, `""` inside
one is a literal quote, anything after the closing quote belongs to the field), which lines a
quoted value may join:

- it must close within MAX_QUOTED_LINES lines,
- the row it makes must have exactly the header's number of fields,
- and its first line must not already be a whole row read with the quote as a plain character
  (unless the quote opens the last field: a multi-line value in the last column looks just so).

Otherwise the line that opened the quote is set aside on its own and the next line is read as a
fresh row. A line that is not UTF-8 is set aside too, as its bytes in hex. Only blocks where
Arrow's reading may not match the lines (fewer records than lines, a quote open at the block's
end) or that hold non-UTF-8 bytes come here (features.textlog). Only lines with non-UTF-8 bytes or with quotes that do not plainly pair up
are looked at one by one in Python (a few µs each); the others pass in runs, found with numpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

MAX_QUOTED_LINES = 100
"""The most lines one quoted value may span before its opening line counts as a stray quote."""
STILL_OPEN = -1
"""What _quoted_row_end says when the block ends before it can tell."""


@dataclass(frozen=True)
class MalformedLine:
    """A text-log line that is not a row, kept whole for the quarantine.

    `reason` is the quarantine reason (`malformed_row` or `bad_encoding`), `detail` goes to its
    `field` column; `text` is the line without its line break (its bytes in hex where they are
    not UTF-8) and `row` its data-row number, the physical line number − 2."""

    reason: str
    detail: str
    text: str
    row: int


@dataclass(frozen=True)
class FramedBlock:
    """A block re-framed: `data` holds its rows one after another (set-aside and blank lines
    left out), `rows` the data-row number of each row's first line, `lines` how many of the
    block's lines were used; `carry` is the block's end, a quoted value still open there,
    to be framed again together with the next block."""

    data: bytes
    rows: np.ndarray
    set_aside: tuple[MalformedLine, ...]
    lines: int
    carry: bytes


class Quoting:
    """Arrow's quoting rules for one delimiter, as possessive regular expressions over bytes
    (possessive, so the regex never reads `""` as a closing quote followed by an opening one)."""

    def __init__(self, delimiter: str) -> None:
        d = re.escape(delimiter.encode())
        field = rb'(?:"(?:[^"]|"")*+"[^' + d + rb"]*+|[^\"" + d + rb"][^" + d + rb"]*+|)"
        self.delimiter = delimiter.encode()
        self._line = re.compile(field + rb"(?:" + d + field + rb")*+")
        self._field_and_delimiter = re.compile(field + d)
        self._closing = re.compile(rb'(?:[^"]|"")*+"')
        self._after_closing = re.compile(rb"[^" + d + rb"]*+(?:" + d + field + rb")*+")

    def closed(self, line: bytes) -> bool:
        """True when a line read from the start of a row ends outside any quoted value."""
        return self._line.fullmatch(line) is not None

    def closes(self, line: bytes) -> bool:
        """True when a line read from inside a quoted value closes it and opens no other."""
        end = self._closing.match(line)
        return end is not None and self._after_closing.fullmatch(line, end.end()) is not None

    def _whole_fields(self, text: bytes) -> tuple[int, int]:
        """(fields that end in a delimiter at the start of `text`, where the next field starts)."""
        count = position = 0
        while (found := self._field_and_delimiter.match(text, position)) is not None:
            count, position = count + 1, found.end()
        return count, position

    def fields(self, row: bytes) -> int:
        """Fields of a row whose quoted values are all closed (they may hold line breaks)."""
        return self._whole_fields(row)[0] + 1

    def unpaired(self, lines: Lines) -> np.ndarray:
        """Indices of the lines with a quote that need a closer look: all but those with an even
        number of quotes where the 1st, 3rd, … each start a field (the line's start or right
        after a delimiter). Those are closed under Arrow's rules (each such quote opens a value
        that the next quote closes: a doubled quote would put a quote, not a delimiter, before
        the one after it), so the quoting of a quote-heavy log is passed without a regex."""
        text = lines.text
        quotes = np.flatnonzero(text == ord('"'))
        line = lines.line_of(quotes)
        opening = (np.arange(len(quotes)) - np.searchsorted(line, line, side="left")) % 2 == 0
        at_field_start = (quotes == lines.starts[line]) | (text[np.maximum(quotes - 1, 0)] == self.delimiter[0])
        odd = np.flatnonzero(np.bincount(line, minlength=len(lines)) % 2)
        return np.union1d(line[opening & ~at_field_start], odd)

    def stray_quote(self, line: bytes, expected: int) -> bool:
        """True when a line that ends inside a quoted value is already a whole row with the
        quote read as a plain character: the quote then cannot be opening a multi-line value.
        A quote opening the last field, with no delimiter after it, is given the benefit."""
        before, start = self._whole_fields(line)
        plain = before + 1 + line.count(self.delimiter, start)
        opens_last_field = before + 1 == expected == plain
        return plain >= expected and not opens_last_field


class Lines:
    """Where each line of a block starts, where its text ends and where the next line starts,
    found with numpy. Line breaks are LF, CRLF or a lone CR, as for Arrow."""

    def __init__(self, data: bytes) -> None:
        text = np.frombuffer(data, dtype=np.uint8)
        feed, ret = text == 10, text == 13
        lone_ret = ret.copy()
        lone_ret[:-1] &= ~feed[1:]
        breaks = np.flatnonzero(feed | lone_ret)
        ends = breaks - (feed[breaks] & np.concatenate([[False], ret[:-1]])[breaks])
        nexts = breaks + 1
        if len(data) and not (feed[-1] or ret[-1]):  # a last line without a line break
            ends, nexts = np.append(ends, len(data)), np.append(nexts, len(data))
        self.data, self.text = data, text
        self.starts, self.ends, self.nexts = np.concatenate([[0], nexts[:-1]]), ends, nexts
        self.blank = self.ends == self.starts

    def __len__(self) -> int:
        return len(self.nexts)

    def body(self, index: int) -> bytes:
        return self.data[self.starts[index] : self.ends[index]]

    def raw(self, first: int, end: int) -> bytes:
        """Lines first..end-1 with their line breaks."""
        return self.data[self.starts[first] : self.nexts[end - 1]]

    def line_of(self, positions: np.ndarray) -> np.ndarray:
        """Index of the line that holds each byte position."""
        return np.searchsorted(self.nexts, positions, side="right")

    def undecodable(self) -> dict[int, int]:
        """{line index: offset of its first byte that is not UTF-8}, trying only the lines with
        bytes beyond ASCII."""
        found = {}
        if self.data.isascii():
            return found
        for index in np.unique(self.line_of(np.flatnonzero(self.text >= 128))).tolist():
            try:
                self.body(index).decode()
            except UnicodeDecodeError as exc:
                found[index] = exc.start
        return found


class _Framing:
    """The rows and set-aside lines of a block being re-framed, in line order."""

    def __init__(self, lines: Lines, first_row: int) -> None:
        self.lines, self.first_row = lines, first_row
        self.pieces: list[bytes] = []
        self.rows: list[np.ndarray] = []
        self.set_aside: list[MalformedLine] = []

    def keep(self, first: int, end: int) -> None:
        """Lines first..end-1, one row each (blank lines, which Arrow skips, none)."""
        if end > first:
            self.pieces.append(self.lines.raw(first, end))
            self.rows.append(self.first_row + first + np.flatnonzero(~self.lines.blank[first:end]))

    def keep_joined(self, first: int, end: int) -> None:
        """Lines first..end-1 as one row: a quoted value that holds line breaks."""
        self.pieces.append(self.lines.raw(first, end))
        self.rows.append(np.array([self.first_row + first]))

    def put_aside(self, index: int, reason: str, detail: str, text: str) -> None:
        self.set_aside.append(MalformedLine(reason, detail, text, self.first_row + index))

    def framed(self, lines: int, carry: bytes = b"") -> FramedBlock:
        rows = np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=np.int64)
        return FramedBlock(b"".join(self.pieces), rows.astype(np.int64), tuple(self.set_aside), lines, carry)


def frame_block(data: bytes, first_row: int, quoting: Quoting, expected: int, at_end: bool) -> FramedBlock:
    """Re-frame a block of whole lines (see the module docstring); `first_row` is the data-row
    number of its first line. Without `at_end`, a quoted value still open at the end of the
    block is handed back as `carry` (unless it already spans MAX_QUOTED_LINES lines).

    Only lines with non-UTF-8 bytes or quotes that do not plainly pair up are looked at one by
    one, and only those that are not rows on their own end a run of lines kept as they are."""
    lines = Lines(data)
    undecodable = lines.undecodable()
    suspects = np.union1d(quoting.unpaired(lines), list(undecodable)).astype(np.int64)
    framing = _Framing(lines, first_row)
    index = 0
    for line in suspects.tolist():
        body = lines.body(line)
        if line < index or (line not in undecodable and quoting.closed(body)):  # part of a row kept already, or a row
            continue
        framing.keep(index, line)
        index = line + 1
        if line in undecodable:
            framing.put_aside(line, "bad_encoding", f"not UTF-8 (byte {undecodable[line]})", body.hex())
            continue
        end = _quoted_row_end(lines, line, quoting, expected, undecodable)
        if end == STILL_OPEN and not at_end:
            return framing.framed(line, lines.raw(line, len(lines)))
        if end is None or end == STILL_OPEN:
            framing.put_aside(line, "malformed_row", "unclosed quote", body.decode())
        else:
            framing.keep_joined(line, end)
            index = end
    framing.keep(index, len(lines))
    return framing.framed(len(lines))


def _quoted_row_end(lines: Lines, start: int, quoting: Quoting, expected: int, undecodable: dict[int, int]) -> int | None:
    """The line index after the row that a quoted value opened on line `start` makes; None when
    that value may not span lines (see the module docstring), STILL_OPEN when the lines run out
    before it closes or reaches MAX_QUOTED_LINES."""
    if quoting.stray_quote(lines.body(start), expected):
        return None
    last = start + MAX_QUOTED_LINES
    for index in range(start + 1, min(last, len(lines))):
        if index in undecodable:
            return None
        if quoting.closes(lines.body(index)):
            row = lines.data[lines.starts[start] : lines.ends[index]]
            return index + 1 if quoting.fields(row) == expected else None
    return None if last <= len(lines) else STILL_OPEN
