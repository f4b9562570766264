"""Fuzzing the Remind CSV reader with hypothesis: arbitrary bytes never crash it, and a
valid file written in any of the ways real exports write it never loses a row.

Bounded (max_examples, no deadline per example but a small drop) to stay well under 30 s.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roster_pipelines.lib.contracts import validate
from roster_pipelines.lib.formats.remind_csv import COLUMNS, parse
from roster_pipelines.lib.issues import CATALOGUE, FILE_ERROR
from roster_pipelines_tests.corpus.build import BASE, render

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FILES = list(COLUMNS)


def _parse(files: dict[str, bytes]):
    """The files parsed as a drop, from a folder that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="fuzz_drop_") as tmp:
        folder = Path(tmp)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return parse(folder)


def _check(files: dict[str, bytes]):
    parsed = _parse(files)  # must not raise
    roster = validate(parsed)  # nor must the contracts
    assert set(roster.issues["code"].to_list()) <= set(CATALOGUE)
    assert roster.rejected == (roster.issues["severity"] == FILE_ERROR).any()
    return roster


@FUZZ
@given(name=st.sampled_from(FILES), data=st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(name: str, data: bytes) -> None:
    files = render(BASE)
    files[name] = data
    _check(files)


@FUZZ
@given(
    name=st.sampled_from(FILES),
    position=st.integers(min_value=0, max_value=10_000),
    junk=st.binary(min_size=1, max_size=40),
    drop_bytes=st.integers(min_value=0, max_value=20),
)
def test_mutated_valid_files_never_crash(
    name: str, position: int, junk: bytes, drop_bytes: int
) -> None:
    files = render(BASE)
    data = files[name]
    at = position % (len(data) + 1)
    files[name] = data[:at] + junk + data[at + drop_bytes :]
    _check(files)


# Values as SIS exports hold them: commas, quotes, line breaks, accents, padding.
_VALUE = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 ,\"'\n\r\t-_.éüñ漢@=+")), min_size=1, max_size=20
).filter(lambda v: v.strip() != "")


@FUZZ
@given(
    names=st.lists(_VALUE, min_size=1, max_size=12),
    newline=st.sampled_from(["\n", "\r\n"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    bom=st.booleans(),
    blank_after=st.sets(st.integers(min_value=0, max_value=12), max_size=3),
    extra_column=st.booleans(),
    upper_header=st.booleans(),
)
def test_a_valid_file_never_loses_a_row(
    names: list[str],
    newline: str,
    quoting: int,
    bom: bool,
    blank_after: set[int],
    extra_column: bool,
    upper_header: bool,
) -> None:
    """schools.csv with any names, written any common way: every school arrives, on the
    row a spreadsheet shows, with its name (trimmed, whitespace collapsed)."""
    header = ["school_id", "school_name"]
    if upper_header:
        header = [h.upper() for h in header]
    if extra_column:
        header.append("notes")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline, quoting=quoting)
    writer.writerow(header)
    want: list[tuple[str, str, int]] = []
    row = 1
    for i, name in enumerate(names):
        if quoting == csv.QUOTE_MINIMAL:
            # csv.writer leaves a bare CR unquoted when the line end is LF: every reader
            # (Excel too) takes it as a line break, so such a file is not a valid one.
            name = name.replace("\r", "-")
        values = [f"S{i}", name] + (['n, "x"'] if extra_column else [])
        writer.writerow(values)
        row += 1
        want.append((f"S{i}", " ".join(name.split()), row))
        if i in blank_after:
            buffer.write(newline)  # a blank line: a row of its own in a spreadsheet
            row += 1
    files = render(BASE)
    files["schools.csv"] = (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode()
    parsed = _parse(files)
    assert not parsed.rejected, parsed.issues.to_dicts()
    got = parsed.schools.select("school_id", "name", "src_row").rows()
    assert got == want
    empty_rows = parsed.issues.filter(pl.col("code") == "ROW_EMPTY")["row"].to_list()
    assert len(empty_rows) == len(blank_after & set(range(len(names))))
