"""The incremental maintenance plan: which part of a district a drop can change.

A maintenance drop is a full snapshot, but most of it repeats the district's previous
applied drop. When that drop's run applied in full (no hold) and nothing outside the
sync has written the district's schools or settings since, the database holds what
that drop left except for the accounts written outside the sync, which triggers record
(`lib/store/marks.py`). A person whose rows are the same in both drops, whose account
no changed person shares and nothing else wrote, cannot be changed by the plan. The
plan then reads and diffs only the changed people's accounts (`Scope`), their contact
points included (migration 0008 records the app's contact writes); the people whose
contact points the previous plan could not apply (another account owns the value, or
a verified one is kept) are in the scope on every drop, since what decided it may
have changed outside the district. Schools and classes are small and planned in full.
docs/INCREMENTAL_SYNC.md has the reasoning; `plan.plan_differences` is how the test
suite checks every incremental plan against the full one.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import polars as pl

from roster_pipelines.lib.canonical import ROLE_STUDENT, Roster
from roster_pipelines.lib.identity import ALREADY_LINKED

# Bumped whenever the plan's rules change: a drop planned by other rules than its
# predecessor's plans in full (the database may not be what these rules would leave).
PLAN_VERSION = "2026-12-01.1"

_SOURCE_COLUMNS = ("src_file", "src_row")
# The roster tables compared with the previous drop's, each with the columns the scope
# needs of a row that is gone.
_DIFFED_KEYS: dict[str, tuple[str, ...]] = {
    "schools": (),
    "people": ("person_key",),
    "contacts": ("person_key",),
    "school_memberships": ("person_key",),
    "classes": ("owner_person_key",),
    "enrollments": ("person_key", "role"),
    "guardianships": ("parent_person_key", "student_person_key"),
}
# polars does not promise `hash_rows` across versions: a fingerprint made by another
# polars has another digest, and the drop after an upgrade is planned in full.
_HASH_VERSION = f"polars {pl.__version__}, seeds 0 and 1"


@dataclass
class Scope:
    """The part of the district a drop may change."""

    # Every person of the drop the plan must look at (all people of their accounts).
    people: pl.Series
    # The existing accounts the plan must read and diff (the people's, and those of
    # people who left the drop).
    accounts: pl.Series
    # Rows that differ from the previous applied drop, per table (added + gone).
    changed_rows: dict[str, int]
    # The accounts whose similar-people keys may differ from the previous drop's scan
    # (`similar_people.scan_scoped`): those of people whose own people or contact rows
    # changed, who are new or newly linked, or left, and those written outside the
    # sync. None: every account of the scope.
    rescan: pl.Series | None = None
    # Of `people` and `accounts`, those whose own rows may have changed (their people,
    # contact, school or guardian rows, their account written outside the sync, their
    # identity): the plan reads and diffs their accounts, contact points, school
    # memberships and guardianships. The rest are in the scope for their class
    # memberships and links alone (their enrollments changed, or their students', or
    # the classes they own): at 1 % churn on a million people, all but 12,881 of
    # 113,751. None (a scope stored before there were two): all of them.
    own_people: pl.Series | None = None
    own_accounts: pl.Series | None = None

    def people_with_own_changes(self) -> pl.Series:
        return self.people if self.own_people is None else self.own_people

    def accounts_with_own_changes(self) -> pl.Series:
        return self.accounts if self.own_accounts is None else self.own_accounts

    def stats(self) -> dict[str, int]:
        return {
            "scope_people": self.people.len(),
            "scope_accounts": self.accounts.len(),
            "scope_own_people": self.people_with_own_changes().len(),
            "scope_own_accounts": self.accounts_with_own_changes().len(),
            **{f"changed_{table}": n for table, n in self.changed_rows.items()},
        }


@dataclass
class RosterFingerprint:
    """What the next drop's plan needs of a validated roster, stored in its place: per
    compared table, each row's key columns and a 128-bit hash of the row (`h`, two
    64-bit row hashes side by side), file positions aside.

    Two rows are taken as equal when their hashes are: a changed row is missed only if
    it collides on 128 bits with another row of the previous drop (odds about 1e-27
    for two million-row drops). One 128-bit column, not two 64-bit ones: the joins of
    the delta run four times faster on it."""

    tables: dict[str, pl.DataFrame]
    # `digest()`, worked out once and stored with the fingerprint: hashing the rows of
    # a fingerprint read back from disk took 0.3 s at a million people.
    known_digest: str | None = None

    def digest(self) -> str:
        """Names the fingerprint's rows (order aside): a run records the one of the
        roster it applied, so a stored fingerprint is known to be that roster's."""
        if self.known_digest is None:
            self.known_digest = self._digest_of_tables()
        return self.known_digest

    def _digest_of_tables(self) -> str:
        parts = [_HASH_VERSION]
        for name, frame in self.tables.items():
            total = frame.hash_rows(seed=0).sum() if frame.height else 0
            parts.append(f"{name}:{frame.height}:{int(total or 0) & 0xFFFFFFFFFFFFFFFF:016x}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


_FINGERPRINTING = threading.Lock()


def fingerprint(roster: Roster) -> RosterFingerprint:
    """The roster's fingerprint, made once per roster object: the storage of the
    validated roster makes it in a thread while identity runs, and the plan, which
    needs it too, waits for that one."""
    with _FINGERPRINTING:
        cached = roster.__dict__.get("_fingerprint")
        if cached is None:
            cached = RosterFingerprint(
                {t: _row_hashes(getattr(roster, t), keys) for t, keys in _DIFFED_KEYS.items()}
            )
            roster.__dict__["_fingerprint"] = cached
        return cached


def _row_hashes(frame: pl.DataFrame, keys: tuple[str, ...]) -> pl.DataFrame:
    values = frame.select(c for c in frame.columns if c not in _SOURCE_COLUMNS)
    hashes = pl.DataFrame(
        [values.hash_rows(seed=0).alias("h0"), values.hash_rows(seed=1).alias("h1")]
    )
    # (h0 - 2^63) * 2^64 + h1 spans the signed 128-bit range without overflow.
    wide = hashes.select(
        h=(pl.col("h0").cast(pl.Int128) - 2**63) * 2**64 + pl.col("h1").cast(pl.Int128)
    )["h"]
    return pl.DataFrame([*(frame.get_column(key) for key in keys), wide])


def roster_digest(roster: Roster) -> str:
    return fingerprint(roster).digest()


def changed_rows(new: pl.DataFrame, old: pl.DataFrame) -> pl.DataFrame:
    """Rows of either fingerprint table that the other does not hold: an added row and
    a gone one for a row that changed, in no particular order. (Lazy anti-joins, both
    ways in one query: 0.72-0.80 s against 1.36-1.38 s for `is_in` filters over the
    seven tables of a million-person drop on polars 2.1; session 12 measured the
    opposite on the polars of then.)"""
    added = new.lazy().join(old.lazy().select("h"), on="h", how="anti")
    gone = old.lazy().join(new.lazy().select("h"), on="h", how="anti")
    return pl.concat([added, gone]).collect()


@dataclass
class ChangedPeople:
    """Who changed between two drops, by person key."""

    # People whose rows changed (their people, contact, school, enrollment and guardian
    # rows; an owner of a changed class; the guardians of a student whose enrollments
    # changed).
    keys: pl.Series
    # The changed rows per table.
    counts: dict[str, int]
    # People whose people or contact rows changed (what the similar-people scan reads
    # of a person).
    described: pl.Series
    # People whose people, contact, school or guardian rows changed: of `keys`, those
    # whose accounts, contact points, school memberships and guardianships may change
    # (`Scope.own_people`).
    own: pl.Series


def changed_people(new: RosterFingerprint, old: RosterFingerprint) -> ChangedPeople | None:
    """Who changed between two drops (`ChangedPeople`). None when the schools changed:
    then everything is planned in full."""
    delta = {table: changed_rows(new.tables[table], old.tables[table]) for table in _DIFFED_KEYS}
    counts = {table: frame.height for table, frame in delta.items()}
    if counts["schools"]:
        return None
    students = delta["enrollments"].filter(pl.col("role") == ROLE_STUDENT)["person_key"]
    guardians = [
        fp.tables["guardianships"].filter(pl.col("student_person_key").is_in(students.implode()))[
            "parent_person_key"
        ]
        for fp in (new, old)
    ]
    described = [delta["people"]["person_key"], delta["contacts"]["person_key"]]
    own = [
        *described,
        delta["school_memberships"]["person_key"],
        delta["guardianships"]["parent_person_key"],
        delta["guardianships"]["student_person_key"],
    ]
    in_classes = [
        delta["enrollments"]["person_key"],
        delta["classes"]["owner_person_key"],
        *guardians,
    ]

    def keys(parts: list[pl.Series]) -> pl.Series:
        return pl.concat(parts).drop_nulls().unique().rename("person_key")

    return ChangedPeople(
        keys=keys(own + in_classes),
        counts=counts,
        described=keys(described),
        own=keys(own),
    )


def scope_for(
    changed: pl.Series,
    counts: dict[str, int],
    identities: pl.DataFrame,
    more_accounts: pl.Series,
    described: pl.Series | None = None,
    own: pl.Series | None = None,
) -> Scope:
    """Close the changed people over their accounts: every person the identity step
    did not find already linked, every account of a changed person, `more_accounts`
    (those of people who left, from their SIS links, and those written outside the
    sync since the last apply), and every person of those accounts. With `described`
    (the people whose people or contact rows changed), also `Scope.rescan`; with `own`
    (those whose people, contact, school or guardian rows changed), also
    `Scope.own_people` and `Scope.own_accounts`, closed the same way."""
    linked = identities.select("person_key", "account_id", "decision")

    def dirty(keys: pl.Series) -> pl.DataFrame:
        """The people of `keys` and those not already linked."""
        return linked.filter(
            pl.col("person_key").is_in(keys.implode()) | (pl.col("decision") != ALREADY_LINKED)
        )

    def accounts_of(people: pl.DataFrame) -> pl.Series:
        """Their accounts, and `more_accounts`."""
        return (
            pl.concat([people["account_id"].drop_nulls(), more_accounts.cast(pl.Int64)])
            .unique()
            .sort()
            .rename("account_id")
        )

    def closed(keys: pl.Series) -> tuple[pl.Series, pl.Series]:
        """The people and accounts of `keys`, closed over their accounts."""
        touched = dirty(keys)
        accounts = accounts_of(touched)
        people = (
            linked.filter(
                pl.col("account_id").is_in(accounts.implode())
                | pl.col("person_key").is_in(touched["person_key"].implode())
            )["person_key"]
            .unique()
            .sort()
        )
        return people, accounts

    people, accounts = closed(changed)
    own_people, own_accounts = (None, None) if own is None else closed(own)
    rescan = None if described is None else accounts_of(dirty(described))
    return Scope(
        people=people,
        accounts=accounts,
        changed_rows=counts,
        rescan=rescan,
        own_people=own_people,
        own_accounts=own_accounts,
    )
