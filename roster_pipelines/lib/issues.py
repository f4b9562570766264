"""The issue model and the catalogue of every issue code.

Severities (SYNC_RULES "Errors and alerts"):
- ``file_error``: the drop is rejected; nothing applies.
- ``error``: the row is skipped (and what depends on it); the rest applies.
- ``alert``: applied, but incomplete or suspicious.

Every code lives in `CATALOGUE` with its severity, meaning and remediation hint,
so the report, the CLI and the issue CSVs all say the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

FILE_ERROR = "file_error"
ERROR = "error"
ALERT = "alert"
SEVERITIES = (FILE_ERROR, ERROR, ALERT)

ISSUES_SCHEMA = pl.Schema(
    {
        "code": pl.String,
        "severity": pl.String,
        "file": pl.String,
        "row": pl.Int64,
        "ids": pl.String,
        "field": pl.String,
        "value": pl.String,
        "message": pl.String,
        "remediation": pl.String,
    }
)


@dataclass(frozen=True)
class IssueType:
    code: str
    severity: str
    meaning: str
    remediation: str


def _t(code: str, severity: str, meaning: str, remediation: str) -> tuple[str, IssueType]:
    return code, IssueType(code, severity, meaning, remediation)


CATALOGUE: dict[str, IssueType] = dict(
    [
        # File level: the whole drop is rejected.
        _t(
            "FILE_MISSING",
            FILE_ERROR,
            "A required file is not in the drop.",
            "Export all five files on every drop, even when one has no data rows.",
        ),
        _t(
            "COLUMN_MISSING",
            FILE_ERROR,
            "A required column is missing from a file's header row.",
            "Add the column to the export; see the format's column list.",
        ),
        _t(
            "FILE_UNREADABLE",
            FILE_ERROR,
            "The file cannot be read as CSV text.",
            "Export the file again as a UTF-8 CSV file.",
        ),
        _t(
            "FILE_EMPTY",
            FILE_ERROR,
            "A file that needs data rows has none.",
            "Check the SIS export: schools, teachers and students cannot be empty.",
        ),
        # Row level errors: the row is not applied.
        _t(
            "DUPLICATE_ID",
            ERROR,
            "The same id appears on more than one row with different data.",
            "Give every record its own id; the first row was used.",
        ),
        _t("ID_MISSING", ERROR, "A row has no id.", "Fill in the id column for this row."),
        _t(
            "UNKNOWN_SCHOOL",
            ERROR,
            "A row names a school_id that is not in schools.csv.",
            "Add the school to schools.csv or correct the school_id.",
        ),
        _t(
            "UNKNOWN_CLASS",
            ERROR,
            "An enrollment names a class_id that is not in classes.csv.",
            "Add the class to classes.csv or correct the class_id.",
        ),
        _t(
            "UNKNOWN_USER",
            ERROR,
            "An enrollment names a user_id that is neither a teacher nor a student.",
            "Add the person to teachers.csv or students.csv or correct the user_id.",
        ),
        _t(
            "UNKNOWN_TEACHER",
            ERROR,
            "A class names a teacher_id that is not in teachers.csv.",
            "Add the teacher or correct the class's teacher_id.",
        ),
        _t(
            "TEACHER_EMAIL_INVALID",
            ERROR,
            "A teacher has no valid email address.",
            "Every teacher needs a valid email; fix teacher_email.",
        ),
        _t(
            "CLASS_SKIPPED",
            ERROR,
            "The row depends on a class that was not applied.",
            "Fix the class's own error; this row then applies.",
        ),
        _t(
            "PERSON_SKIPPED",
            ERROR,
            "The row depends on a person who was not applied.",
            "Fix the person's own error; this row then applies.",
        ),
        _t("NAME_MISSING", ERROR, "A required name is empty.", "Fill in the first and last name."),
        # Alerts: applied, but the district should fix the SIS.
        _t(
            "EMAIL_INVALID",
            ALERT,
            "An email address is not valid and was not used.",
            "Correct the email address in the SIS.",
        ),
        _t(
            "PHONE_INVALID",
            ALERT,
            "A phone number is not valid and was not used.",
            "Correct the phone number in the SIS (include the area code).",
        ),
        _t(
            "DOB_INVALID",
            ALERT,
            "A date of birth is not a valid YYYY-MM-DD date and was not used.",
            "Correct the date of birth in the SIS.",
        ),
        _t(
            "REPEATED_ROW_DISAGREES",
            ALERT,
            "Rows for the same record disagree; the first row was used.",
            "Make the repeated rows agree in the SIS.",
        ),
        _t(
            "GUARDIAN_NO_CONTACT",
            ALERT,
            "A guardian has no valid email or phone, so no account was made.",
            "Add an email or mobile phone for the guardian.",
        ),
        _t(
            "CONTACT_CONFLICT",
            ALERT,
            "The same email or phone belongs to several people; one kept it.",
            "Give each person their own email or phone in the SIS.",
        ),
        _t(
            "DROP_OUT_OF_ORDER",
            FILE_ERROR,
            "The drop is older than a drop already applied for the district.",
            "Send a new drop; a data-team member can force an older drop with --force.",
        ),
        _t(
            "CONTACT_IN_USE",
            ALERT,
            "An email or phone already belongs to another account in the app.",
            "Check whether the person already has an account; an administrator can merge the two.",
        ),
        _t(
            "ENROLLMENT_SCHOOL_MISMATCH",
            ALERT,
            "A person is enrolled in a class at a school they are not listed at.",
            "List the person at the class's school, or correct the enrollment.",
        ),
        _t(
            "NAME_TOO_LONG",
            ERROR,
            "A name is longer than the format allows.",
            "Shorten the name in the SIS.",
        ),
        # Added with the Remind CSV adapter and the contracts.
        _t(
            "HEADER_MISSING",
            FILE_ERROR,
            "A file has no header row (it is completely empty).",
            "Export the file with its header row, even when it has no data rows.",
        ),
        _t(
            "FILE_NOT_UTF8",
            ALERT,
            "The file is not UTF-8; it was read as Windows-1252.",
            "Export the file as UTF-8 so that accented names arrive intact.",
        ),
        _t(
            "SCHOOL_SKIPPED",
            ERROR,
            "The row depends on a school that was not applied.",
            "Fix the school's own error; this row then applies.",
        ),
        _t(
            "TEACHER_EMAIL_TAKEN",
            ERROR,
            "A teacher's only email also belongs to another teacher, who kept it.",
            "Give every teacher their own email address.",
        ),
        _t(
            "VALUE_INVALID",
            ERROR,
            "A value is not one of the values the sync understands.",
            "Use one of the values the format allows.",
        ),
        _t(
            "USER_ID_AMBIGUOUS",
            ALERT,
            "An enrollment's user_id is both a teacher id and a student id; it was read as the student unless that teacher owns the class.",
            "Use ids that are unique across teachers and students (for example, prefix teacher ids).",
        ),
        # Added with issue 3 (reading real files; the rest of the catalogue).
        _t(
            "COLUMN_DUPLICATE",
            FILE_ERROR,
            "A required column appears more than once in a file's header row.",
            "Keep one column of each name; the sync cannot tell which one holds the data.",
        ),
        _t(
            "ROW_RAGGED",
            FILE_ERROR,
            "A row has more or fewer values than the header row has columns.",
            "Quote values that contain commas or line breaks, and give every row one value per column.",
        ),
        _t(
            "COLUMN_NAME_FIXED",
            ALERT,
            "A column name differs from the format's name in case or surrounding spaces; it was matched.",
            "Use the exact column names of the format in the export.",
        ),
        _t(
            "COLUMN_UNKNOWN",
            ALERT,
            "A column is not part of the format and was ignored.",
            "Remove the column from the export, or check it is not a misspelt required column.",
        ),
        _t(
            "ROW_EMPTY",
            ALERT,
            "A row has no value in any column the sync reads; it was ignored.",
            "Remove empty rows from the export.",
        ),
        _t(
            "ROW_REPEATED",
            ALERT,
            "A row repeats an earlier row of the same file exactly; the repeat was ignored.",
            "Remove the repeated row from the export.",
        ),
        _t(
            "GRADE_INVALID",
            ALERT,
            "A grade is not a grade level the sync knows (PK, K, 1-12); it was not used.",
            "Use PK, K or 1 to 12 (common spellings such as 'Grade 3' or 'KG' are understood).",
        ),
        _t(
            "TOO_MANY_GUARDIANS",
            ALERT,
            "A student has six or more guardians; the drop is held until an administrator confirms it.",
            "Check the student's guardian rows in the SIS; an administrator confirms or discards the held drop.",
        ),
        # Identity resolution and accounts (issue 4).
        _t(
            "IDENTITY_CONFLICT",
            ALERT,
            "A person's email and phone belong to two different app accounts; the person was linked by the stronger one (email) and the two accounts are merge candidates.",
            "Check whether the two accounts are one person; an administrator can merge them (roster-sync admin merge-accounts).",
        ),
        _t(
            "ACCOUNT_TAKEN",
            ALERT,
            "A contact point matches an app account that already belongs to another SIS person of the same role, so a new account was made.",
            "Give each person their own email or phone in the SIS.",
        ),
        _t(
            "CONTACT_VERIFIED_KEPT",
            ALERT,
            "The SIS has another email or phone for the person, but the account's verified one is never overwritten by a sync.",
            "Correct the contact in the SIS, or ask the person to change it in the app.",
        ),
    ]
)


def issue_row(
    code: str,
    *,
    file: str | None = None,
    row: int | None = None,
    ids: Mapping[str, str | None] | str | None = None,
    field: str | None = None,
    value: str | None = None,
    message: str,
) -> dict[str, object]:
    """One issue as a dict in `ISSUES_SCHEMA` order; severity and hint come from the catalogue."""
    issue_type = CATALOGUE[code]
    if isinstance(ids, Mapping):
        ids = format_ids(ids)
    return {
        "code": code,
        "severity": issue_type.severity,
        "file": file,
        "row": row,
        "ids": ids,
        "field": field,
        "value": value,
        "message": message,
        "remediation": issue_type.remediation,
    }


def format_ids(ids: Mapping[str, str | None]) -> str:
    return "; ".join(f"{k}={v}" for k, v in ids.items() if v is not None)


def issues_frame(rows: Iterable[Mapping[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=ISSUES_SCHEMA)


def with_catalogue(frame: pl.DataFrame, code: str) -> pl.DataFrame:
    """Vectorised issues: `frame` has file,row,ids,field,value,message; adds code/severity/hint."""
    issue_type = CATALOGUE[code]
    return frame.with_columns(
        code=pl.lit(code),
        severity=pl.lit(issue_type.severity),
        remediation=pl.lit(issue_type.remediation),
    ).select([pl.col(c).cast(t) for c, t in ISSUES_SCHEMA.items()])


def concat_issues(*frames: pl.DataFrame) -> pl.DataFrame:
    parts = [f.select(list(ISSUES_SCHEMA)).cast(dict(ISSUES_SCHEMA)) for f in frames if f.height]
    if not parts:
        return pl.DataFrame(schema=ISSUES_SCHEMA)
    return pl.concat(parts, how="vertical")


def has_file_errors(issues: pl.DataFrame) -> bool:
    return bool(issues.filter(pl.col("severity") == FILE_ERROR).height)


# --- vectorised issue helpers (used by the format adapters and the contracts) -----------


def ids_expr(pairs: Sequence[tuple[str | pl.Expr, pl.Expr]]) -> pl.Expr:
    """`format_ids` as an expression: "k=v; k2=v2", pairs with a null value left out."""
    parts = [
        pl.concat_str(pl.lit(key) if isinstance(key, str) else key, pl.lit("="), value)
        for key, value in pairs
    ]
    return pl.concat_str(parts, separator="; ", ignore_nulls=True)


def text(*parts: str | pl.Expr) -> pl.Expr:
    """A message: literal strings and expressions (nulls shown as "(empty)") joined."""
    return pl.concat_str(
        [pl.lit(p) if isinstance(p, str) else p.cast(pl.String).fill_null("(empty)") for p in parts]
    )


def issue_frame(
    rows: pl.DataFrame,
    code: str,
    *,
    ids: pl.Expr,
    message: pl.Expr,
    field: str | pl.Expr | None = None,
    value: pl.Expr | None = None,
) -> pl.DataFrame:
    """One issue per row of `rows` (which has src_file and src_row), in ISSUES_SCHEMA."""
    if rows.is_empty():
        return pl.DataFrame(schema=ISSUES_SCHEMA)
    return with_catalogue(
        rows.select(
            file=pl.col("src_file"),
            row=pl.col("src_row"),
            ids=ids,
            field=pl.lit(field, pl.String) if field is None or isinstance(field, str) else field,
            value=pl.lit(None, pl.String) if value is None else value.cast(pl.String),
            message=message.str.replace_all(r"\s*[\r\n]+\s*", " "),  # one line
        ),
        code,
    )


# The start of every row-level message: "<file> row <n>: ".
AT = (pl.col("src_file"), " row ", pl.col("src_row"), ": ")


def counts_by_code(issues: pl.DataFrame) -> dict[str, int]:
    """Issue counts per code, most frequent first (ties by code)."""
    by = issues.group_by("code").len().sort(["len", "code"], descending=[True, False])
    return dict(zip(by["code"].to_list(), by["len"].to_list(), strict=True))


def sample_messages(issues: pl.DataFrame, n: int = 10) -> list[str]:
    """The first `n` messages of each code, codes in `counts_by_code` order."""
    order = list(counts_by_code(issues))
    return [
        f"{code}: {message}"
        for code in order
        for message in issues.filter(pl.col("code") == code)["message"].head(n).to_list()
    ]
