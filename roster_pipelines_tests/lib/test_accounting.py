"""Nothing is dropped silently: every data row of every file of a drop is either applied
or named by an issue (its file and row). Applied means: everything the row says is in
the validated tables — each canonical row parsed from it is there, or one with the same
key is (a student listed at two schools with two guardians says some things twice).
Counted on a messy generated drop made messier by hand, and on every corpus case."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pytest

from roster_pipelines.lib.canonical import Roster
from roster_pipelines.lib.contracts import validate
from roster_pipelines.lib.formats.remind_csv import COLUMNS, parse
from roster_pipelines.lib.generator import generate_district
from roster_pipelines_tests.lib.test_corpus import CASE_NAMES, CORPUS


def data_rows(folder: Path) -> set[tuple[str, int]]:
    """(file, row) of every record after the header, counted by the csv module."""
    rows = set()
    for name in COLUMNS:
        if not (folder / name).is_file():
            continue
        with (folder / name).open(newline="", encoding="utf-8", errors="replace") as handle:
            n = sum(1 for _ in csv.reader(handle))
        rows |= {(name, row) for row in range(2, n + 1)}
    return rows


# The key of each canonical table: a parsed row is in when a validated row has its key.
KEYS = {
    "schools": ["school_id"],
    "people": ["person_key"],
    "school_memberships": ["person_key", "school_id"],
    "contacts": ["person_key", "kind", "value"],
    "classes": ["class_id"],
    "enrollments": ["class_id", "person_key"],
    "guardianships": ["parent_person_key", "student_person_key"],
}


def account(folder: Path) -> tuple[Roster, set, set, set]:
    """(validated roster, every data row, rows applied in full, rows named by an issue)."""
    parsed = parse(folder)
    roster = validate(parsed)
    touched: set = set()  # rows something was parsed from
    missing: set = set()  # rows with a parsed fact that is not in the validated tables
    for table, keys in KEYS.items():
        made = getattr(parsed, table)
        touched |= set(made.select("src_file", "src_row").unique().rows())
        lost = made.join(getattr(roster, table).select(keys).unique(), on=keys, how="anti")
        missing |= set(lost.select("src_file", "src_row").unique().rows())
    applied = set() if roster.rejected else touched - missing
    named = set(roster.issues.filter(pl.col("row").is_not_null()).select("file", "row").rows())
    return roster, data_rows(folder), applied, named


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8", newline="") as handle:
        handle.write(text)


def test_every_row_of_a_messy_drop_is_applied_or_named(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    summary = generate_district(folder, people=3000, seed=11, problem_rate=0.05)
    assert summary.problems
    schools = (folder / "schools.csv").read_text().splitlines()
    teachers = (folder / "teachers.csv").read_text().splitlines()
    students = (folder / "students.csv").read_text().splitlines()
    enrollments = (folder / "enrollments.csv").read_text().splitlines()
    _append(folder / "schools.csv", f"{schools[1]}\n\n,\n")  # a repeat, a blank, an empty row
    _append(folder / "teachers.csv", f"{teachers[1]}\nS_NOPE,T_NEW,A,B,a.b@example.org,\n")
    _append(folder / "students.csv", f"{students[1]}\n{students[2]}\n")
    _append(folder / "enrollments.csv", f"{enrollments[1]}\n,C_NOPE,\nS1,C_NOPE,ST_NOPE\n")

    roster, rows, applied, named = account(folder)
    assert not roster.rejected
    assert roster.issues.height > 50
    assert rows and applied <= rows and named <= rows
    silent = sorted(rows - applied - named)
    assert not silent, f"{len(silent)} rows neither applied nor named: {silent[:10]}"
    # Both kinds occur: rows that apply with an alert, and rows skipped with an error.
    assert applied & named and named - applied


@pytest.mark.parametrize("case", CASE_NAMES)
def test_every_row_of_a_corpus_drop_is_applied_or_named(case: str) -> None:
    roster, rows, applied, named = account(CORPUS / case)
    if roster.rejected:  # nothing applies; the file-level issues say why
        assert not applied
        return
    assert not sorted(rows - applied - named)
