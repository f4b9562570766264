"""The Remind CSV 1.0 adapter: reading the five files and building the parsed roster."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import polars as pl
import pytest

from roster_pipelines.lib import canonical
from roster_pipelines.lib.formats import ADAPTERS, REQUIRED_FILES, get_adapter, remind_csv
from roster_pipelines.lib.formats.remind_csv import COLUMNS, parse
from roster_pipelines.lib.issues import ISSUES_SCHEMA, format_ids

BOM = b"\xef\xbb\xbf"

# A small, clean district. Row numbers (header = 1) are in the comments.
SCHOOLS = [
    ["S1", "Lincoln Elementary"],  # 2
    ["S2", "Riverside YMCA After-School Program"],  # 3
]
TEACHERS = [
    ["S1", "T1", "Ann", "Lee", "Ann.Lee@Lincoln.k12.us", ""],  # 2
    ["S1", "T2", "Bob", "Ray", "bob.ray@lincoln.k12.us", "(212) 201-3344"],  # 3
    ["S2", "T2", "Bob", "Ray", "bob.ray@lincoln.k12.us", "(212) 201-3344"],  # 4
]
STUDENTS = [
    ["S1", "ST1", "Cara", "Diaz", "2016-03-04", "03", "", "", "Dana", "Diaz", "dana.diaz@gmail.com", ""],  # 2
    ["S1", "ST2", "Eli", "Diaz", "2018-05-06", "Kindergarten", "", "", "Dana", "Diaz", "Dana.Diaz@Gmail.com", ""],  # 3
    ["S1", "ST3", "Finn", "Park", "2016-07-08", "Grade 3", "finn@students.org", "", "Gus", "Park", "", "617.333.2211"],  # 4
    ["S1", "ST3", "Finn", "Park", "2016-07-08", "Grade 3", "finn@students.org", "", "Hana", "Park", "hana.park@yahoo.com", ""],  # 5
    ["S2", "ST4", "Ivy", "Chen", "2014-01-02", "5", "", "", "", "", "", ""],  # 6
]  # fmt: skip
CLASSES = [
    ["S1", "C1", "T1", "Grade 3 Homeroom"],  # 2
    ["S1", "C2", "T2", "Art, Section A"],  # 3
    ["S2", "C3", "T2", "YMCA Club"],  # 4
]
ENROLLMENTS = [
    ["S1", "C1", "ST1"],  # 2
    ["S1", "C1", "ST2"],  # 3
    ["S1", "C1", "ST3"],  # 4
    ["S1", "C2", "ST1"],  # 5
    ["S2", "C3", "ST4"],  # 6
    ["S1", "C2", "T1"],  # 7: a co-teacher
]
BASE: dict[str, list[list[str]]] = {
    "schools.csv": SCHOOLS,
    "teachers.csv": TEACHERS,
    "students.csv": STUDENTS,
    "classes.csv": CLASSES,
    "enrollments.csv": ENROLLMENTS,
}


def base_rows() -> dict[str, list[list[str]]]:
    """A fresh copy of the clean district's rows, to change in a test."""
    return copy.deepcopy(BASE)


def write_drop(
    folder: Path,
    rows: Mapping[str, Sequence[Sequence[str]]] | None = None,
    *,
    headers: Mapping[str, Sequence[str]] | None = None,
    omit: Iterable[str] = (),
    bom: Iterable[str] = (),
    encoding: str = "utf-8",
    newline: str = "\n",
) -> Path:
    """Write a Remind CSV drop: every file (but `omit`) with its header and given rows."""
    rows = BASE if rows is None else rows
    folder.mkdir(parents=True, exist_ok=True)
    for name, columns in COLUMNS.items():
        if name in omit:
            continue
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator=newline)
        writer.writerow((headers or {}).get(name, columns))
        writer.writerows(rows.get(name, []))
        data = buffer.getvalue().encode(encoding)
        (folder / name).write_bytes(BOM + data if name in set(bom) else data)
    return folder


def issue_tuples(roster: canonical.Roster, code: str | None = None) -> list[tuple]:
    """(code, severity, file, row, ids) of the roster's issues, optionally of one code."""
    issues = roster.issues
    if code is not None:
        issues = issues.filter(pl.col("code") == code)
    return [
        (r["code"], r["severity"], r["file"], r["row"], r["ids"])
        for r in issues.iter_rows(named=True)
    ]


def rows_of(frame: pl.DataFrame, *columns: str) -> list[tuple]:
    return [tuple(r) for r in frame.select(columns).iter_rows()]


# --- registry -----------------------------------------------------------------------------


def test_registry() -> None:
    assert dict(ADAPTERS) == {"remind-csv-1.0": remind_csv.parse}
    assert get_adapter("remind-csv-1.0") is remind_csv.parse
    assert dict(REQUIRED_FILES) == {
        "remind-csv-1.0": (
            "schools.csv",
            "teachers.csv",
            "students.csv",
            "classes.csv",
            "enrollments.csv",
        )
    }
    with pytest.raises(ValueError, match=r"Unknown roster format 'oneroster'.*remind-csv-1\.0"):
        get_adapter("oneroster")


# --- a clean drop -------------------------------------------------------------------------


def test_clean_drop_builds_every_table(tmp_path: Path) -> None:
    roster = parse(write_drop(tmp_path, bom=["schools.csv", "students.csv"]))

    assert not roster.rejected
    assert roster.issues.height == 0
    assert roster.issues.schema == ISSUES_SCHEMA
    for name, frame in roster.tables().items():
        assert frame.schema == canonical.TABLE_SCHEMAS[name], name

    assert rows_of(roster.schools, "school_id", "name", "org_type", "src_file", "src_row") == [
        ("S1", "Lincoln Elementary", "school", "schools.csv", 2),
        ("S2", "Riverside YMCA After-School Program", "program", "schools.csv", 3),
    ]
    # One people row per source row; repeats are merged by the contracts.
    assert rows_of(roster.people, "person_key", "role", "sis_id", "src_file", "src_row") == [
        ("teacher:T1", "teacher", "T1", "teachers.csv", 2),
        ("teacher:T2", "teacher", "T2", "teachers.csv", 3),
        ("teacher:T2", "teacher", "T2", "teachers.csv", 4),
        ("student:ST1", "student", "ST1", "students.csv", 2),
        ("student:ST2", "student", "ST2", "students.csv", 3),
        ("student:ST3", "student", "ST3", "students.csv", 4),
        ("student:ST3", "student", "ST3", "students.csv", 5),
        ("student:ST4", "student", "ST4", "students.csv", 6),
        ("parent:email:dana.diaz@gmail.com", "parent", None, "students.csv", 2),
        ("parent:email:dana.diaz@gmail.com", "parent", None, "students.csv", 3),
        ("parent:phone:+16173332211", "parent", None, "students.csv", 4),
        ("parent:email:hana.park@yahoo.com", "parent", None, "students.csv", 5),
    ]
    students = roster.people.filter(pl.col("role") == "student")
    assert rows_of(students, "first_name", "last_name", "dob", "grade")[:3] == [
        ("Cara", "Diaz", dt.date(2016, 3, 4), "3"),
        ("Eli", "Diaz", dt.date(2018, 5, 6), "K"),
        ("Finn", "Park", dt.date(2016, 7, 8), "3"),
    ]
    assert rows_of(roster.school_memberships, "person_key", "school_id", "role") == [
        ("teacher:T1", "S1", "teacher"),
        ("teacher:T2", "S1", "teacher"),
        ("teacher:T2", "S2", "teacher"),  # a teacher at two schools: two memberships
        ("student:ST1", "S1", "student"),
        ("student:ST2", "S1", "student"),
        ("student:ST3", "S1", "student"),
        ("student:ST3", "S1", "student"),
        ("student:ST4", "S2", "student"),
        ("parent:email:dana.diaz@gmail.com", "S1", "parent"),
        ("parent:email:dana.diaz@gmail.com", "S1", "parent"),
        ("parent:phone:+16173332211", "S1", "parent"),
        ("parent:email:hana.park@yahoo.com", "S1", "parent"),
    ]
    assert rows_of(
        roster.contacts, "person_key", "kind", "value", "raw_value", "source_column", "src_row"
    ) == [
        ("teacher:T1", "email", "ann.lee@lincoln.k12.us", "Ann.Lee@Lincoln.k12.us", "teacher_email", 2),
        ("teacher:T2", "email", "bob.ray@lincoln.k12.us", "bob.ray@lincoln.k12.us", "teacher_email", 3),
        ("teacher:T2", "email", "bob.ray@lincoln.k12.us", "bob.ray@lincoln.k12.us", "teacher_email", 4),
        ("teacher:T2", "phone", "+12122013344", "(212) 201-3344", "teacher_mobile_phone", 3),
        ("teacher:T2", "phone", "+12122013344", "(212) 201-3344", "teacher_mobile_phone", 4),
        ("student:ST3", "email", "finn@students.org", "finn@students.org", "student_email", 4),
        ("student:ST3", "email", "finn@students.org", "finn@students.org", "student_email", 5),
        ("parent:email:dana.diaz@gmail.com", "email", "dana.diaz@gmail.com", "dana.diaz@gmail.com", "guardian_email", 2),
        ("parent:email:dana.diaz@gmail.com", "email", "dana.diaz@gmail.com", "Dana.Diaz@Gmail.com", "guardian_email", 3),
        ("parent:email:hana.park@yahoo.com", "email", "hana.park@yahoo.com", "hana.park@yahoo.com", "guardian_email", 5),
        ("parent:phone:+16173332211", "phone", "+16173332211", "617.333.2211", "guardian_phone", 4),
    ]  # fmt: skip
    assert rows_of(roster.classes, "class_id", "school_id", "name", "owner_person_key", "src_row") == [
        ("C1", "S1", "Grade 3 Homeroom", "teacher:T1", 2),
        ("C2", "S1", "Art, Section A", "teacher:T2", 3),  # a quoted comma
        ("C3", "S2", "YMCA Club", "teacher:T2", 4),
    ]  # fmt: skip
    assert rows_of(roster.enrollments, "class_id", "person_key", "role", "src_row") == [
        ("C1", "student:ST1", "student", 2),
        ("C1", "student:ST2", "student", 3),
        ("C1", "student:ST3", "student", 4),
        ("C2", "student:ST1", "student", 5),
        ("C3", "student:ST4", "student", 6),
        ("C2", "teacher:T1", "teacher", 7),
    ]
    # Siblings ST1 and ST2 share one parent (the email differs only in case).
    assert rows_of(roster.guardianships, "parent_person_key", "student_person_key", "src_row") == [
        ("parent:email:dana.diaz@gmail.com", "student:ST1", 2),
        ("parent:email:dana.diaz@gmail.com", "student:ST2", 3),
        ("parent:phone:+16173332211", "student:ST3", 4),
        ("parent:email:hana.park@yahoo.com", "student:ST3", 5),
    ]  # fmt: skip
    assert roster.counts() == {
        "schools": 2,
        "teachers": 3,
        "students": 5,
        "parents": 4,
        "classes": 3,
        "enrollments": 6,
    }


def test_the_rows_follow_the_files_order_whichever_file_is_built_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files' rows are built in threads; "first row wins" needs them in the files'
    order (schools, teachers, students, ...), not in the order the threads finish."""
    folder = write_drop(tmp_path)
    expected = parse(folder)
    # The first file's rows finish last, the last file's first.
    delays = {
        (build, files): 0.1 * (4 - remind_csv.REQUIRED_FILES.index(files[0]))
        for build, files in remind_csv._BUILDERS
    }

    def slowed(build, delay: float):
        def slow(*args: object) -> None:
            time.sleep(delay)
            build(*args)

        return slow

    monkeypatch.setattr(
        remind_csv,
        "_BUILDERS",
        tuple((slowed(build, delays[(build, files)]), files) for build, files in delays),
    )

    roster = parse(folder)

    for name, frame in expected.tables().items():
        assert roster.tables()[name].equals(frame), name
    assert roster.issues.equals(expected.issues)
    assert rows_of(roster.people, "role")[:3] == [("teacher",), ("teacher",), ("teacher",)]


def test_crlf_shuffled_and_padded_headers_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    """Columns match by (trimmed) name; blank and all-empty lines still count as rows."""
    folder = write_drop(tmp_path, newline="\r\n", bom=["teachers.csv"])
    (folder / "schools.csv").write_bytes(
        BOM
        + b" school_name ,extra, school_id\r\n"
        + b"Lincoln Elementary,x,S1\r\n"
        + b"\r\n"
        + b",,\r\n"
        + b'"Boys & Girls Club, Eastside",y,S2\r\n'
    )
    roster = parse(folder)
    # Padded names are matched with an alert; the extra column is ignored with an alert;
    # blank and all-empty rows are ignored with an alert each (nothing goes silently).
    assert rows_of(roster.issues, "code", "severity", "file", "row", "field") == [
        ("COLUMN_NAME_FIXED", "alert", "schools.csv", 1, "school_name"),
        ("COLUMN_UNKNOWN", "alert", "schools.csv", 1, "extra"),
        ("COLUMN_NAME_FIXED", "alert", "schools.csv", 1, "school_id"),
        ("ROW_EMPTY", "alert", "schools.csv", 3, None),
        ("ROW_EMPTY", "alert", "schools.csv", 4, None),
    ]
    assert rows_of(roster.schools, "school_id", "name", "org_type", "src_row") == [
        ("S1", "Lincoln Elementary", "school", 2),
        ("S2", "Boys & Girls Club, Eastside", "program", 5),
    ]
    assert roster.people["person_key"].to_list()[:3] == ["teacher:T1", "teacher:T2", "teacher:T2"]


@pytest.mark.parametrize(
    ("name", "org_type"),
    [
        ("YWCA Youth Center", "program"),
        ("Eastside Afterschool", "program"),
        ("Camp Fire Lakeside", "program"),
        ("Summer Programs", "program"),
        ("Campbell Middle School", "school"),
        ("Clubview Elementary", "school"),
        ("Lincoln High School", "school"),
    ],
)
def test_programs_are_recognised_by_whole_words(tmp_path: Path, name: str, org_type: str) -> None:
    rows = base_rows()
    rows["schools.csv"][0][1] = name
    roster = parse(write_drop(tmp_path, rows))
    assert roster.schools["org_type"][0] == org_type


def test_values_are_trimmed_and_names_cleaned(tmp_path: Path) -> None:
    rows = base_rows()
    rows["teachers.csv"][0] = [
        " S1 ",
        " T1 ",
        "  Ann  Marie ",
        "Lee ",
        " Ann.Lee@Lincoln.k12.us ",
        " ",
    ]
    roster = parse(write_drop(tmp_path, rows))
    assert rows_of(roster.people.head(1), "person_key", "first_name", "last_name") == [
        ("teacher:T1", "Ann Marie", "Lee")
    ]
    assert roster.school_memberships["school_id"][0] == "S1"
    assert roster.issues.height == 0  # an all-blank phone is no phone


def test_windows_1252_file_loads_with_an_alert(tmp_path: Path) -> None:
    rows = base_rows()
    rows["students.csv"][0][2] = "Zoë"
    rows["students.csv"][0][3] = "Muñoz"
    folder = write_drop(tmp_path, rows)
    write_drop(tmp_path, rows, encoding="cp1252", omit=[n for n in COLUMNS if n != "students.csv"])
    roster = parse(folder)
    assert not roster.rejected
    assert issue_tuples(roster) == [("FILE_NOT_UTF8", "alert", "students.csv", None, None)]
    assert rows_of(roster.people.filter(pl.col("sis_id") == "ST1"), "first_name", "last_name") == [
        ("Zoë", "Muñoz")
    ]


# --- file-level problems ------------------------------------------------------------------


def _assert_rejected(roster: canonical.Roster) -> None:
    assert roster.rejected
    for name, frame in roster.tables().items():
        assert frame.is_empty(), name
        assert frame.schema == canonical.TABLE_SCHEMAS[name], name


def test_missing_file_rejects_the_drop(tmp_path: Path) -> None:
    roster = parse(write_drop(tmp_path, omit=["classes.csv"]))
    _assert_rejected(roster)
    assert issue_tuples(roster) == [("FILE_MISSING", "file_error", "classes.csv", None, None)]
    assert roster.issues["message"].to_list() == [
        "classes.csv is missing from the drop; every drop needs all five files"
    ]


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    headers = {"teachers.csv": [c for c in COLUMNS["teachers.csv"] if c != "teacher_email"]}
    rows = base_rows()
    rows["teachers.csv"] = [r[:4] + r[5:] for r in rows["teachers.csv"]]
    roster = parse(write_drop(tmp_path, rows, headers=headers))
    _assert_rejected(roster)
    assert rows_of(roster.issues, "code", "severity", "file", "field", "message") == [
        (
            "COLUMN_MISSING",
            "file_error",
            "teachers.csv",
            "teacher_email",
            "teachers.csv has no column teacher_email in its header row",
        )
    ]


def test_header_names_match_whatever_their_case_with_an_alert(tmp_path: Path) -> None:
    # Issue 3 changed this deliberately: "School_ID" used to be COLUMN_MISSING.
    headers = {"schools.csv": ["School_ID", "school_name"]}
    roster = parse(write_drop(tmp_path, headers=headers))
    assert not roster.rejected
    assert rows_of(roster.issues, "code", "file", "row", "field", "message") == [
        (
            "COLUMN_NAME_FIXED",
            "schools.csv",
            1,
            "school_id",
            "schools.csv row 1: column School_ID was read as school_id",
        )
    ]
    assert roster.schools["school_id"].to_list() == ["S1", "S2"]


def test_every_file_level_problem_is_reported_at_once(tmp_path: Path) -> None:
    rows = base_rows()
    rows["schools.csv"] = []
    rows["enrollments.csv"] = [["C1", "ST1"]]
    folder = write_drop(
        tmp_path,
        rows,
        omit=["classes.csv"],
        headers={"enrollments.csv": ["class_id", "student_id"]},
    )
    (folder / "teachers.csv").write_bytes(b"")
    roster = parse(folder)
    _assert_rejected(roster)
    assert rows_of(roster.issues, "code", "file", "field") == [
        ("FILE_EMPTY", "schools.csv", None),
        ("HEADER_MISSING", "teachers.csv", None),
        ("FILE_MISSING", "classes.csv", None),
        ("COLUMN_UNKNOWN", "enrollments.csv", "student_id"),
        ("COLUMN_MISSING", "enrollments.csv", "school_id"),
        ("COLUMN_MISSING", "enrollments.csv", "user_id"),
    ]


@pytest.mark.parametrize("name", ["schools.csv", "teachers.csv", "students.csv"])
def test_files_that_need_rows_cannot_be_empty(tmp_path: Path, name: str) -> None:
    rows = base_rows()
    rows[name] = [[""] * len(COLUMNS[name])]  # an all-empty row is no row (an alert)
    roster = parse(write_drop(tmp_path, rows))
    _assert_rejected(roster)
    assert rows_of(roster.issues, "code", "severity", "file", "message") == [
        (
            "ROW_EMPTY",
            "alert",
            name,
            f"{name} row 2 is empty (no value in any column the sync reads); it was ignored",
        ),
        ("FILE_EMPTY", "file_error", name, f"{name} has no data rows; the drop needs some"),
    ]


def test_classes_and_enrollments_may_be_empty(tmp_path: Path) -> None:
    rows = base_rows()
    rows["classes.csv"] = []
    rows["enrollments.csv"] = []
    roster = parse(write_drop(tmp_path, rows))
    assert not roster.rejected
    assert roster.issues.height == 0
    assert roster.classes.height == 0 and roster.enrollments.height == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"school_id,school_name\n\x00\x01\x02",
            "schools.csv is not a CSV text file (it contains NUL bytes: "
            "a spreadsheet or UTF-16 export?)",
        ),
        (
            "school_id,school_name\nS1,Lincoln\n".encode("utf-16"),
            "schools.csv is not a CSV text file (it contains NUL bytes: "
            "a spreadsheet or UTF-16 export?)",
        ),
        (
            b"school_id,school_name\nS1,\x81\x8d\xc3\n",
            "schools.csv is neither UTF-8 nor Windows-1252 text",
        ),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, message: str) -> None:
    folder = write_drop(tmp_path)
    (folder / "schools.csv").write_bytes(content)
    roster = parse(folder)
    _assert_rejected(roster)
    assert rows_of(roster.issues, "code", "severity", "file", "message") == [
        ("FILE_UNREADABLE", "file_error", "schools.csv", message)
    ]


def test_a_row_with_more_fields_than_the_header_is_ragged(tmp_path: Path) -> None:
    # Issue 3: a ragged row is ROW_RAGGED naming the row and column (was FILE_UNREADABLE).
    folder = write_drop(tmp_path)
    (folder / "schools.csv").write_bytes(b"school_id,school_name\nS1,Smith, Jr. Elementary\n")
    roster = parse(folder)
    _assert_rejected(roster)
    assert rows_of(roster.issues, "code", "severity", "file", "row", "field", "message") == [
        (
            "ROW_RAGGED",
            "file_error",
            "schools.csv",
            2,
            "column 3",
            "schools.csv row 2 has 3 values but the header has 2 columns: value 3 "
            "(' Jr. Elementary') has no column (a value with a comma that is not in quotes?)",
        )
    ]


def test_ragged_rows_are_found_when_the_file_holds_the_right_number_of_commas(
    tmp_path: Path,
) -> None:
    # Row 2 has a value too many and row 3 one too few: the file's comma count is that
    # of three good rows (a screen by counts alone would pass it); both are reported.
    folder = write_drop(tmp_path)
    (folder / "schools.csv").write_bytes(
        b"school_id,school_name\nS1,Smith, Jr. Elementary\nS2 Riverside\n"
    )
    roster = parse(folder)
    _assert_rejected(roster)
    assert rows_of(roster.issues, "code", "row", "field") == [
        ("ROW_RAGGED", 2, "column 3"),
        ("ROW_RAGGED", 3, "column 2"),
    ]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("last_newline", [True, False])
def test_a_plain_file_is_read_the_same_with_either_line_ending(
    tmp_path: Path, newline: bytes, last_newline: bool
) -> None:
    folder = write_drop(tmp_path)
    rows = [b"school_id,school_name", b"S1,Lincoln Elementary", b"S2,Riverside"]
    (folder / "schools.csv").write_bytes(newline.join(rows) + (newline if last_newline else b""))
    roster = parse(folder)
    assert rows_of(roster.schools, "school_id", "name", "src_row") == [
        ("S1", "Lincoln Elementary", 2),
        ("S2", "Riverside", 3),
    ]
    assert not roster.issues.filter(pl.col("file") == "schools.csv").height


# --- row-level problems found while parsing -------------------------------------------------


def test_teacher_without_valid_email_is_an_error_once_per_row(tmp_path: Path) -> None:
    rows = base_rows()
    rows["teachers.csv"][0][4] = "ann.lee@"
    rows["teachers.csv"][1][4] = ""
    rows["teachers.csv"][1][5] = "555-12"
    roster = parse(write_drop(tmp_path, rows))
    assert issue_tuples(roster) == [
        ("TEACHER_EMAIL_INVALID", "error", "teachers.csv", 2, "teacher_id=T1"),
        ("TEACHER_EMAIL_INVALID", "error", "teachers.csv", 3, "teacher_id=T2"),
        ("PHONE_INVALID", "alert", "teachers.csv", 3, "teacher_id=T2"),
    ]
    assert rows_of(roster.issues, "field", "value", "message") == [
        (
            "teacher_email",
            "ann.lee@",
            "teachers.csv row 2: teacher T1's email 'ann.lee@' is not valid; "
            "every teacher needs a valid email",
        ),
        (
            "teacher_email",
            None,
            "teachers.csv row 3: teacher T2 has no email; every teacher needs one",
        ),
        (
            "teacher_mobile_phone",
            "555-12",
            "teachers.csv row 3: teacher_mobile_phone '555-12' of teacher T2 is not valid "
            "and was not used",
        ),
    ]
    # Invalid contacts are not in the table; the row's other data is.
    assert rows_of(roster.contacts.filter(pl.col("src_file") == "teachers.csv"), "person_key", "kind", "src_row") == [
        ("teacher:T2", "email", 4),
        ("teacher:T2", "phone", 4),
    ]  # fmt: skip
    assert roster.people.height == 12


def test_messages_stay_on_one_line(tmp_path: Path) -> None:
    rows = base_rows()
    rows["students.csv"][0][6] = "cara\n@x"  # a quoted value with a line break
    roster = parse(write_drop(tmp_path, rows))
    assert roster.issues["message"].to_list() == [
        "students.csv row 2: student_email 'cara @x' of student ST1 is not valid and was not used"
    ]
    assert roster.issues["value"].to_list() == ["cara\n@x"]


def test_student_and_guardian_alerts(tmp_path: Path) -> None:
    rows = base_rows()
    rows["students.csv"][0][4] = "2016-02-30"  # ST1 dob
    rows["students.csv"][0][6] = "cara@"  # ST1 email
    rows["students.csv"][0][7] = "12345"  # ST1 phone
    rows["students.csv"][4][8:] = ["Jo", "Chen", "jo.chen@", "(415) 555-267"]  # no valid contact
    rows["students.csv"][1][10] = "dana@gmail"  # ST2's guardian email invalid: no phone either
    roster = parse(write_drop(tmp_path, rows))
    assert issue_tuples(roster) == [
        ("DOB_INVALID", "alert", "students.csv", 2, "student_id=ST1"),
        ("EMAIL_INVALID", "alert", "students.csv", 2, "student_id=ST1"),
        ("PHONE_INVALID", "alert", "students.csv", 2, "student_id=ST1"),
        ("EMAIL_INVALID", "alert", "students.csv", 3, "student_id=ST2"),
        ("EMAIL_INVALID", "alert", "students.csv", 6, "student_id=ST4"),
        ("PHONE_INVALID", "alert", "students.csv", 6, "student_id=ST4"),
        ("GUARDIAN_NO_CONTACT", "alert", "students.csv", 3, "student_id=ST2"),
        ("GUARDIAN_NO_CONTACT", "alert", "students.csv", 6, "student_id=ST4"),
    ]
    by_code = dict(zip(roster.issues["code"], roster.issues["message"], strict=False))
    assert by_code["DOB_INVALID"] == (
        "students.csv row 2: dob '2016-02-30' of student ST1 is not a YYYY-MM-DD date; not used"
    )
    assert roster.issues.filter(pl.col("code") == "GUARDIAN_NO_CONTACT")["message"].to_list() == [
        "students.csv row 3: guardian Dana Diaz of student ST2 has no valid email or phone, "
        "so no parent account was made",
        "students.csv row 6: guardian Jo Chen of student ST4 has no valid email or phone, "
        "so no parent account was made",
    ]
    st1 = roster.people.filter(pl.col("person_key") == "student:ST1")
    assert st1["dob"].to_list() == [None]
    # No parent for ST2 or ST4; Dana stays ST1's parent.
    assert rows_of(roster.guardianships, "parent_person_key", "student_person_key") == [
        ("parent:email:dana.diaz@gmail.com", "student:ST1"),
        ("parent:phone:+16173332211", "student:ST3"),
        ("parent:email:hana.park@yahoo.com", "student:ST3"),
    ]


def test_guardian_with_names_only_and_none_at_all(tmp_path: Path) -> None:
    rows = base_rows()
    rows["students.csv"][4][8:] = ["", "Chen", "", ""]
    roster = parse(write_drop(tmp_path, rows))
    assert issue_tuples(roster) == [
        ("GUARDIAN_NO_CONTACT", "alert", "students.csv", 6, "student_id=ST4")
    ]
    rows["students.csv"][4][8:] = ["", "", "", ""]
    roster = parse(write_drop(tmp_path / "again", rows))
    assert roster.issues.height == 0  # no guardian, no issue


def test_parent_keyed_by_phone_when_the_email_is_missing(tmp_path: Path) -> None:
    rows = base_rows()
    rows["students.csv"][0][10:] = ["", "(650) 293-2864"]
    rows["students.csv"][1][10:] = ["", "650-293-2864"]
    roster = parse(write_drop(tmp_path, rows))
    assert roster.guardianships["parent_person_key"].to_list()[:2] == [
        "parent:phone:+16502932864",
        "parent:phone:+16502932864",
    ]


def test_guardian_row_without_email_joins_the_same_named_guardian_with_that_phone(
    tmp_path: Path,
) -> None:
    rows = base_rows()
    # Dana has a phone on ST1's row; on ST2's row her email is mistyped.
    rows["students.csv"][0][11] = "(650) 293-2864"
    rows["students.csv"][1][10:] = ["dana.diaz@gmail", "650.293.2864"]
    # Gus (phone only) shares a household phone with Hana, who has an email: not the same name.
    rows["students.csv"][3][11] = "617.333.2211"
    roster = parse(write_drop(tmp_path, rows))
    assert rows_of(roster.guardianships, "parent_person_key", "student_person_key") == [
        ("parent:email:dana.diaz@gmail.com", "student:ST1"),
        ("parent:email:dana.diaz@gmail.com", "student:ST2"),
        ("parent:phone:+16173332211", "student:ST3"),
        ("parent:email:hana.park@yahoo.com", "student:ST3"),
    ]
    assert issue_tuples(roster) == [("EMAIL_INVALID", "alert", "students.csv", 3, "student_id=ST2")]


def test_enrollment_user_ids_resolve_to_teachers_and_students(tmp_path: Path) -> None:
    rows = base_rows()
    # "7" is both a teacher and a student id.
    rows["teachers.csv"].append(["S1", "7", "Gil", "Moe", "gil.moe@lincoln.k12.us", ""])
    rows["students.csv"].append(
        ["S1", "7", "Kim", "Moe", "2015-01-01", "4", "", "", "", "", "", ""]
    )
    rows["classes.csv"].append(["S1", "C7", "7", "Music"])
    rows["enrollments.csv"] = [
        ["S1", "C7", "7"],  # 2: the owner of C7 is teacher 7
        ["S1", "C1", "7"],  # 3: ambiguous: read as the student
        ["S1", "C1", "NOPE"],  # 4: neither
        ["S1", "C1", ""],  # 5: empty
    ]
    roster = parse(write_drop(tmp_path, rows))
    assert rows_of(roster.enrollments, "class_id", "person_key", "role", "src_row") == [
        ("C7", "teacher:7", "teacher", 2),
        ("C1", "student:7", "student", 3),
        ("C1", "unknown:NOPE", None, 4),
        ("C1", None, None, 5),
    ]
    assert issue_tuples(roster) == [
        (
            "USER_ID_AMBIGUOUS",
            "alert",
            "enrollments.csv",
            3,
            format_ids({"class_id": "C1", "user_id": "7"}),
        )
    ]
    assert roster.issues["message"][0] == (
        "enrollments.csv row 3: user 7 is both a teacher id and a student id; "
        "it was read as student 7"
    )
