"""Writes the broken-drop corpus: one folder per case with the five files, bytes exactly
as a broken export would have them, and `expected.json` (the exact issues and the CLI's
exit code).

    .venv/bin/python -m roster_pipelines_tests.corpus.build            # files only
    .venv/bin/python -m roster_pipelines_tests.corpus.build --expected # also (re)write expected.json

`expected.json` is written from what the adapter and contracts report and must then be
READ and checked by hand (every case was, when it was added): the test asserts the files
against it, so a rewrite without reading turns the corpus into a snapshot of whatever the
code does.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from roster_pipelines.lib.formats import remind_csv

HERE = Path(__file__).parent
BOM = b"\xef\xbb\xbf"

# The format's own column list, so the corpus always matches the adapter.
HEADERS: dict[str, list[str]] = {
    name: list(columns) for name, columns in remind_csv.COLUMNS.items()
}

# A small clean district; row numbers (header = 1) in the comments.
# fmt: off
BASE: dict[str, list[list[str]]] = {
    "schools.csv": [
        ["S1", "Lincoln Elementary"],  # 2
        ["S2", "Riverside Middle"],  # 3
    ],
    "teachers.csv": [
        ["S1", "T1", "Ann", "Lee", "ann.lee@lincoln.k12.us", "(212) 201-3344"],  # 2
        ["S1", "T2", "Bob", "Ray", "bob.ray@lincoln.k12.us", ""],  # 3
        ["S2", "T2", "Bob", "Ray", "bob.ray@lincoln.k12.us", ""],  # 4
    ],
    "students.csv": [
        ["S1", "ST1", "Cara", "Diaz", "2016-03-04", "3", "", "", "Dana", "Diaz", "dana.diaz@example.com", ""],  # 2
        ["S1", "ST2", "Eli", "Diaz", "2018-05-06", "K", "", "", "Dana", "Diaz", "dana.diaz@example.com", ""],  # 3
        ["S1", "ST3", "Finn", "Park", "2016-07-08", "3", "finn@students.example.org", "", "Gus", "Park", "", "617-333-2211"],  # 4
        ["S2", "ST4", "Ivy", "Chen", "2013-01-02", "7", "", "", "", "", "", ""],  # 5
    ],
    "classes.csv": [
        ["S1", "C1", "T1", "Grade 3 Homeroom"],  # 2
        ["S1", "C2", "T2", "Art"],  # 3
        ["S2", "C3", "T2", "Science 7"],  # 4
    ],
    "enrollments.csv": [
        ["S1", "C1", "ST1"],  # 2
        ["S1", "C1", "ST3"],  # 3
        ["S1", "C2", "ST2"],  # 4
        ["S2", "C3", "ST4"],  # 5
    ],
}
# fmt: on

Files = dict[str, bytes]


def render(rows: dict[str, list[list[str]]], newline: str = "\n") -> Files:
    out: Files = {}
    for name, header in HEADERS.items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator=newline)
        writer.writerow(header)
        writer.writerows(rows[name])
        out[name] = buffer.getvalue().encode("utf-8")
    return out


def base() -> dict[str, list[list[str]]]:
    return copy.deepcopy(BASE)


def edit(change: Callable[[dict[str, list[list[str]]]], None]) -> Files:
    rows = base()
    change(rows)
    return render(rows)


def raw(**replace: bytes | None) -> Files:
    """The clean drop with some files replaced by raw bytes (None: the file is left out)."""
    files = render(base())
    for key, data in replace.items():
        name = key.replace("_csv", ".csv")
        if data is None:
            del files[name]
        else:
            files[name] = data
    return files


def _set(file: str, row: int, column: str, value: str):
    def change(rows: dict[str, list[list[str]]]) -> None:
        rows[file][row - 2][HEADERS[file].index(column)] = value

    return change


def _append(file: str, *new: list[str]):
    def change(rows: dict[str, list[list[str]]]) -> None:
        rows[file].extend(new)

    return change


def _many(*changes):
    def change(rows: dict[str, list[list[str]]]) -> None:
        for c in changes:
            c(rows)

    return change


def _students_cp1252() -> Files:
    rows = base()
    rows["students.csv"][0][2] = "Zoë"
    rows["students.csv"][0][3] = "Muñoz"
    files = render(rows)
    files["students.csv"] = files["students.csv"].decode("utf-8").encode("cp1252")
    return files


def _mixed_line_ends() -> Files:
    files = render(base())
    for name in ("students.csv", "enrollments.csv"):
        lines = files[name].split(b"\n")
        files[name] = b"".join(
            line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(lines[:-1])
        )
    return files


def _quoted() -> Files:
    rows = base()
    rows["schools.csv"][0][1] = 'Lincoln "Abe" Elementary, North'
    rows["classes.csv"][1][3] = "Art\nSection A, Room 12"  # a line break inside quotes
    rows["classes.csv"].append(["S1", "C4", "T9", "Band"])  # row 5 (line 6): unknown teacher
    return render(rows)


def _header(name: str, header: list[str], rows: list[list[str]] | None = None) -> Files:
    files = render(base())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(BASE[name] if rows is None else rows)
    files[name] = buffer.getvalue().encode("utf-8")
    return files


# fmt: off
CASES: dict[str, Callable[[], Files]] = {
    # --- reading: tolerated ------------------------------------------------------------
    "utf8_bom": lambda: {n: BOM + d for n, d in render(base()).items()},
    "crlf_line_ends": lambda: render(base(), newline="\r\n"),
    "mixed_line_ends": _mixed_line_ends,
    "quoted_commas_quotes_newlines": _quoted,
    "windows_1252": _students_cp1252,
    "header_case_and_spaces": lambda: _header(
        "teachers.csv",
        [" School_ID", "Teacher_ID ", "teacher_first_name", "TEACHER_LAST_NAME", "teacher_email", "teacher_mobile_phone"],
    ),
    "extra_columns": lambda: _header(
        "schools.csv",
        ["school_id", "school_name", "principal"],
        [[*r, "Pat"] for r in BASE["schools.csv"]],
    ),
    "blank_and_empty_rows": lambda: raw(
        schools_csv=b"school_id,school_name\nS1,Lincoln Elementary\n\n,\nS2,Riverside Middle\n \n"
    ),
    # --- reading: the drop is rejected -------------------------------------------------
    "duplicate_header": lambda: _header(
        "classes.csv",
        ["school_id", "class_id", "teacher_id", "class_name", "class_id"],
        [[*r, r[1]] for r in BASE["classes.csv"]],
    ),
    "missing_column": lambda: _header(
        "students.csv",
        [h for h in HEADERS["students.csv"] if h != "student_id"],
        [r[:1] + r[2:] for r in BASE["students.csv"]],
    ),
    "missing_file": lambda: raw(enrollments_csv=None),
    "empty_file": lambda: raw(teachers_csv=b""),
    "header_only_students": lambda: raw(students_csv=(",".join(HEADERS["students.csv"]) + "\n").encode()),
    "binary_garbage": lambda: raw(
        schools_csv=bytes((i * 97 + 13) % 256 for i in range(600))
    ),
    "excel_workbook": lambda: raw(classes_csv=b"PK\x03\x04\x14\x00\x06\x00\x08\x00" + b"\x00" * 40),
    "ragged_rows": lambda: raw(
        teachers_csv=(
            b"school_id,teacher_id,teacher_first_name,teacher_last_name,teacher_email,teacher_mobile_phone\n"
            b"S1,T1,Ann,Lee,ann.lee@lincoln.k12.us,(212) 201-3344\n"
            b"S1,T2,Bob,Ray,bob.ray@lincoln.k12.us\n"
            b"S2,T2,Bob,Ray,bob.ray@lincoln.k12.us,,Jr\n"
        )
    ),
    "unclosed_quote": lambda: raw(
        classes_csv=b'school_id,class_id,teacher_id,class_name\nS1,C1,T1,"Grade 3 Homeroom\nS1,C2,T2,Art\n'
    ),
    # --- ids and references --------------------------------------------------------------
    "duplicate_school_id": lambda: edit(_append("schools.csv", ["S2", "Riverside High"])),
    "duplicate_class_id": lambda: edit(_append("classes.csv", ["S1", "C2", "T1", "Music"])),
    "repeated_identical_rows": lambda: edit(
        _many(
            _append("schools.csv", ["S1", "Lincoln Elementary"]),
            _append("enrollments.csv", ["S1", "C1", "ST1"]),
        )
    ),
    "missing_ids": lambda: edit(
        _many(_set("students.csv", 5, "student_id", ""), _set("classes.csv", 4, "class_id", ""))
    ),
    "unknown_school": lambda: edit(
        _append("teachers.csv", ["S9", "T3", "Cy", "Ho", "cy.ho@lincoln.k12.us", ""])
    ),
    "unknown_class": lambda: edit(_append("enrollments.csv", ["S1", "C9", "ST1"])),
    "unknown_user": lambda: edit(_append("enrollments.csv", ["S1", "C1", "ST99"])),
    "enrollment_other_school": lambda: edit(_append("enrollments.csv", ["S2", "C3", "ST1"])),
    "class_unknown_teacher": lambda: edit(_set("classes.csv", 3, "teacher_id", "T9")),
    "user_id_ambiguous": lambda: edit(
        _many(
            _append("students.csv", ["S1", "T1", "Tom", "Lee", "2016-01-01", "3", "", "", "", "", "", ""]),
            _append("enrollments.csv", ["S1", "C2", "T1"]),
        )
    ),
    # --- people ----------------------------------------------------------------------------
    "teacher_without_email": lambda: edit(_set("teachers.csv", 2, "teacher_email", "")),
    "teacher_invalid_email": lambda: edit(
        _many(_set("teachers.csv", 3, "teacher_email", "bob.ray@"), _set("teachers.csv", 4, "teacher_email", "bob.ray@"))
    ),
    "teacher_email_taken": lambda: edit(_set("teachers.csv", 2, "teacher_email", "bob.ray@lincoln.k12.us")),
    "invalid_email_and_phone": lambda: edit(
        _many(
            _set("students.csv", 4, "student_email", "finn at students"),
            _set("students.csv", 4, "guardian_phone", "555-01"),
            _set("teachers.csv", 2, "teacher_mobile_phone", "12"),
        )
    ),
    "repeated_rows_disagree": lambda: edit(
        _many(
            _set("teachers.csv", 4, "teacher_first_name", "Robert"),
            _append("students.csv", ["S1", "ST1", "Cara", "Diaz", "2016-03-05", "3", "", "", "Raul", "Diaz", "raul.diaz@example.com", ""]),
        )
    ),
    "school_name_too_long": lambda: edit(_set("schools.csv", 3, "school_name", "R" * 61)),
    "class_name_too_long": lambda: edit(_set("classes.csv", 2, "class_name", "M" * 256)),
    "person_name_too_long": lambda: edit(_set("students.csv", 4, "student_last_name", "P" * 256)),
    "names_missing": lambda: edit(_set("students.csv", 5, "student_last_name", "  ")),
    "invalid_dob": lambda: edit(_set("students.csv", 2, "dob", "03/04/2016")),
    "invalid_grade": lambda: edit(_set("students.csv", 5, "grade", "Ungraded")),
    "contact_conflicts": lambda: edit(
        _many(
            _set("students.csv", 4, "student_email", "ann.lee@lincoln.k12.us"),
            _set("students.csv", 5, "guardian_email", "dana.diaz@example.com"),
            _set("students.csv", 5, "guardian_first_name", "Dana"),
            _set("students.csv", 5, "guardian_last_name", "Diaz"),
            _set("students.csv", 5, "student_email", "dana.diaz@example.com"),
        )
    ),
    "guardian_without_contact": lambda: edit(
        _many(_set("students.csv", 4, "guardian_phone", ""), _set("students.csv", 5, "guardian_first_name", "Mo"))
    ),
    "six_guardians": lambda: edit(
        _append(
            "students.csv",
            *[
                ["S2", "ST4", "Ivy", "Chen", "2013-01-02", "7", "", "", f"G{i}", "Chen", f"g{i}.chen@example.com", ""]
                for i in range(1, 7)
            ],
        )
    ),
    "errored_student_cascade": lambda: edit(_set("students.csv", 2, "student_first_name", "")),
}
# fmt: on


def write_case(name: str, files: Files) -> Path:
    folder = HERE / name
    if folder.exists():
        for path in folder.glob("*.csv"):
            path.unlink()
    folder.mkdir(exist_ok=True)
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    return folder


def expected_of(folder: Path) -> dict[str, object]:
    from roster_pipelines.lib.contracts import validate
    from roster_pipelines.lib.formats.remind_csv import parse

    roster = validate(parse(folder))
    issues = [
        {k: r[k] for k in ("code", "severity", "file", "row", "ids")}
        for r in roster.issues.iter_rows(named=True)
    ]
    exit_code = 2 if roster.rejected else 0
    return {"issues": issues, "exit_code": exit_code}


def main(argv: list[str]) -> int:
    for name, build in CASES.items():
        folder = write_case(name, build())
        if "--expected" in argv:
            expected = expected_of(folder)
            old = folder / "expected.json"
            if old.exists() and json.loads(old.read_text())["exit_code"] == 3:
                expected["exit_code"] = 3  # held by the plan (set by hand: a later stage)
            old.write_text(json.dumps(expected, indent=1) + "\n")
    for stale in HERE.iterdir():
        if stale.is_dir() and stale.name not in CASES and not stale.name.startswith("__"):
            shutil.rmtree(stale)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
