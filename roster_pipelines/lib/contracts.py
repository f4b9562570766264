"""Contracts: a parsed `Roster` in, a clean and referentially consistent `Roster` out.

`validate` keeps every parsed issue, adds its own, and returns only rows that apply.
Field rules are pandera DataFrameModels (validated lazily; each failure case becomes an
issue on its row); cross-file rules are vectorised joins. Nothing here knows the input
format: rows are named by their ``src_file`` / ``src_row``.

How errors spread (SYNC_RULES "Errors and alerts": "the row is skipped, and so is what
depends on it"):

- A **source row** with an error (from the adapter or from here) is skipped whole: every
  canonical row made from it goes (a students.csv row is the student, the student's
  contacts and school membership, and the guardian link on that row).
- A **person** applies when at least one of their rows survives. A person can also fail
  as a whole (a teacher whose only email another teacher keeps). Rows elsewhere that need
  a person who did not apply are skipped with PERSON_SKIPPED; rows that need a class that
  did not apply with CLASS_SKIPPED; rows that need a school that did not apply with
  SCHOOL_SKIPPED. Each message names the cause (code, file and row).
- A source row gets at most one error per code (several canonical rows come from one
  source row; the first table's wording is kept). Field checks report every problem of a
  row; the cross-file checks after them run in a fixed order and a row is reported by
  the first one it fails: enrollments UNKNOWN_USER (before the field checks: an
  unresolved user has no role), then fields, UNKNOWN_CLASS, CLASS_SKIPPED,
  PERSON_SKIPPED; classes fields, DUPLICATE_ID, UNKNOWN_SCHOOL / SCHOOL_SKIPPED,
  UNKNOWN_TEACHER / PERSON_SKIPPED.

Repeats and duplicates ("first row wins"; "first" = first in the parsed table):

- schools and classes: a repeated id whose row is identical is dropped silently; one that
  differs is DUPLICATE_ID (error) on the later row.
- people: a person on several rows (a teacher per school, a student per guardian, a
  parent per child) is normal. When a later row disagrees on the person's data (names,
  dob, grade, and for teachers and students the email/phone on that row) it is
  REPEATED_ROW_DISAGREES (alert); the first row's data is used, including a teacher's or
  student's contacts. A parent's contact points identify them, so a parent keeps the
  contact points of all their rows. The later row still applies otherwise (its school
  membership, its guardian link). People never get DUPLICATE_ID: repeating a person is
  how the format lists several schools or guardians.

Contact points (one email or phone belongs to one person): the highest role keeps it
(teacher > parent > student), then the alphabetically first sis id, then person_key;
the others lose it with CONTACT_CONFLICT (alert). A teacher whose only email another
teacher keeps is TEACHER_EMAIL_TAKEN (error; the teacher is skipped). A parent left
with no contact point at all has no account: GUARDIAN_NO_CONTACT (alert) and their
guardian links and memberships go without further issues.

Guardians: a student with more than MAX_GUARDIANS (5) guardian links is a
TOO_MANY_GUARDIANS alert on the student's first guardian row, naming every row; the
links apply, and the plan's guard (`plan.MAX_GUARDIANS`) holds the drop (R10).

Result invariants (tested): people unique by person_key; every membership, contact,
enrollment and guardian link points at a person in people; every enrollment at a class
in classes; every class at a school in schools and an owner who is a teacher in people;
contacts unique by (kind, value); memberships unique by (person_key, school_id),
enrollments by (class_id, person_key), guardian links by the pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context

from roster_pipelines.lib import canonical as c
from roster_pipelines.lib.issues import (
    AT,
    ERROR,
    ISSUES_SCHEMA,
    concat_issues,
    ids_expr,
    issue_frame,
    text,
)

__all__ = ["AT", "MODELS", "ids_expr", "issue_frame", "text", "validate"]

SCHOOL_NAME_MAX = 60
# Six or more guardians on one student hold the drop (R10); the plan's guard
# (`plan.MAX_GUARDIANS`, the same number) holds it, this names the student and rows.
MAX_GUARDIANS = 5
CLASS_NAME_MAX = 255
# People's names: F1 sets no limit; the app stores at most 255 characters (store.models).
PERSON_NAME_MAX = 255
ENROLLMENT_ROLES = (c.ROLE_TEACHER, c.ROLE_STUDENT)

_SRC = ["src_file", "src_row"]
_FIELD_ORDER = (
    "schools",
    "school_memberships",
    "people",
    "contacts",
    "classes",
    "enrollments",
    "guardianships",
)


# --- people keys --------------------------------------------------------------------------


_role_of = c.key_role_expr
_id_of = c.key_id_expr  # the SIS id; for a parent, the contact point that keys them


def _id_label(key: pl.Expr) -> pl.Expr:
    role = _role_of(key)
    return (
        pl.when(role == c.ROLE_TEACHER)
        .then(pl.lit("teacher_id"))
        .when(role == c.ROLE_STUDENT)
        .then(pl.lit("student_id"))
        .when(role == c.ROLE_PARENT)
        .then(pl.lit("guardian"))
        .otherwise(pl.lit("user_id"))
    )


def _who(key: pl.Expr) -> pl.Expr:
    """ "teacher T1", "student S1", "guardian a@b.org", "user X"."""
    role = _role_of(key)
    word = pl.when(role == c.ROLE_PARENT).then(pl.lit("guardian")).otherwise(role)
    return pl.concat_str(word.fill_null("user"), pl.lit(" "), _id_of(key).fill_null("(no id)"))


def _person_ids(key: str) -> list[tuple[str | pl.Expr, pl.Expr]]:
    return [(_id_label(pl.col(key)), _id_of(pl.col(key)))]


# Ids and a short description of the row, per canonical table.
_IDS: dict[str, pl.Expr] = {
    "schools": ids_expr([("school_id", pl.col("school_id"))]),
    "people": ids_expr(_person_ids("person_key")),
    "school_memberships": ids_expr(
        [*_person_ids("person_key"), ("school_id", pl.col("school_id"))]
    ),
    "contacts": ids_expr(_person_ids("person_key")),
    "classes": ids_expr(
        [("class_id", pl.col("class_id")), ("teacher_id", _id_of(pl.col("owner_person_key")))]
    ),
    "enrollments": ids_expr(
        [("class_id", pl.col("class_id")), ("user_id", _id_of(pl.col("person_key")))]
    ),
    "guardianships": ids_expr(
        [
            ("student_id", _id_of(pl.col("student_person_key"))),
            ("guardian", _id_of(pl.col("parent_person_key"))),
        ]
    ),
}
_THING = {
    "schools": "school",
    "people": "person",
    "school_memberships": "school membership",
    "contacts": "contact",
    "classes": "class",
    "enrollments": "enrollment",
    "guardianships": "guardian link",
}


# --- field contracts (pandera) ------------------------------------------------------------


class _Sourced(pa.DataFrameModel):
    src_file: str = pa.Field(nullable=False)
    src_row: int = pa.Field(nullable=False)

    class Config:
        strict = True


class SchoolsModel(_Sourced):
    school_id: str = pa.Field(nullable=False)
    name: str = pa.Field(nullable=False, str_length={"max_value": SCHOOL_NAME_MAX})
    org_type: str = pa.Field(nullable=False, isin=[c.ORG_SCHOOL, c.ORG_PROGRAM])


class PeopleModel(_Sourced):
    person_key: str = pa.Field(nullable=False)
    role: str = pa.Field(nullable=False, isin=list(c.ROLES))
    sis_id: str = pa.Field(nullable=True)
    first_name: str = pa.Field(nullable=True, str_length={"max_value": PERSON_NAME_MAX})
    last_name: str = pa.Field(nullable=True, str_length={"max_value": PERSON_NAME_MAX})
    dob: pl.Date = pa.Field(nullable=True)
    grade: str = pa.Field(nullable=True)

    @pa.dataframe_check
    def names_present(cls, data) -> pl.LazyFrame:
        """Teachers and students need a first and a last name (a parent may have none)."""
        return data.lazyframe.select(
            (pl.col("role") == c.ROLE_PARENT).fill_null(True)
            | (pl.col("first_name").is_not_null() & pl.col("last_name").is_not_null())
        )


class SchoolMembershipsModel(_Sourced):
    person_key: str = pa.Field(nullable=False)
    school_id: str = pa.Field(nullable=False)
    role: str = pa.Field(nullable=False, isin=list(c.ROLES))


class ContactsModel(_Sourced):
    person_key: str = pa.Field(nullable=False)
    kind: str = pa.Field(nullable=False, isin=[c.CONTACT_EMAIL, c.CONTACT_PHONE])
    value: str = pa.Field(nullable=False)
    raw_value: str = pa.Field(nullable=True)
    source_column: str = pa.Field(nullable=True)


class ClassesModel(_Sourced):
    class_id: str = pa.Field(nullable=False)
    school_id: str = pa.Field(nullable=False)
    name: str = pa.Field(nullable=False, str_length={"max_value": CLASS_NAME_MAX})
    owner_person_key: str = pa.Field(nullable=False)


class EnrollmentsModel(_Sourced):
    class_id: str = pa.Field(nullable=False)
    person_key: str = pa.Field(nullable=False)
    role: str = pa.Field(nullable=False, isin=list(ENROLLMENT_ROLES))


class GuardianshipsModel(_Sourced):
    parent_person_key: str = pa.Field(nullable=False)
    student_person_key: str = pa.Field(nullable=False)


MODELS: dict[str, type[pa.DataFrameModel]] = {
    "schools": SchoolsModel,
    "people": PeopleModel,
    "school_memberships": SchoolMembershipsModel,
    "contacts": ContactsModel,
    "classes": ClassesModel,
    "enrollments": EnrollmentsModel,
    "guardianships": GuardianshipsModel,
}

_ID_COLUMNS = {
    "school_id",
    "class_id",
    "person_key",
    "owner_person_key",
    "parent_person_key",
    "student_person_key",
}
_NAME_COLUMNS = {"name"}
# Issue `field`s use the id names of `ids` ("teacher_id", "user_id", ...), not the
# canonical key columns.
_FIELD_NAMES = {
    "owner_person_key": "teacher_id",
    "parent_person_key": "guardian",
    "student_person_key": "student_id",
}


def _field_name(table: str) -> pl.Expr:
    """The issue field for the failing canonical column in "column"."""
    column = pl.col("column")
    if table == "enrollments":
        person = pl.lit("user_id")
    elif table in ("people", "school_memberships"):
        person = pl.concat_str(pl.col("role").fill_null("person"), pl.lit("_id"))
        person = pl.when(pl.col("role") == c.ROLE_PARENT).then(pl.lit("guardian")).otherwise(person)
    else:
        person = pl.lit("person_id")
    return pl.when(column == "person_key").then(person).otherwise(column.replace(_FIELD_NAMES))


def _field_failures(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Pandera's failure cases for `frame`: one row per (row index, column, check)."""
    schema = {"index": pl.Int64, "column": pl.String, "check": pl.String}
    try:
        with config_context(
            validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA
        ):
            MODELS[table].validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        failures = err.failure_cases.select(
            pl.col("index").cast(pl.Int64), pl.col("column"), pl.col("check")
        )
    else:
        return pl.DataFrame(schema=schema)
    broken = failures.filter(pl.col("index").is_null() | pl.col("column").is_in(_SRC))
    if broken.height:
        # A wrong dtype, a missing column or a row without src: a bug in the adapter.
        raise ValueError(f"{table} does not match the canonical schema:\n{broken}")
    return failures


def _field_issues(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    failures = _field_failures(table, frame)
    if failures.is_empty():
        return pl.DataFrame(schema=ISSUES_SCHEMA)
    # A row without its id is reported as ID_MISSING; the values derived from that id
    # (a role, a kind) are moot then.
    id_missing = failures.filter(
        (pl.col("check") == "not_nullable") & pl.col("column").is_in(list(_ID_COLUMNS))
    ).select("index")
    failures = failures.filter(
        ~pl.col("index").is_in(id_missing["index"].implode())
        | pl.col("column").is_in(list(_ID_COLUMNS | _NAME_COLUMNS))
        | (pl.col("check") == "names_present")
    )
    rows = frame.with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
    failed = failures.join(rows, on="index", how="inner").with_columns(
        code=pl.when(pl.col("check") == "not_nullable")
        .then(
            pl.when(pl.col("column").is_in(list(_ID_COLUMNS)))
            .then(pl.lit("ID_MISSING"))
            .when(pl.col("column").is_in(list(_NAME_COLUMNS)))
            .then(pl.lit("NAME_MISSING"))
            .otherwise(pl.lit("VALUE_INVALID"))
        )
        .when(pl.col("check").str.starts_with("str_length"))
        .then(pl.lit("NAME_TOO_LONG"))
        .when(pl.col("check") == "names_present")
        .then(pl.lit("NAME_MISSING"))
        .otherwise(pl.lit("VALUE_INVALID"))
    )
    if table == "people":
        missing_names = pl.concat_str(
            pl.when(pl.col("first_name").is_null()).then(pl.lit("first_name")),
            pl.when(pl.col("last_name").is_null()).then(pl.lit("last_name")),
            separator=", ",
            ignore_nulls=True,
        )
        failed = failed.with_columns(
            column=pl.when(pl.col("check") == "names_present")
            .then(missing_names)
            .otherwise(pl.col("column"))
        )
    what = _entity(table)
    value = _cell_value(table)
    parts = []
    for code in ("ID_MISSING", "NAME_MISSING", "NAME_TOO_LONG", "VALUE_INVALID"):
        rows_for_code = failed.filter(pl.col("code") == code)
        if rows_for_code.is_empty():
            continue
        # One issue per (code, row): several failing columns are listed together.
        grouped = rows_for_code.group_by("index", maintain_order=True).agg(
            pl.col("column").unique(maintain_order=True).str.join(", "),
            pl.exclude("column", "code", "check").first(),
            _field=_field_name(table).unique(maintain_order=True).str.join(", "),
            _label=_field_name(table)
            .str.replace("_id", " id", literal=True)
            .unique(maintain_order=True)
            .str.join(" and "),
            _value=value.first(),
        )
        limit = {"schools": SCHOOL_NAME_MAX, "people": PERSON_NAME_MAX}.get(table, CLASS_NAME_MAX)
        message = {
            "ID_MISSING": text(
                *AT,
                "the ",
                pl.col("_label"),
                pl.when(pl.col("_label").str.contains(" and "))
                .then(pl.lit(" are empty"))
                .otherwise(pl.lit(" is empty")),
            ),
            "NAME_MISSING": text(*AT, what, " has no ", pl.col("column")),
            "NAME_TOO_LONG": text(
                *AT,
                "the ",
                pl.col("column"),
                " of ",
                what,
                " is ",
                pl.col("_value").str.len_chars(),
                f" characters long (at most {limit})",
            ),
            "VALUE_INVALID": text(
                *AT, pl.col("column"), " '", pl.col("_value"), "' is not an allowed value"
            ),
        }[code]
        parts.append(
            issue_frame(
                grouped,
                code,
                ids=_IDS[table],
                field=pl.col("_field"),
                value=pl.col("_value"),
                message=message,
            )
        )
    return concat_issues(*parts)


def _entity(table: str) -> pl.Expr:
    """Who/what a row of `table` is about, for messages."""
    return {
        "schools": pl.concat_str(pl.lit("school "), pl.col("school_id").fill_null("(no id)")),
        "classes": pl.concat_str(pl.lit("class "), pl.col("class_id").fill_null("(no id)")),
    }.get(table, _who(pl.col("person_key")) if table != "guardianships" else pl.lit("row"))


def _cell_value(table: str) -> pl.Expr:
    """The failing cell's value as text (the column is in "column")."""
    columns = [n for n in c.TABLE_SCHEMAS[table] if n not in _SRC]
    expr = pl.lit(None, pl.String)
    for name in columns:
        expr = pl.when(pl.col("column") == name).then(pl.col(name).cast(pl.String)).otherwise(expr)
    return expr


# --- the validator ----------------------------------------------------------------------


def validate(parsed: c.Roster) -> c.Roster:
    """A clean, referentially consistent copy of `parsed` plus all issues (see module doc)."""
    if parsed.rejected:
        return parsed
    return _Validator(parsed).run()


def _conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    schema = c.TABLE_SCHEMAS[table]
    missing = [n for n in schema if n not in frame.columns]
    if missing:
        raise ValueError(f"{table} lacks canonical columns {missing}")
    return frame.select([pl.col(n).cast(t) for n, t in schema.items()])


def _duplicate_id_issues(
    differing: pl.DataFrame, table: str, id_column: str, noun: str
) -> pl.DataFrame:
    """DUPLICATE_ID for later rows that reuse an id with other data (the first row wins)."""
    return issue_frame(
        differing,
        "DUPLICATE_ID",
        ids=_IDS[table],
        field=id_column,
        value=pl.col(id_column),
        message=text(
            *AT,
            f"{noun} ",
            pl.col(id_column),
            " is also on row ",
            pl.col("first_row"),
            " with a different ",
            pl.col("fields"),
            "; row ",
            pl.col("first_row"),
            " was used",
        ),
    )


def _first_wins(
    frame: pl.DataFrame, key: str, compare: Sequence[str], first: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(first row per key, later rows that differ from it with `fields` and `first_row`).

    `frame` is in parsed order (or `first` names a column marking each key's first row);
    later rows identical on `compare` are simply dropped.
    """
    first_mask = pl.col(key).is_first_distinct() if first is None else pl.col(first)
    winners = frame.filter(first_mask)
    later = frame.filter(~first_mask)
    if later.is_empty():
        return winners, later.with_columns(
            fields=pl.lit(None, pl.String), first_row=pl.lit(None, pl.Int64)
        )
    firsts = winners.select(key, *compare, first_row="src_row")
    joined = later.join(firsts, on=key, how="left", suffix="__first")
    fields = pl.concat_str(
        [pl.when(pl.col(n).ne_missing(pl.col(f"{n}__first"))).then(pl.lit(n)) for n in compare],
        separator=", ",
        ignore_nulls=True,
    )
    differing = (
        joined.with_columns(fields=fields)
        .filter(pl.col("fields") != "")
        .select(*frame.columns, "fields", "first_row")
    )
    return winners, differing


def _rows_of(contacts: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """The contact points `rows` (person_key, src_file, src_row) gave: the few people of
    `rows` first, by key alone, then their rows (a join on the three columns hashed every
    contact point of the drop)."""
    keys = rows["person_key"].unique().implode()
    return contacts.filter(pl.col("person_key").is_in(keys)).join(
        rows, on=["person_key", *_SRC], how="semi"
    )


def _mark(frame: pl.DataFrame, column: str, keys: pl.Series, name: str) -> pl.DataFrame:
    """`frame` plus boolean column `name`: is the row's `column` value among `keys`?"""
    return frame.with_columns(pl.col(column).is_in(keys.implode()).fill_null(False).alias(name))


class _Validator:
    def __init__(self, parsed: c.Roster) -> None:
        self.parsed = parsed
        # Every table in parsed order, with `_i` (its position) to keep "first" stable.
        self.t = {
            name: _conform(name, frame).with_row_index("_i")
            for name, frame in parsed.tables().items()
        }
        self.new_issues: list[pl.DataFrame] = []
        self._errored: pl.DataFrame | None = None

    # -- bookkeeping ----------------------------------------------------------------------

    def add(self, *frames: pl.DataFrame) -> None:
        found = [f for f in frames if f.height]
        if found:
            self.new_issues.extend(found)
            self._errored = None

    def errored_rows(self) -> pl.DataFrame:
        """(src_file, src_row) of every row with an error so far, with its first code."""
        if self._errored is None:
            issues = concat_issues(self.parsed.issues, *self.new_issues)
            self._errored = (
                issues.filter((pl.col("severity") == ERROR) & pl.col("row").is_not_null())
                .group_by("file", "row", maintain_order=True)
                .agg(cause=pl.col("code").first())
                .rename({"file": "src_file", "row": "src_row"})
            )
        return self._errored

    def live(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` without rows whose source row has an error."""
        errored = self.errored_rows()
        if errored.is_empty():
            return frame
        # Per file, a test of the row number (an integer): an anti-join hashed every
        # (file, row) pair of the frame, 50 ms a call at a million rows.
        bad = pl.lit(False)
        for (file,), rows in errored.group_by("src_file"):
            bad = bad | (
                (pl.col("src_file") == file) & pl.col("src_row").is_in(rows["src_row"].implode())
            )
        return frame.filter(~bad.fill_null(False))

    def skip(
        self,
        table: str,
        frame: pl.DataFrame,
        bad: pl.Expr,
        code: str,
        message: pl.Expr,
        value: pl.Expr | None = None,
        field: str | pl.Expr | None = None,
    ) -> pl.DataFrame:
        """Report rows where `bad` holds as `code` and return the others."""
        flagged = frame.with_columns(_bad=bad.fill_null(False))
        self.add(
            issue_frame(
                flagged.filter(pl.col("_bad")),
                code,
                ids=_IDS[table],
                field=field,
                value=value,
                message=message,
            )
        )
        return flagged.filter(~pl.col("_bad")).drop("_bad")

    def file_of(self, table: str, role: str | None = None, default: str = "") -> str:
        """The file a table's rows came from ("classes.csv"), for messages."""
        frame = self.t[table]
        if role is not None:
            frame = frame.filter(pl.col("role") == role)
        files = frame["src_file"].drop_nulls().unique(maintain_order=True)
        if files.len() == 1:
            return files[0]
        return default or f"the {table} file"

    def causes(self, table: str, key: str, keys: pl.Series) -> pl.DataFrame:
        """(key, cause): for each of `keys`, the first of its parsed `table` rows with an
        error, as "CODE on file row N"."""
        rows = self.t[table].join(pl.DataFrame({key: keys.unique()}), on=key, how="semi")
        return (
            rows.join(self.errored_rows(), on=_SRC, how="inner")
            .sort("_i")
            .group_by(key, maintain_order=True)
            .first()
            .select(
                key,
                cause=pl.concat_str(
                    "cause", pl.lit(" on "), "src_file", pl.lit(" row "), "src_row"
                ),
            )
        )

    # -- the checks, in dependency order --------------------------------------------------

    def run(self) -> c.Roster:
        t = self.t
        # Not made unique: `is_in` and the anti-join below need no unique keys, and
        # making a million of them unique took 0.19 s.
        parsed_keys = t["people"]["person_key"].drop_nulls()

        # Enrollments of users the adapter could not resolve: before the field checks.
        enrollments = _mark(t["enrollments"], "person_key", parsed_keys, "_known")
        self.skip(
            "enrollments",
            enrollments,
            pl.col("person_key").is_not_null() & ~pl.col("_known"),
            "UNKNOWN_USER",
            text(
                *AT,
                _id_of(pl.col("person_key")),
                " is not in ",
                self.file_of("people", c.ROLE_TEACHER, "the teachers file"),
                " or ",
                self.file_of("people", c.ROLE_STUDENT, "the students file"),
            ),
            value=_id_of(pl.col("person_key")),
            field="user_id",
        )
        # Memberships before people: their issue names both the person and the school.
        for name in _FIELD_ORDER:
            frame = self.live(t[name]) if name == "enrollments" else t[name]
            self.add(_field_issues(name, frame.drop("_i")))

        schools = self.check_schools()
        self.check_memberships(schools)
        people, contacts = self.check_people()
        people, contacts = self.resolve_contacts(people, contacts)
        # Everyone parsed who did not apply: what needs them goes too.
        self.gone = (
            pl.DataFrame({"person_key": parsed_keys})
            .join(people.select("person_key"), on="person_key", how="anti")
            .unique(maintain_order=True)
        )
        classes = self.check_classes(schools)
        enrollments = self.check_enrollments(classes)
        memberships = self.cascade("school_memberships", self.live(t["school_memberships"]))
        memberships = memberships.unique(["person_key", "school_id"], keep="first")
        guardianships = self.live(t["guardianships"])
        for key in ("student_person_key", "parent_person_key"):
            guardianships = self.cascade("guardianships", guardianships, key)
        guardianships = guardianships.unique(
            ["parent_person_key", "student_person_key"], keep="first"
        )
        self.check_enrollment_schools(enrollments, classes, memberships)
        self.check_guardian_count(guardianships)

        def out(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.sort("_i").drop("_i")

        # A skipped source row reads once per cause, though several tables came from it.
        new = concat_issues(*self.new_issues)
        new = new.filter(
            pl.struct("code", "file", "row").is_first_distinct() | (pl.col("severity") != ERROR)
        )
        issues = concat_issues(self.parsed.issues, new).sort(
            ["file", "row"], nulls_last=False, maintain_order=True
        )
        return c.Roster(
            schools=out(schools),
            people=out(people),
            school_memberships=out(memberships),
            contacts=out(contacts),
            classes=out(classes),
            enrollments=out(enrollments),
            guardianships=out(guardianships),
            issues=issues,
        )

    def check_schools(self) -> pl.DataFrame:
        schools = self.live(self.t["schools"])
        winners, differing = _first_wins(schools, "school_id", ["name", "org_type"])
        self.add(_duplicate_id_issues(differing, "schools", "school_id", "school"))
        return winners

    def school_checks(self, table: str, frame: pl.DataFrame, schools: pl.DataFrame) -> pl.DataFrame:
        school = pl.col("school_id")
        parsed = self.t["schools"]["school_id"].drop_nulls().unique()
        frame = self.skip(
            table,
            frame,
            ~school.is_in(parsed.implode()),
            "UNKNOWN_SCHOOL",
            text(*AT, "school ", school, " is not in ", self.file_of("schools")),
            value=school,
            field="school_id",
        )
        skipped = pl.DataFrame({"school_id": parsed}).join(schools, on="school_id", how="anti")
        if skipped.is_empty():
            return frame
        causes = self.causes("schools", "school_id", skipped["school_id"])
        frame = frame.join(causes, on="school_id", how="left", maintain_order="left")
        return self.skip(
            table,
            frame,
            pl.col("cause").is_not_null(),
            "SCHOOL_SKIPPED",
            text(
                *AT,
                "school ",
                school,
                " was not applied (",
                pl.col("cause"),
                "), so this ",
                _THING[table],
                " was skipped",
            ),
            value=school,
            field="school_id",
        ).drop("cause")

    def check_memberships(self, schools: pl.DataFrame) -> None:
        self.school_checks("school_memberships", self.live(self.t["school_memberships"]), schools)

    def check_people(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """First row per person wins; later rows that disagree are alerts.

        Returns the winning people rows and the contacts of those rows.
        """
        people = self.live(self.t["people"]).with_columns(
            _first=pl.col("person_key").is_first_distinct()
        )
        contacts = self.live(self.t["contacts"])
        row_key = ["person_key", *_SRC]
        later = people.filter(~pl.col("_first"))
        if later.is_empty():
            return people.drop("_first"), contacts
        # Only people on several rows can disagree (most are on one).
        repeated = people.join(
            later.select("person_key").unique(), on="person_key", how="semi", maintain_order="left"
        )
        # Each row's contact points per kind, as an order-free signature (sum of hashes).
        # A parent's contact points are all theirs (they identify the parent): not compared.
        own_contacts = pl.col("role") != c.ROLE_PARENT
        own_rows = repeated.filter(own_contacts).select(row_key)
        signature = (
            _rows_of(contacts, own_rows)
            .unique([*row_key, "kind", "value"])
            .group_by(row_key)
            .agg(
                pl.col("value").filter(pl.col("kind") == kind).hash(seed=1).sum().alias(kind)
                for kind in (c.CONTACT_EMAIL, c.CONTACT_PHONE)
            )
        )
        repeated = repeated.join(
            signature, on=row_key, how="left", maintain_order="left"
        ).with_columns(pl.col(c.CONTACT_EMAIL, c.CONTACT_PHONE).fill_null(0))
        compare = ["first_name", "last_name", "dob", "grade", c.CONTACT_EMAIL, c.CONTACT_PHONE]
        _, differing = _first_wins(repeated, "person_key", compare, first="_first")
        self.add(
            issue_frame(
                differing,
                "REPEATED_ROW_DISAGREES",
                ids=_IDS["people"],
                field=pl.col("fields"),
                message=text(
                    *AT,
                    _who(pl.col("person_key")),
                    " differs from row ",
                    pl.col("first_row"),
                    " in ",
                    pl.col("fields"),
                    "; row ",
                    pl.col("first_row"),
                    " was used",
                ),
            )
        )
        # Teachers and students: the winning row's contacts only (first row wins for contacts
        # too). Parents: the contact points of all their rows (repeats of one point are
        # merged by `resolve_contacts`).
        contacts = contacts.filter(
            ~pl.col("_i").is_in(_rows_of(contacts, later.filter(own_contacts))["_i"].implode())
        )
        return people.filter(pl.col("_first")).drop("_first"), contacts

    def resolve_contacts(
        self, people: pl.DataFrame, contacts: pl.DataFrame
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """One owner per contact point; skip teachers left without email, parents without any.

        Returns the people who apply and their contacts.
        """
        point = ["kind", "value"]
        order = ["rank", "sis_id", "person_key", "_i"]
        email = pl.col("kind") == c.CONTACT_EMAIL
        shared = contacts.filter(pl.struct(point).is_duplicated())
        # A person's own repeats of a point (a parent on several rows) go without an issue.
        own_first = pl.struct("person_key", *point).is_first_distinct()
        repeats = shared.filter(~own_first).select("_i")
        contested = (
            shared.filter(own_first)
            .filter(pl.len().over(point) > 1)
            .join(people.select("person_key", "role", "sis_id"), on="person_key", how="inner")
            .with_columns(rank=pl.col("role").replace_strict(c.ROLE_RANK, default=len(c.ROLE_RANK)))
        )

        def keepers(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.sort(order, nulls_last=True).with_columns(
                keeper=pl.col("person_key").first().over(point),
                keeper_i=pl.col("_i").first().over(point),
                keeper_file=pl.col("src_file").first().over(point),
                keeper_row=pl.col("src_row").first().over(point),
            )

        # Teachers first: a teacher whose every email another teacher keeps is skipped.
        teacher_emails = keepers(contested.filter(email & (pl.col("role") == c.ROLE_TEACHER)))
        lost = teacher_emails.filter(pl.col("person_key") != pl.col("keeper"))
        owned = (
            contacts.filter(email)
            .join(lost.select("person_key"), on="person_key", how="semi")
            .group_by("person_key")
            .agg(owned=pl.col("value").n_unique())
        )
        taken = (
            lost.join(owned, on="person_key")
            .filter(pl.col("value").n_unique().over("person_key") >= pl.col("owned"))
            .sort("_i")
            .unique("person_key", keep="first", maintain_order=True)
        )
        self.add(
            issue_frame(
                taken,
                "TEACHER_EMAIL_TAKEN",
                ids=ids_expr([*_person_ids("person_key"), ("kept_by", pl.col("keeper"))]),
                field="email",
                value=pl.col("value"),
                message=text(
                    *AT,
                    _who(pl.col("person_key")),
                    "'s email ",
                    pl.col("value"),
                    " also belongs to ",
                    _who(pl.col("keeper")),
                    " (",
                    pl.col("keeper_file"),
                    " row ",
                    pl.col("keeper_row"),
                    "), who keeps it; a teacher needs an email of their own, so ",
                    _who(pl.col("person_key")),
                    " was skipped",
                ),
            )
        )
        no_email = people.filter(pl.col("role") == c.ROLE_TEACHER).join(
            contacts.filter(email).select("person_key"), on="person_key", how="anti"
        )
        self.add(
            issue_frame(
                no_email,
                "TEACHER_EMAIL_INVALID",
                ids=_IDS["people"],
                field="email",
                message=text(
                    *AT,
                    _who(pl.col("person_key")),
                    " has no valid email; every teacher needs one, so the teacher was skipped",
                ),
            )
        )
        failed = pl.concat([taken.select("person_key"), no_email.select("person_key")])

        # Everyone else: the highest role, then the first sis id / key, keeps each point.
        holders = keepers(contested.join(failed, on="person_key", how="anti"))
        losers = holders.filter(pl.col("_i") != pl.col("keeper_i"))
        self.add(
            issue_frame(
                losers.filter(pl.col("person_key") != pl.col("keeper")),
                "CONTACT_CONFLICT",
                ids=ids_expr([*_person_ids("person_key"), ("kept_by", pl.col("keeper"))]),
                field=pl.col("kind"),
                value=pl.col("value"),
                message=text(
                    *AT,
                    pl.col("kind"),
                    " ",
                    pl.col("value"),
                    " of ",
                    _who(pl.col("person_key")),
                    " also belongs to ",
                    _who(pl.col("keeper")),
                    " (",
                    pl.col("keeper_file"),
                    " row ",
                    pl.col("keeper_row"),
                    "), who keeps it; ",
                    _who(pl.col("person_key")),
                    " was applied without it",
                ),
            )
        )
        dropped = pl.concat([repeats, losers.select("_i")])
        contacts = contacts.join(dropped, on="_i", how="anti", maintain_order="left")
        contacts = contacts.join(failed, on="person_key", how="anti", maintain_order="left")

        # A parent with no contact point left has no account (an alert, not an error).
        orphans = people.filter(pl.col("role") == c.ROLE_PARENT).join(
            contacts.select("person_key"), on="person_key", how="anti"
        )
        self.add(
            issue_frame(
                orphans,
                "GUARDIAN_NO_CONTACT",
                ids=_IDS["people"],
                message=text(
                    *AT,
                    _who(pl.col("person_key")),
                    " has no email or phone left (they belong to people ranked higher), "
                    "so no parent account was made",
                ),
            )
        )
        self.dropped_parents = orphans.select("person_key")
        people = people.join(pl.concat([failed, self.dropped_parents]), on="person_key", how="anti")
        contacts = contacts.join(people.select("person_key"), on="person_key", how="semi")
        return people, contacts

    def cascade(self, table: str, frame: pl.DataFrame, key: str = "person_key") -> pl.DataFrame:
        """Drop rows whose person did not apply; PERSON_SKIPPED unless the person is a
        parent dropped for want of a contact point (that has its alert already)."""
        gone = frame.join(self.gone, left_on=key, right_on="person_key", how="semi")
        if gone.is_empty():
            return frame
        frame = frame.join(gone.select("_i"), on="_i", how="anti", maintain_order="left")
        report = gone.join(self.dropped_parents, left_on=key, right_on="person_key", how="anti")
        causes = self.causes("people", "person_key", report[key]).rename({"person_key": key})
        person = pl.col(key)
        self.add(
            issue_frame(
                report.join(causes, on=key, how="left"),
                "PERSON_SKIPPED",
                ids=_IDS[table],
                field="user_id" if table == "enrollments" else _id_label(person),
                value=_id_of(person),
                message=text(
                    *AT,
                    _who(person),
                    " was not applied (",
                    pl.col("cause"),
                    "), so this ",
                    _THING[table],
                    " was skipped",
                ),
            )
        )
        return frame

    def check_classes(self, schools: pl.DataFrame) -> pl.DataFrame:
        classes = self.live(self.t["classes"])
        classes, differing = _first_wins(
            classes, "class_id", ["school_id", "name", "owner_person_key"]
        )
        self.add(_duplicate_id_issues(differing, "classes", "class_id", "class"))
        classes = self.school_checks("classes", classes, schools)
        teachers = self.t["people"].filter(pl.col("role") == c.ROLE_TEACHER)["person_key"]
        owner = pl.col("owner_person_key")
        classes = self.skip(
            "classes",
            _mark(classes, "owner_person_key", teachers.drop_nulls(), "_known"),
            ~pl.col("_known"),
            "UNKNOWN_TEACHER",
            text(
                *AT,
                "teacher ",
                _id_of(owner),
                " of class ",
                pl.col("class_id"),
                " is not in ",
                self.file_of("people", c.ROLE_TEACHER, "the teachers file"),
                ", so the class was skipped",
            ),
            value=_id_of(owner),
            field="teacher_id",
        ).drop("_known")
        return self.cascade("classes", classes, "owner_person_key")

    def check_enrollments(self, classes: pl.DataFrame) -> pl.DataFrame:
        klass = pl.col("class_id")
        parsed = self.t["classes"]["class_id"].drop_nulls().unique()
        enrollments = self.skip(
            "enrollments",
            _mark(self.live(self.t["enrollments"]), "class_id", parsed, "_known"),
            ~pl.col("_known"),
            "UNKNOWN_CLASS",
            text(*AT, klass, " is not in ", self.file_of("classes")),
            value=klass,
            field="class_id",
        ).drop("_known")
        skipped = pl.DataFrame({"class_id": parsed}).join(classes, on="class_id", how="anti")
        if not skipped.is_empty():
            causes = self.causes("classes", "class_id", skipped["class_id"])
            enrollments = enrollments.join(causes, on="class_id", how="left", maintain_order="left")
            enrollments = self.skip(
                "enrollments",
                enrollments,
                pl.col("cause").is_not_null(),
                "CLASS_SKIPPED",
                text(
                    *AT,
                    "class ",
                    klass,
                    " was not applied (",
                    pl.col("cause"),
                    "), so this enrollment was skipped",
                ),
                value=klass,
                field="class_id",
            ).drop("cause")
        enrollments = self.cascade("enrollments", enrollments)
        # Repeats are rare (the adapter drops repeated rows): found first, as `unique`
        # with its order kept took twice as long.
        pair = ["class_id", "person_key"]
        if not enrollments.select(pair).is_duplicated().any():
            return enrollments
        return enrollments.unique(pair, keep="first", maintain_order=True)

    def check_enrollment_schools(
        self, enrollments: pl.DataFrame, classes: pl.DataFrame, memberships: pl.DataFrame
    ) -> None:
        """Alert: enrolled in a class of a school the person is not listed at."""
        outside = enrollments.join(
            classes.select("class_id", "school_id"), on="class_id", how="inner"
        ).join(memberships, on=["person_key", "school_id"], how="anti")
        self.add(
            issue_frame(
                outside,
                "ENROLLMENT_SCHOOL_MISMATCH",
                ids=_IDS["enrollments"],
                field="school_id",
                value=pl.col("school_id"),
                message=text(
                    *AT,
                    _who(pl.col("person_key")),
                    " is enrolled in class ",
                    pl.col("class_id"),
                    " of school ",
                    pl.col("school_id"),
                    " but is not listed at that school",
                ),
            )
        )

    def check_guardian_count(self, guardianships: pl.DataFrame) -> None:
        """Alert: a student with more than MAX_GUARDIANS guardians (the plan holds the drop)."""
        # The few students over the limit first: the rows' text is written for them only.
        many = (
            guardianships.filter(pl.len().over("student_person_key") > MAX_GUARDIANS)
            .sort("_i")
            .group_by("student_person_key", maintain_order=True)
            .agg(
                pl.col("src_file").first(),
                pl.col("src_row").first(),
                n=pl.len(),
                rows=pl.col("src_row").cast(pl.String).str.join(", "),
            )
            .filter(pl.col("n") > MAX_GUARDIANS)
        )
        self.add(
            issue_frame(
                many,
                "TOO_MANY_GUARDIANS",
                ids=ids_expr([("student_id", _id_of(pl.col("student_person_key")))]),
                field="guardian",
                value=pl.col("n"),
                message=text(
                    *AT,
                    _who(pl.col("student_person_key")),
                    " has ",
                    pl.col("n"),
                    " guardians (rows ",
                    pl.col("rows"),
                    "); a drop that gives a student six or more guardians is held until an "
                    "administrator confirms it",
                ),
            )
        )
