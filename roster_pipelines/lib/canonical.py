"""The canonical roster model: the polars tables every format adapter produces.

Nothing downstream of parsing knows which input format arrived; it only sees a
`Roster` holding these tables. Column names are stable: rename nothing without a
migration of every stage.

Keys
- A SIS person is keyed by ``person_key`` = ``"<role>:<sis_id>"`` (teacher, student).
- A parent without an SIS id is keyed by its first contact point,
  ``"parent:email:<email>"`` or ``"parent:phone:<e164>"``, so siblings who share a
  guardian share one parent.

Every table carries ``src_file`` and ``src_row`` (1-based, header = row 1) of the
row it came from, so any later stage can name the row in an issue.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import polars as pl

ROLE_TEACHER = "teacher"
ROLE_STUDENT = "student"
ROLE_PARENT = "parent"
ROLES = (ROLE_TEACHER, ROLE_STUDENT, ROLE_PARENT)
# Contact-point conflicts go to the highest role (SYNC_RULES, "Errors and alerts").
ROLE_RANK = {ROLE_TEACHER: 0, ROLE_PARENT: 1, ROLE_STUDENT: 2}

ORG_SCHOOL = "school"
ORG_PROGRAM = "program"

CONTACT_EMAIL = "email"
CONTACT_PHONE = "phone"

_SRC = {"src_file": pl.String, "src_row": pl.Int64}

SCHOOLS_SCHEMA = pl.Schema(
    {"school_id": pl.String, "name": pl.String, "org_type": pl.String, **_SRC}
)
PEOPLE_SCHEMA = pl.Schema(
    {
        "person_key": pl.String,
        "role": pl.String,
        "sis_id": pl.String,
        "first_name": pl.String,
        "last_name": pl.String,
        "dob": pl.Date,
        "grade": pl.String,
        **_SRC,
    }
)
SCHOOL_MEMBERSHIPS_SCHEMA = pl.Schema(
    {"person_key": pl.String, "school_id": pl.String, "role": pl.String, **_SRC}
)
CONTACTS_SCHEMA = pl.Schema(
    {
        "person_key": pl.String,
        "kind": pl.String,
        "value": pl.String,
        "raw_value": pl.String,
        "source_column": pl.String,
        **_SRC,
    }
)
CLASSES_SCHEMA = pl.Schema(
    {
        "class_id": pl.String,
        "school_id": pl.String,
        "name": pl.String,
        "owner_person_key": pl.String,
        **_SRC,
    }
)
ENROLLMENTS_SCHEMA = pl.Schema(
    {"class_id": pl.String, "person_key": pl.String, "role": pl.String, **_SRC}
)
GUARDIANSHIPS_SCHEMA = pl.Schema(
    {"parent_person_key": pl.String, "student_person_key": pl.String, **_SRC}
)

TABLE_SCHEMAS: dict[str, pl.Schema] = {
    "schools": SCHOOLS_SCHEMA,
    "people": PEOPLE_SCHEMA,
    "school_memberships": SCHOOL_MEMBERSHIPS_SCHEMA,
    "contacts": CONTACTS_SCHEMA,
    "classes": CLASSES_SCHEMA,
    "enrollments": ENROLLMENTS_SCHEMA,
    "guardianships": GUARDIANSHIPS_SCHEMA,
}


def empty(table: str) -> pl.DataFrame:
    """An empty frame with the canonical schema of `table`."""
    return pl.DataFrame(schema=TABLE_SCHEMAS[table])


def person_key(role: str, sis_id: str) -> str:
    return f"{role}:{sis_id}"


def parent_key(kind: str, value: str) -> str:
    return f"{ROLE_PARENT}:{kind}:{value}"


# The prefix of a key an adapter could not resolve to a person (an enrollment's user_id
# that is neither a teacher nor a student id): ``"unknown:<user_id>"``.
UNKNOWN = "unknown"
_KEY_PREFIX = rf"^(?:{ROLE_PARENT}:(?:{CONTACT_EMAIL}|{CONTACT_PHONE}):|[^:]+:)"


def split_person_key(key: str) -> tuple[str, str]:
    """(role, id) of a person key: ``"teacher:T1"`` → ("teacher", "T1"); a parent's id is
    the contact point that keys them (``"parent:email:a@b.org"`` → ("parent", "a@b.org"));
    an unresolved ``"unknown:X"`` → ("unknown", "X"). Ids may hold colons."""
    role, _, rest = key.partition(":")
    if role == ROLE_PARENT:
        kind, _, value = rest.partition(":")
        if kind in (CONTACT_EMAIL, CONTACT_PHONE):
            return role, value
    return role, rest


def key_role_expr(key: pl.Expr) -> pl.Expr:
    """`split_person_key`'s role as a polars expression."""
    return key.str.extract(r"^([^:]+):", 1)


def key_id_expr(key: pl.Expr) -> pl.Expr:
    """`split_person_key`'s id as a polars expression."""
    return key.str.replace(_KEY_PREFIX, "")


def _empty_issues() -> pl.DataFrame:
    from roster_pipelines.lib.issues import ISSUES_SCHEMA

    return pl.DataFrame(schema=ISSUES_SCHEMA)


@dataclass
class Roster:
    """One drop's data in canonical form, plus every issue found so far.

    `rejected` is set when a file-level error makes the whole drop unusable.
    """

    schools: pl.DataFrame = field(default_factory=lambda: empty("schools"))
    people: pl.DataFrame = field(default_factory=lambda: empty("people"))
    school_memberships: pl.DataFrame = field(default_factory=lambda: empty("school_memberships"))
    contacts: pl.DataFrame = field(default_factory=lambda: empty("contacts"))
    classes: pl.DataFrame = field(default_factory=lambda: empty("classes"))
    enrollments: pl.DataFrame = field(default_factory=lambda: empty("enrollments"))
    guardianships: pl.DataFrame = field(default_factory=lambda: empty("guardianships"))
    issues: pl.DataFrame = field(default_factory=_empty_issues)
    rejected: bool = False

    def tables(self) -> dict[str, pl.DataFrame]:
        """The canonical tables by name (issues excluded)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in TABLE_SCHEMAS}

    def counts(self) -> dict[str, int]:
        """Snapshot counts as reported by the CLI and the asset metadata."""
        by_role = self.people.group_by("role").len()
        role_counts = dict(zip(by_role["role"].to_list(), by_role["len"].to_list(), strict=True))
        return {
            "schools": self.schools.height,
            "teachers": role_counts.get(ROLE_TEACHER, 0),
            "students": role_counts.get(ROLE_STUDENT, 0),
            "parents": role_counts.get(ROLE_PARENT, 0),
            "classes": self.classes.height,
            "enrollments": self.enrollments.height,
        }
