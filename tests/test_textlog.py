"""Text logs are read line-exactly: a stray quote or a non-UTF-8 line costs its own line and no
other, a quoted value may hold line breaks, and every row and set-aside line carries its line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotorec.features.textframe import MAX_QUOTED_LINES
from rotorec.features.textlog import read_text_log

HEADER = b"user_id,item_id,timestamp"
COLUMNS = ["user_id", "item_id", "timestamp"]


def _entry(kind: str, k: int, newline: bytes) -> tuple[list[bytes], dict]:
    """The lines of one entry and what reading them must give: a row's item, or a set-aside
    line's reason, detail and text."""
    if kind == "good":
        return [b"u%d,i%d,%d" % (k, k, k)], {"item": f"i{k}"}
    if kind == "quoted":
        return [b'"u%d","i,%d",%d' % (k, k, k)], {"item": f"i,{k}"}
    if kind == "escaped_quote":
        return [b'u%d,"i""%d",%d' % (k, k, k)], {"item": f'i"{k}'}
    if kind == "literal_quote":  # a quote inside a field is a plain character
        return [b'u%d,i"%d,%d' % (k, k, k)], {"item": f'i"{k}'}
    if kind == "text_after_quote":  # what follows the closing quote belongs to the field
        return [b'u%d,"i"%d,%d' % (k, k, k)], {"item": f"i{k}"}
    if kind == "multiline":
        return [b'u%d,"i%d' % (k, k), b'x",%d' % k], {"item": f"i{k}{newline.decode()}x"}
    if kind == "multiline_last_field":
        return [b'u%d,i%d,"%d' % (k, k, k), b'5"'], {"item": f"i{k}"}
    if kind == "stray_quote":
        line = b'u%d,"i%d,%d' % (k, k, k)
        return [line], {"reason": "malformed_row", "detail": "unclosed quote", "text": line.decode()}
    if kind == "stray_after_literal_quote":  # two quotes, but the second one opens a value
        line = b'u%d"x,",%d' % (k, k)
        return [line], {"reason": "malformed_row", "detail": "unclosed quote", "text": line.decode()}
    if kind == "short":
        line = b"u%d,i%d" % (k, k)
        return [line], {"reason": "malformed_row", "detail": "2 of 3 fields", "text": line.decode()}
    if kind == "long":
        line = b"u%d,i%d,%d,x" % (k, k, k)
        return [line], {"reason": "malformed_row", "detail": "4 of 3 fields", "text": line.decode()}
    if kind == "latin1":
        line = b"u%d,i\xe9%d,%d" % (k, k, k)
        return [line], {"reason": "bad_encoding", "detail": f"not UTF-8 (byte {line.index(0xE9)})", "text": line.hex()}
    assert kind == "blank"
    return [b""], {}


KINDS = (
    "good",
    "quoted",
    "escaped_quote",
    "literal_quote",
    "text_after_quote",
    "multiline",
    "multiline_last_field",
    "stray_quote",
    "stray_after_literal_quote",
    "short",
    "long",
    "latin1",
    "blank",
)


def _read(path: Path, block_bytes: int) -> tuple[list[tuple[int, str]], list[tuple[int, str, str, str]]]:
    rows, set_aside = [], []
    for read in read_text_log(path, COLUMNS, batch_rows=3, block_bytes=block_bytes):
        assert len(read.rows) == read.batch.num_rows
        rows += zip(read.rows.tolist(), read.batch.column("item_id").to_pylist())
        set_aside += [(line.row, line.reason, line.detail, line.text) for line in read.set_aside]
    return rows, set_aside


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=40),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    final_newline=st.booleans(),
    block_bytes=st.sampled_from([1, 5, 17, 64, 1 << 20]),
)
def test_every_line_is_a_row_part_of_one_or_set_aside_alone(
    tmp_path_factory, kinds: list[str], newline: bytes, final_newline: bool, block_bytes: int
) -> None:
    lines, want_rows, want_aside = [], [], []
    for k, kind in enumerate(kinds):
        entry, outcome = _entry(kind, k, newline)
        if "item" in outcome:
            want_rows.append((len(lines), outcome["item"]))
        elif outcome:
            want_aside.append((len(lines), outcome["reason"], outcome["detail"], outcome["text"]))
        lines += entry
    appended = not final_newline and lines[-1] == b""
    if appended:  # a last line, so that the blank line before it is one
        lines.append(b"u,last,0")
        want_rows.append((len(lines) - 1, "last"))
    path = tmp_path_factory.mktemp("log") / "log.csv"
    path.write_bytes(newline.join([HEADER, *lines]) + (newline if final_newline else b""))

    rows, set_aside = _read(path, block_bytes)

    assert rows == want_rows
    assert sorted(set_aside) == want_aside
    assert len(rows) + len(set_aside) == sum(kind != "blank" for kind in kinds) + appended


def test_the_issue_log_keeps_every_line_after_an_unterminated_quote(tmp_path: Path) -> None:
    lines = [b"u%d,i%d,%d" % (k % 3, k, 1706400000 + 100 * k) for k in range(37)]
    lines[9] = b'u2,"i9,1706401300'
    path = tmp_path / "log.csv"
    path.write_bytes(b"\n".join([HEADER, *lines]) + b"\n")
    rows, set_aside = _read(path, 1 << 20)
    assert [row for row, _ in rows] == [k for k in range(37) if k != 9]
    assert set_aside == [(9, "malformed_row", "unclosed quote", 'u2,"i9,1706401300')]


@pytest.mark.parametrize("closes_after", [MAX_QUOTED_LINES - 1, MAX_QUOTED_LINES, None])
def test_a_quoted_value_spans_at_most_max_quoted_lines(tmp_path: Path, closes_after: int | None) -> None:
    """`u0,"i0` opens a value in field 2 of 3 (short of a whole row, so it may continue); it
    joins the lines up to a closing line only within MAX_QUOTED_LINES lines."""
    inside = [b"text %d" % k for k in range(MAX_QUOTED_LINES + 20)]
    if closes_after is not None:
        inside[closes_after - 1] = b'end",1'
    path = tmp_path / "log.csv"
    path.write_bytes(b"\n".join([HEADER, b'u0,"i0', *inside]) + b"\n")
    rows, set_aside = _read(path, 1 << 20)
    if closes_after == MAX_QUOTED_LINES - 1:  # the value's lines: the opening one + closes_after
        assert (
            rows[0][0] == 0
            and rows[0][1].endswith("end")
            and set_aside
            == [(row, "malformed_row", "1 of 3 fields", f"text {row - 1}") for row in range(closes_after + 1, len(inside) + 1)]
        )
    else:
        assert set_aside[0] == (0, "malformed_row", "unclosed quote", 'u0,"i0')
        assert [row for row, *_ in set_aside] == list(range(len(inside) + 1))  # every other line is short
        assert rows == []


def test_a_utf8_bom_and_quoted_header_names_are_read(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(b'\xef\xbb\xbfuser_id,"item_id",timestamp\r\nu1,\xc3\xa9,1\r\n')
    assert _read(path, 1 << 20) == ([(0, "é")], [])
