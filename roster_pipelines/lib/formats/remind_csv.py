"""Remind CSV 1.0 (SYNC_RULES F1): five CSV files in one folder → a parsed `Roster`.

Reading (every issue of a file names the file; of a row, also its row)
- All five files are required (FILE_MISSING); columns are matched by header name, never
  by position. A name that matches only once trimmed and case-folded ("School_ID ",
  "TEACHER_EMAIL") is used with a COLUMN_NAME_FIXED alert; a column the format does not
  have is ignored with a COLUMN_UNKNOWN alert; a required column that appears twice is
  COLUMN_DUPLICATE and one that is absent COLUMN_MISSING (file errors).
- UTF-8 with or without BOM. A file that is not UTF-8 but is Windows-1252 is read as
  such with a FILE_NOT_UTF8 alert; a file that is neither, holds NUL bytes (a spreadsheet
  or UTF-16 file), starts like a ZIP/Excel/PDF/gzip file or is mostly control
  characters is FILE_UNREADABLE. A file without even a header row is HEADER_MISSING.
- Records are read as RFC 4180 CSV: CRLF, LF or mixed line ends; quoted values with
  commas, doubled quotes and line breaks. Row numbers are records, as a spreadsheet
  shows them (header = row 1; a value with a line break does not shift later rows; a
  blank line is a row). A row with more or fewer values than the header is ROW_RAGGED
  and a quote never closed is FILE_UNREADABLE (file errors naming row and column).
  A clean file is screened in one vectorised pass (`_lines_agree`) and read by polars;
  anything the screen cannot vouch for is walked with the csv module (`_scan`), whose
  records the row numbers follow.
- Every value is trimmed; an empty value is null. A row with no value in any required
  column (",,,," or a blank line) is ignored with a ROW_EMPTY alert. A row that repeats
  an earlier row of its file exactly (enrollments: the same class_id and user_id) is
  ignored with a ROW_REPEATED alert. So no row goes without being applied or named.
- schools.csv, teachers.csv and students.csv need at least one data row (FILE_EMPTY).
- Any file-level problem rejects the drop: `Roster(rejected=True)` with every issue
  found while reading (and empty tables).

Building the canonical tables (row-level checks that need the whole drop are in
`contracts`)
- schools: ``org_type`` is "program" when the name contains one of the words YMCA,
  YWCA, Club(s), Program(s)/Programme(s), After-School/Afterschool, Camp(s).
- people: one row per source row (a teacher per school, a student per guardian, a
  parent per child); `contracts` merges the repeats. Teachers ``teacher:<teacher_id>``,
  students ``student:<student_id>``, parents keyed by their first valid contact point,
  ``parent:email:<email>`` else ``parent:phone:<e164>`` (siblings share a parent). A
  guardian row with no valid email whose phone and name match a guardian row with an
  email is that parent (same email key), so a mistyped or missing email on one child's
  row does not split the parent in two. A guardian with names but no valid email or
  phone gives no parent (GUARDIAN_NO_CONTACT alert); a row with every guardian column
  empty has no guardian and no issue.
- dob must be YYYY-MM-DD (zero padding optional); otherwise null dob + DOB_INVALID alert.
  grade: `normalize.canonical_grade` onto `GRADE_LEVELS` (PK, K, 1..12); a value that is
  not recognisably one of them ("Ungraded", "13") gives a null grade + GRADE_INVALID alert.
- contacts: normalised emails (lower case) and phones (E.164, region US). An invalid
  student or guardian value is dropped with EMAIL_INVALID / PHONE_INVALID (alert). A
  teachers.csv row without a valid teacher_email is TEACHER_EMAIL_INVALID (error, raised
  here only, once per row; `contracts` skips the row); an invalid teacher phone is a
  PHONE_INVALID alert.
- school_memberships: teacher and student rows; a parent is a member of the school of
  each student row that names them.
- enrollments: ``user_id`` is looked up among the teacher and the student ids. An id
  that is both is the TEACHER when that teacher owns the class (a teacher enrolled in
  their own class), otherwise the STUDENT, with a USER_ID_AMBIGUOUS alert. An id that is
  neither keeps ``person_key = "unknown:<user_id>"`` and a null role; `contracts`
  reports it as UNKNOWN_USER. enrollments.csv's school_id is not used (the class
  decides the school).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from roster_pipelines.lib import canonical as c
from roster_pipelines.lib.issues import (
    AT,
    FILE_ERROR,
    concat_issues,
    format_ids,
    has_file_errors,
    ids_expr,
    issue_frame,
    issue_row,
    issues_frame,
    text,
)
from roster_pipelines.lib.normalize import (
    GRADE_LEVELS,
    canonical_grade_series,
    clean_name_expr,
    normalize_email_series,
    normalize_phone_series,
    trimmed_expr,
)

FORMAT = "remind-csv-1.0"

SCHOOLS = "schools.csv"
TEACHERS = "teachers.csv"
STUDENTS = "students.csv"
CLASSES = "classes.csv"
ENROLLMENTS = "enrollments.csv"

COLUMNS: dict[str, tuple[str, ...]] = {
    SCHOOLS: ("school_id", "school_name"),
    TEACHERS: (
        "school_id",
        "teacher_id",
        "teacher_first_name",
        "teacher_last_name",
        "teacher_email",
        "teacher_mobile_phone",
    ),
    STUDENTS: (
        "school_id",
        "student_id",
        "student_first_name",
        "student_last_name",
        "dob",
        "grade",
        "student_email",
        "student_phone",
        "guardian_first_name",
        "guardian_last_name",
        "guardian_email",
        "guardian_phone",
    ),
    CLASSES: ("school_id", "class_id", "teacher_id", "class_name"),
    ENROLLMENTS: ("school_id", "class_id", "user_id"),
}
REQUIRED_FILES: tuple[str, ...] = tuple(COLUMNS)
NEEDS_DATA_ROWS = (SCHOOLS, TEACHERS, STUDENTS)

PHONE_REGION = "US"
PROGRAM_WORDS = r"(?i)\b(?:ymca|ywca|clubs?|programs?|programmes?|after[- ]?school|camps?)\b"
_BOM = b"\xef\xbb\xbf"


# --- reading ----------------------------------------------------------------------------

# Magic numbers of files that are not CSV text but are sometimes exported instead.
_NOT_CSV = {
    b"PK\x03\x04": "a ZIP archive or an Excel .xlsx workbook",
    b"\xd0\xcf\x11\xe0": "an Excel .xls workbook",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip archive",
}
# Control characters that never appear in CSV text (tab, CR and LF do).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_SHARE = 0.01  # of the first 64 KiB: more than this is binary, not text
_HEADER_SPAN = 1 << 20  # characters read for the header row
# Rows reported by ROW_RAGGED per file (the drop is rejected either way); then a summary.
RAGGED_REPORTED = 10


# The ids that name a row of each file in issues.
_ROW_IDS: dict[str, tuple[str, ...]] = {
    SCHOOLS: ("school_id",),
    TEACHERS: ("teacher_id", "school_id"),
    STUDENTS: ("student_id", "school_id"),
    CLASSES: ("class_id",),
    ENROLLMENTS: ("class_id", "user_id"),
}


def _file_issue(
    code: str,
    name: str,
    message: str,
    field: str | None = None,
    row: int | None = None,
    value: str | None = None,
    ids: str | None = None,
) -> dict[str, object]:
    return issue_row(
        code, file=name, row=row, ids=ids or None, field=field, value=value, message=message
    )


def _decode(name: str, data: bytes) -> tuple[str | None, list[dict[str, object]]]:
    """The file as text (UTF-8 BOM removed), or None when it is not text we can read."""
    for magic, what in _NOT_CSV.items():
        if data.startswith(magic):
            return None, [
                _file_issue("FILE_UNREADABLE", name, f"{name} is not a CSV text file: it is {what}")
            ]
    data = data.removeprefix(_BOM)
    if b"\x00" in data:
        return None, [
            _file_issue(
                "FILE_UNREADABLE",
                name,
                f"{name} is not a CSV text file (it contains NUL bytes: "
                "a spreadsheet or UTF-16 export?)",
            )
        ]
    issues: list[dict[str, object]] = []
    try:
        text_ = data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text_ = data.decode("cp1252")
        except UnicodeDecodeError:
            return None, [
                _file_issue(
                    "FILE_UNREADABLE", name, f"{name} is neither UTF-8 nor Windows-1252 text"
                )
            ]
        issues.append(
            _file_issue(
                "FILE_NOT_UTF8",
                name,
                f"{name} is not UTF-8; it was read as Windows-1252, check accented names",
            )
        )
    head = text_[:65536]
    if head and len(_CONTROL.findall(head)) > _CONTROL_SHARE * len(head):
        return None, [
            *issues,
            _file_issue(
                "FILE_UNREADABLE",
                name,
                f"{name} is not a CSV text file (it is full of control characters: binary data?)",
            ),
        ]
    return text_, issues


def _header(name: str, header: list[str]) -> tuple[dict[int, str], list[dict[str, object]]]:
    """Position → required column, matched by trimmed, case-insensitive name, and the
    header's issues (row 1)."""
    columns = COLUMNS[name]
    wanted = {col.casefold(): col for col in columns}
    found: dict[int, str] = {}
    issues: list[dict[str, object]] = []
    seen: dict[str, int] = {}
    for position, raw in enumerate(header):
        clean = raw.replace("\ufeff", "").strip()
        col = wanted.get(clean.casefold())
        shown = repr(raw) if raw != clean or not raw else raw
        if col is None:
            issues.append(
                _file_issue(
                    "COLUMN_UNKNOWN",
                    name,
                    f"{name} row 1: column {position + 1} {shown or repr(raw)} is not a column "
                    "of the format; it was ignored",
                    field=clean or None,
                    row=1,
                    value=raw,
                )
            )
            continue
        if col in seen:
            issues.append(
                _file_issue(
                    "COLUMN_DUPLICATE",
                    name,
                    f"{name} row 1: column {col} appears twice (columns {seen[col] + 1} and "
                    f"{position + 1})",
                    field=col,
                    row=1,
                    value=raw,
                )
            )
            continue
        seen[col] = position
        found[position] = col
        if clean != col or raw != clean:
            issues.append(
                _file_issue(
                    "COLUMN_NAME_FIXED",
                    name,
                    f"{name} row 1: column {shown} was read as {col}",
                    field=col,
                    row=1,
                    value=raw,
                )
            )
    issues += [
        _file_issue(
            "COLUMN_MISSING", name, f"{name} has no column {col} in its header row", field=col
        )
        for col in columns
        if col not in seen
    ]
    return found, issues


def _blank(record: list[str]) -> bool:
    return all(not value.strip() for value in record)


def _scan(name: str, text_: str, width: int) -> tuple[int, list[dict[str, object]]]:
    """Walk the records with the csv module: (number of records including the header,
    ROW_RAGGED issues). A blank record (an empty line) is not ragged. Row n is the n-th record (header = 1), the row
    a spreadsheet shows, whatever line breaks sit inside quoted values."""
    ragged: list[dict[str, object]] = []
    n_ragged = 0
    records = 0
    reader = csv.reader(io.StringIO(text_, newline=""))
    record: list[str] = []
    for row, record in enumerate(reader, start=1):  # the last record is checked below
        records = row
        if row == 1 or len(record) == width:
            continue
        if _blank(record):
            continue
        n_ragged += 1
        if n_ragged > RAGGED_REPORTED:
            continue
        if len(record) > width:
            extra = next((i for i in range(width, len(record)) if record[i].strip()), width)
            ragged.append(
                _file_issue(
                    "ROW_RAGGED",
                    name,
                    f"{name} row {row} has {len(record)} values but the header has {width} "
                    f"columns: value {extra + 1} ('{record[extra]}') has no column (a value with "
                    "a comma that is not in quotes?)",
                    field=f"column {extra + 1}",
                    row=row,
                    value=record[extra],
                )
            )
        else:
            ragged.append(
                _file_issue(
                    "ROW_RAGGED",
                    name,
                    f"{name} row {row} has {len(record)} values but the header has {width} "
                    f"columns: column {len(record) + 1} onwards is missing",
                    field=f"column {len(record) + 1}",
                    row=row,
                )
            )
    last = record[-1] if record else ""
    if last and text_.endswith(last) and text_[: -len(last)].endswith('"'):
        # The csv module reads a quote that is never closed as one value up to the end.
        ragged.append(
            _file_issue(
                "FILE_UNREADABLE",
                name,
                f"{name} row {records}: a quote opened in this row is never closed, so the "
                "rest of the file would read as one value",
                field=f"column {len(record)}",
                row=records,
            )
        )
    if n_ragged > RAGGED_REPORTED:
        ragged.append(
            _file_issue(
                "ROW_RAGGED",
                name,
                f"{name} has {n_ragged - RAGGED_REPORTED} more rows whose number of values "
                f"differs from the header's {width} columns",
            )
        )
    return records, ragged


def _lines_agree(utf8: bytes, width: int) -> int | None:
    """A vectorised screen for the common case, so that a big clean file needs no Python
    loop: when no line holds an odd number of quotes (no value spans lines) and every
    line that is not blank has `width` values outside its quoted values, the number of
    records (= lines); otherwise None, and `_scan` decides."""
    try:
        # Lines as polars reads them with no quoting and a separator that CSV text never
        # holds (a value cut at a stray \x1f only makes the count lower: never a false pass
        # for long rows, which `_polars_frame` catches).
        lines = pl.read_csv(
            utf8,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            schema={"line": pl.String},
            infer_schema=False,
            truncate_ragged_lines=True,
            missing_columns="insert",
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError:
        return None
    lines = lines.with_columns(pl.col("line").fill_null("").str.strip_suffix("\r")).with_columns(
        quotes=pl.col("line").str.count_matches('"', literal=True),
    )
    if lines.select(((pl.col("quotes") % 2) == 1).any()).item():
        return None
    fits = (pl.col("line").str.count_matches(",", literal=True) == width - 1) | (
        pl.col("line").str.strip_chars() == ""
    )
    plain = lines.filter(pl.col("quotes") == 0).select(fits.all()).item()
    quoted = lines.filter(pl.col("quotes") > 0).with_columns(
        pl.col("line").str.replace_all(r'"(?:[^"]|"")*"', "")
    )
    ok = plain and quoted.select(fits.all()).item()
    return lines.height if ok else None


def _polars_frame(utf8: bytes, width: int, records: int) -> pl.DataFrame | None:
    """Every record as a row of `width` String columns c0.. (header included), read by
    polars; None when polars sees a record the csv module would not (more values than
    the header, or a different number of records)."""
    schema = {f"c{i}": pl.String for i in range(width + 1)}
    try:
        frame = pl.read_csv(
            utf8,
            has_header=False,
            schema=schema,
            infer_schema=False,
            truncate_ragged_lines=True,
            missing_columns="insert",
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError:
        return None
    if frame.height != records or frame[f"c{width}"].null_count() != frame.height:
        return None
    return frame.drop(f"c{width}")


def _python_frame(text_: str, width: int) -> pl.DataFrame:
    """The csv module's records (which the row numbers follow) as `_polars_frame` does:
    for what polars reads otherwise (a lone CR as line end, a stray quote)."""
    schema = {f"c{i}": pl.String for i in range(width)}
    rows = [
        (record + [""] * width)[:width] for record in csv.reader(io.StringIO(text_, newline=""))
    ]
    return pl.DataFrame(rows, schema=schema, orient="row")


def read_file(folder: Path, name: str) -> tuple[pl.DataFrame | None, list[dict[str, object]]]:
    """One file's required columns (trimmed, empty → null) plus src_row, and its issues.

    The frame is None when the file has a file-level problem.
    """
    path = folder / name
    if not path.is_file():
        return None, [
            _file_issue(
                "FILE_MISSING",
                name,
                f"{name} is missing from the drop; every drop needs all five files",
            )
        ]
    try:
        raw = path.read_bytes()
    except OSError as err:
        return None, [
            _file_issue("FILE_UNREADABLE", name, f"{name} cannot be read: {err.strerror or err}")
        ]
    text_, issues = _decode(name, raw)
    if text_ is None:
        return None, issues
    try:
        # The header row from the file's start (a StringIO of the whole text costs a copy).
        header = next(csv.reader(io.StringIO(text_[:_HEADER_SPAN], newline="")), [])
        if _blank(header):
            return None, [
                *issues,
                _file_issue(
                    "HEADER_MISSING",
                    name,
                    f"{name} is empty: it has no header row"
                    if not text_.strip()
                    else f"{name} row 1 is empty: the header row must come first",
                    row=None if not text_.strip() else 1,
                ),
            ]
        positions, header_issues = _header(name, header)
        issues += header_issues
        width = len(header)
        header_ok = all(i["severity"] != FILE_ERROR for i in header_issues)
        # The UTF-8 bytes polars reads: the file's own unless it was Windows-1252.
        cp1252 = any(i["code"] == "FILE_NOT_UTF8" for i in issues)
        utf8 = text_.encode("utf-8") if cp1252 else raw.removeprefix(_BOM)
        records = _lines_agree(utf8, width) if header_ok else None
        frame = None if records is None else _polars_frame(utf8, width, records)
        if frame is None:
            records, ragged = _scan(name, text_, width)
            issues += ragged
    except csv.Error as err:
        return None, [
            *issues,
            _file_issue(
                "FILE_UNREADABLE",
                name,
                f"{name} cannot be read as CSV: {err} (a quote that is never closed?)",
            ),
        ]
    if has_file_errors(issues_frame(issues)):
        return None, issues
    if frame is None:
        frame = _polars_frame(utf8, width, records)
    if frame is None:
        frame = _python_frame(text_, width)
    frame = (
        frame.with_row_index("src_row", offset=1)
        .slice(1)
        .select(
            pl.col("src_row").cast(pl.Int64),
            *[trimmed_expr(pl.col(f"c{i}")).alias(col) for i, col in positions.items()],
        )
        .select("src_row", *COLUMNS[name])
        .with_columns(src_file=pl.lit(name))
    )
    empty = ~pl.any_horizontal([pl.col(col).is_not_null() for col in COLUMNS[name]])
    issues += [
        _file_issue(
            "ROW_EMPTY",
            name,
            f"{name} row {row} is empty (no value in any column the sync reads); it was ignored",
            row=row,
        )
        for row in frame.filter(empty)["src_row"].to_list()
    ]
    frame = frame.filter(~empty)
    key = list(COLUMNS[name][1:] if name == ENROLLMENTS else COLUMNS[name])
    # Rows whose hash repeats are the candidates (few); among them, exact repeats.
    candidates = frame.filter(frame.select(key).hash_rows(seed=7).is_duplicated())
    if candidates.height:
        repeats = candidates.with_columns(
            first_row=pl.col("src_row").min().over(key),
            _first=pl.struct(key).is_first_distinct(),
        ).filter(~pl.col("_first"))
        what = "enrollment of " if name == ENROLLMENTS else ""
        issues += [
            _file_issue(
                "ROW_REPEATED",
                name,
                f"{name} row {r['src_row']}: {what}"
                + (f"{r['user_id']} in class {r['class_id']} " if name == ENROLLMENTS else "")
                + f"repeats row {r['first_row']}; the repeat was ignored",
                row=r["src_row"],
                ids=format_ids({k: r[k] for k in _ROW_IDS[name]}),
            )
            for r in repeats.select("src_row", "first_row", *key).iter_rows(named=True)
        ]
        frame = frame.join(
            repeats.select("src_row"), on="src_row", how="anti", maintain_order="left"
        )
    if name in NEEDS_DATA_ROWS and frame.is_empty():
        issues.append(
            _file_issue("FILE_EMPTY", name, f"{name} has no data rows; the drop needs some")
        )
    return frame, issues


# --- building ---------------------------------------------------------------------------

_SRC = ("src_file", "src_row")


def _key(prefix: str, column: str) -> pl.Expr:
    """``"<prefix><value>"``, null when the value is null."""
    return pl.concat_str(pl.lit(prefix), pl.col(column))


def _people(
    frame: pl.DataFrame,
    key: pl.Expr,
    role: str,
    names: tuple[str, str],
    sis_id: str | None = None,
    dob: pl.Expr | None = None,
    grade: pl.Expr | None = None,
) -> pl.DataFrame:
    return frame.select(
        *_SRC,
        person_key=key,
        role=pl.lit(role),
        sis_id=pl.lit(None, pl.String) if sis_id is None else pl.col(sis_id),
        first_name=clean_name_expr(pl.col(names[0])),
        last_name=clean_name_expr(pl.col(names[1])),
        dob=pl.lit(None, pl.Date) if dob is None else dob,
        grade=pl.lit(None, pl.String) if grade is None else grade,
    )


def _memberships(frame: pl.DataFrame, key: pl.Expr, role: str) -> pl.DataFrame:
    return frame.select(*_SRC, person_key=key, school_id="school_id", role=pl.lit(role))


def _contacts(frame: pl.DataFrame, key: pl.Expr, kind: str, value: str, raw: str) -> pl.DataFrame:
    """Contacts from column `raw` (normalised in column `value`); invalid ones are left out."""
    return frame.filter(pl.col(value).is_not_null() & key.is_not_null()).select(
        *_SRC,
        person_key=key,
        kind=pl.lit(kind),
        value=value,
        raw_value=raw,
        source_column=pl.lit(raw),
    )


def _invalid(
    frame: pl.DataFrame, code: str, raw: str, value: str, ids: pl.Expr, whose: pl.Expr
) -> pl.DataFrame:
    """`code` alerts for rows whose `raw` value is there but did not normalise."""
    return issue_frame(
        frame.filter(pl.col(raw).is_not_null() & pl.col(value).is_null()),
        code,
        ids=ids,
        field=raw,
        value=pl.col(raw),
        message=text(*AT, raw, " '", pl.col(raw), "' of ", whose, " is not valid and was not used"),
    )


def _normalised(
    frame: pl.DataFrame, emails: dict[str, str], phones: dict[str, str]
) -> pl.DataFrame:
    return frame.with_columns(
        *[normalize_email_series(frame[raw]).alias(out) for raw, out in emails.items()],
        *[
            normalize_phone_series(frame[raw], PHONE_REGION).alias(out)
            for raw, out in phones.items()
        ],
    )


def _who(role: str, column: str) -> pl.Expr:
    return pl.concat_str(pl.lit(f"{role} "), pl.col(column).fill_null("(no id)"))


class _Parts:
    """The canonical rows and issues the files of a drop contribute, table by table."""

    def __init__(self) -> None:
        self.tables: dict[str, list[pl.DataFrame]] = {name: [] for name in c.TABLE_SCHEMAS}
        self.issues: list[pl.DataFrame] = []

    @classmethod
    def joined(cls, parts: list[_Parts]) -> _Parts:
        """One `_Parts` of `parts`' rows and issues, in that order."""
        out = cls()
        for part in parts:
            for table, frames in part.tables.items():
                out.tables[table] += frames
            out.issues += part.issues
        return out

    def frame(self, table: str) -> pl.DataFrame:
        schema = c.TABLE_SCHEMAS[table]
        parts = [p.select(list(schema)).cast(dict(schema)) for p in self.tables[table]]
        return pl.concat([c.empty(table), *parts], how="vertical")


def _teachers(frame: pl.DataFrame, out: _Parts) -> None:
    t = _normalised(frame, {"teacher_email": "email"}, {"teacher_mobile_phone": "phone"})
    key = _key(f"{c.ROLE_TEACHER}:", "teacher_id")
    ids = ids_expr([("teacher_id", pl.col("teacher_id"))])
    who = _who("teacher", "teacher_id")
    out.issues += [
        issue_frame(
            t.filter(pl.col("email").is_null()),
            "TEACHER_EMAIL_INVALID",
            ids=ids,
            field="teacher_email",
            value=pl.col("teacher_email"),
            message=pl.when(pl.col("teacher_email").is_null())
            .then(text(*AT, who, " has no email; every teacher needs one"))
            .otherwise(
                text(
                    *AT,
                    who,
                    "'s email '",
                    pl.col("teacher_email"),
                    "' is not valid; every teacher needs a valid email",
                )
            ),
        ),
        _invalid(t, "PHONE_INVALID", "teacher_mobile_phone", "phone", ids, who),
    ]
    out.tables["people"].append(
        _people(t, key, c.ROLE_TEACHER, ("teacher_first_name", "teacher_last_name"), "teacher_id")
    )
    out.tables["school_memberships"].append(_memberships(t, key, c.ROLE_TEACHER))
    out.tables["contacts"] += [
        _contacts(t, key, c.CONTACT_EMAIL, "email", "teacher_email"),
        _contacts(t, key, c.CONTACT_PHONE, "phone", "teacher_mobile_phone"),
    ]


_GUARDIAN_COLUMNS = (
    "guardian_first_name",
    "guardian_last_name",
    "guardian_email",
    "guardian_phone",
)


def _same_guardian_by_phone(s: pl.DataFrame) -> pl.DataFrame:
    """A guardian row without a valid email whose phone and name (case-insensitive) match
    a guardian row that has a valid email is that parent: it takes the email key (the
    alphabetically first, should several match). Siblings then share the parent even when
    one child's row lacks the email or has it mistyped."""
    candidates = s.filter(pl.col("g_email").is_null() & pl.col("g_phone").is_not_null())
    if candidates.is_empty():
        return s
    donors = s.filter(pl.col("g_email").is_not_null()).join(
        candidates.select("g_phone").unique(), on="g_phone", how="semi"
    )
    name = pl.concat_str(
        clean_name_expr(pl.col("guardian_first_name")).str.to_lowercase(),
        clean_name_expr(pl.col("guardian_last_name")).str.to_lowercase(),
        separator="|",
        ignore_nulls=True,
    )
    name = pl.when(name != "").then(name).alias("_g_name")
    email_keys = (
        donors.with_columns(name)
        .group_by("g_phone", "_g_name")
        .agg(_email_key=pl.col("parent_key").min())
    )
    rekeyed = candidates.with_columns(name).join(email_keys, on=["g_phone", "_g_name"], how="inner")
    # By row number (one per row of the file): a join carried every column of the file.
    email_key = pl.col("src_row").replace_strict(
        rekeyed["src_row"], rekeyed["_email_key"], default=None, return_dtype=pl.String
    )
    return s.with_columns(parent_key=pl.coalesce(email_key, "parent_key"))


def _students(frame: pl.DataFrame, out: _Parts) -> None:
    s = (
        _normalised(
            frame,
            {"student_email": "email", "guardian_email": "g_email"},
            {"student_phone": "phone", "guardian_phone": "g_phone"},
        )
        .with_columns(
            birth=pl.col("dob").str.to_date("%Y-%m-%d", strict=False),
            grade_level=canonical_grade_series(frame["grade"]),
        )
        .with_columns(
            grade_ok=pl.col("grade_level").is_in(GRADE_LEVELS).fill_null(False),
            parent_key=pl.when(pl.col("g_email").is_not_null())
            .then(_key(f"{c.ROLE_PARENT}:{c.CONTACT_EMAIL}:", "g_email"))
            .otherwise(_key(f"{c.ROLE_PARENT}:{c.CONTACT_PHONE}:", "g_phone")),
            has_guardian=pl.any_horizontal([pl.col(g).is_not_null() for g in _GUARDIAN_COLUMNS]),
        )
    )
    s = _same_guardian_by_phone(s)
    key = _key(f"{c.ROLE_STUDENT}:", "student_id")
    parent = pl.col("parent_key")
    ids = ids_expr([("student_id", pl.col("student_id"))])
    who = _who("student", "student_id")
    guardian_name = pl.concat_str(
        "guardian_first_name", "guardian_last_name", separator=" ", ignore_nulls=True
    )
    with_parent = s.filter(parent.is_not_null())
    out.issues += [
        issue_frame(
            s.filter(pl.col("grade").is_not_null() & ~pl.col("grade_ok")),
            "GRADE_INVALID",
            ids=ids,
            field="grade",
            value=pl.col("grade"),
            message=text(
                *AT,
                "grade '",
                pl.col("grade"),
                "' of ",
                who,
                " is not a grade level (PK, K, 1-12); not used",
            ),
        ),
        issue_frame(
            s.filter(pl.col("dob").is_not_null() & pl.col("birth").is_null()),
            "DOB_INVALID",
            ids=ids,
            field="dob",
            value=pl.col("dob"),
            message=text(
                *AT, "dob '", pl.col("dob"), "' of ", who, " is not a YYYY-MM-DD date; not used"
            ),
        ),
        _invalid(s, "EMAIL_INVALID", "student_email", "email", ids, who),
        _invalid(s, "PHONE_INVALID", "student_phone", "phone", ids, who),
        _invalid(s, "EMAIL_INVALID", "guardian_email", "g_email", ids, who),
        _invalid(s, "PHONE_INVALID", "guardian_phone", "g_phone", ids, who),
        issue_frame(
            s.filter(pl.col("has_guardian") & parent.is_null()),
            "GUARDIAN_NO_CONTACT",
            ids=ids,
            message=text(
                *AT,
                "guardian ",
                pl.when(guardian_name != "").then(guardian_name).otherwise(pl.lit("(no name)")),
                " of ",
                who,
                " has no valid email or phone, so no parent account was made",
            ),
        ),
    ]
    out.tables["people"] += [
        _people(
            s,
            key,
            c.ROLE_STUDENT,
            ("student_first_name", "student_last_name"),
            "student_id",
            dob=pl.col("birth"),
            grade=pl.when(pl.col("grade_ok")).then(pl.col("grade_level")),
        ),
        _people(with_parent, parent, c.ROLE_PARENT, ("guardian_first_name", "guardian_last_name")),
    ]
    out.tables["school_memberships"] += [
        _memberships(s, key, c.ROLE_STUDENT),
        _memberships(with_parent, parent, c.ROLE_PARENT),
    ]
    out.tables["contacts"] += [
        _contacts(s, key, c.CONTACT_EMAIL, "email", "student_email"),
        _contacts(s, key, c.CONTACT_PHONE, "phone", "student_phone"),
        _contacts(s, parent, c.CONTACT_EMAIL, "g_email", "guardian_email"),
        _contacts(s, parent, c.CONTACT_PHONE, "g_phone", "guardian_phone"),
    ]
    out.tables["guardianships"].append(
        with_parent.select(*_SRC, parent_person_key=parent, student_person_key=key)
    )


def _enrollments(
    frame: pl.DataFrame,
    teachers: pl.DataFrame,
    students: pl.DataFrame,
    classes: pl.DataFrame,
    out: _Parts,
) -> None:
    owners = classes.select("class_id", owner_id="teacher_id").unique(
        "class_id", keep="first", maintain_order=True
    )
    user = pl.col("user_id")
    e = frame.join(owners, on="class_id", how="left", maintain_order="left").with_columns(
        is_teacher=user.is_in(teachers["teacher_id"].drop_nulls().unique().implode()),
        is_student=user.is_in(students["student_id"].drop_nulls().unique().implode()),
        owns=(user == pl.col("owner_id")).fill_null(False),
    )
    e = e.with_columns(
        role=pl.when(pl.col("is_teacher") & (pl.col("owns") | ~pl.col("is_student")))
        .then(pl.lit(c.ROLE_TEACHER))
        .when(pl.col("is_student"))
        .then(pl.lit(c.ROLE_STUDENT))
    ).with_columns(person_key=pl.concat_str(pl.col("role").fill_null(c.UNKNOWN), pl.lit(":"), user))
    out.issues.append(
        issue_frame(
            e.filter(pl.col("is_teacher") & pl.col("is_student") & ~pl.col("owns")),
            "USER_ID_AMBIGUOUS",
            ids=ids_expr([("class_id", pl.col("class_id")), ("user_id", user)]),
            field="user_id",
            value=user,
            message=text(
                *AT,
                "user ",
                user,
                " is both a teacher id and a student id; it was read as student ",
                user,
            ),
        )
    )
    out.tables["enrollments"].append(e.select(*_SRC, "class_id", "person_key", "role"))


def _schools(frame: pl.DataFrame, out: _Parts) -> None:
    schools = frame.with_columns(name=clean_name_expr(pl.col("school_name")))
    out.tables["schools"].append(
        schools.with_columns(
            org_type=pl.when(pl.col("name").str.contains(PROGRAM_WORDS).fill_null(False))
            .then(pl.lit(c.ORG_PROGRAM))
            .otherwise(pl.lit(c.ORG_SCHOOL))
        )
    )


def _classes(frame: pl.DataFrame, out: _Parts) -> None:
    out.tables["classes"].append(
        frame.with_columns(
            name=clean_name_expr(pl.col("class_name")),
            owner_person_key=_key(f"{c.ROLE_TEACHER}:", "teacher_id"),
        )
    )


# Each file's rows are built by one of these from the files it names (its own first),
# the largest files first: they are read, and their rows built, in this order.
_BUILDERS: tuple[tuple[Callable[..., None], tuple[str, ...]], ...] = (
    (_students, (STUDENTS,)),
    (_enrollments, (ENROLLMENTS, TEACHERS, STUDENTS, CLASSES)),
    (_teachers, (TEACHERS,)),
    (_classes, (CLASSES,)),
    (_schools, (SCHOOLS,)),
)


def parse(drop_dir: Path) -> c.Roster:
    """The drop in `drop_dir` as a parsed `Roster` (see the module doc for the rules)."""
    folder = Path(drop_dir)
    # Three files at a time, then each file's rows built at once: much of polars' work
    # here runs on one column, on one core, so one file at a time kept 1.5 of the two
    # cores busy. The rows and issues are put together in the files' order ("first row
    # wins" follows it), whatever finished first.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="parse") as pool:
        reading = {files[0]: pool.submit(read_file, folder, files[0]) for _, files in _BUILDERS}
        read = {name: reading[name].result() for name in REQUIRED_FILES}
        file_issues = issues_frame([issue for _, issues in read.values() for issue in issues])
        if has_file_errors(file_issues):
            return c.Roster(rejected=True, issues=file_issues)
        frames = {name: frame for name, (frame, _) in read.items() if frame is not None}
        built = {
            files[0]: pool.submit(_built, builder, [frames[name] for name in files])
            for builder, files in _BUILDERS
        }
        out = _Parts.joined([built[name].result() for name in REQUIRED_FILES])
    return c.Roster(
        **{table: out.frame(table) for table in c.TABLE_SCHEMAS},
        issues=concat_issues(file_issues, *out.issues),
    )


def _built(builder: Callable[..., None], frames: list[pl.DataFrame]) -> _Parts:
    part = _Parts()
    builder(*frames, part)
    return part
