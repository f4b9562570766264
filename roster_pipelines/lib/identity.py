"""Identity resolution: which app account each SIS person of a drop is (R1–R4).

One row per person of the drop, with its decision and the reason for it. Order of
evidence, strongest first:

1. ``already_linked``: the SIS identity ``(district, person_key)`` is bound to an
   account by an earlier drop (``sis_links``); that binding holds even if the
   person's contacts changed since. A binding to a merged account (tombstone) follows
   ``accounts.merged_into_id`` to the surviving account.
2. ``linked``: a normalised contact point of the person matches an existing account,
   anywhere in the app (the account may predate the district or belong to another
   district: a parent with children in two districts keeps one account). Email is the
   stronger contact, then a verified contact point, then the alphabetically first
   value. When the person's contacts match *several* accounts (email → A, phone → B)
   the person is linked by the strongest one, ``conflict`` is set, A–B is recorded as
   a merge candidate and an IDENTITY_CONFLICT alert is raised.
3. ``created``: nothing matches; the apply step creates a new SIS-linked account.

Guards, so that one account never holds two SIS identities of the same role in the
same district (the rule the merge operation also enforces):

- An account bound to another SIS person of the same role who is *still in this drop*
  is not available to a new person (ACCOUNT_TAKEN alert; a new account is created).
- Two new people of the same role whose contacts lead to one account: the one with
  the stronger match (then the first person_key) gets it, the other is created.
- An account bound to an SIS person of the same role who is *no longer in the drop* is
  available: that is how a guardian keyed by their email (they have no SIS id) keeps
  their account when the email changes — the new key ``parent:email:<new>`` matches the
  account through the phone that did not change, the new key is linked to it and the
  old key's link is removed like any person who left the snapshot. The account, its
  memberships and guardianships stay; its unverified SIS email is then updated (R4,
  `plan.build_plan`'s contact points). A guardian whose email *and* phone both change
  at once cannot be recognised and gets a new account (and the old one is removed).

Matching is set-based in the database: the drop's distinct contact points go into a
temporary table (``COPY`` on Postgres, ``executemany`` on SQLite) joined to
``contact_points`` on its unique ``(kind, value)`` index; nothing loads every account.

Merge candidates (R2) are pairs of accounts (or an account and an SIS person whose
account this drop creates) that are probably one person; they are recorded for review,
never merged automatically (`lib.merge` does merges):

- ``contact_conflict``: a person's contacts match two accounts (see 2.), or an
  already-linked person's SIS contact point belongs to another account;
- ``same_name_phone``: same normalised name and a shared phone, inside the district
  (the drop's people, plus accounts that are members of the district's organisations
  or were ever SIS-linked in it);
- ``same_name_dob``: same normalised name and date of birth (students), same scope.

Two people who are both SIS persons of the same role in this drop are never paired:
the SIS says they are different people (and a merge of them would be refused).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, insert, select, text, update

from roster_pipelines.lib import stage_files
from roster_pipelines.lib.background import in_background
from roster_pipelines.lib.canonical import CONTACT_EMAIL, Roster
from roster_pipelines.lib.similar_people import (
    PAIRS_SCHEMA,
    PEOPLE_SCHEMA,
    SAME_NAME_DOB,
    SAME_NAME_PHONE,
    SimilarKeys,
    StoredKeys,
    drop_entities,
    keys_of,
    scan,
    scan_scoped,
)
from roster_pipelines.lib.store.frames import chunks, copy_out, is_postgres, read_frame, read_many
from roster_pipelines.lib.store.models import MergeCandidate
from roster_pipelines.lib.store.state import (
    CONTACTS_SCHEMA,
    id_array,
    latest_run,
    read_contacts_of,
)

ALREADY_LINKED = "already_linked"
LINKED = "linked"
CREATED = "created"

# Merge-candidate reasons, strongest first (one candidate per pair keeps the first).
CONTACT_CONFLICT = "contact_conflict"
REASONS = (CONTACT_CONFLICT, SAME_NAME_PHONE, SAME_NAME_DOB)

IDENTITY_SCHEMA = {
    "person_key": pl.String,
    "role": pl.String,
    "sis_id": pl.String,
    "account_id": pl.Int64,
    "decision": pl.String,
    "matched_kind": pl.String,
    "matched_value": pl.String,
    "conflict": pl.Boolean,
    "reason": pl.String,
    # An alert the plan reports for this person (IDENTITY_CONFLICT, ACCOUNT_TAKEN).
    "alert_code": pl.String,
    "alert_message": pl.String,
    "src_file": pl.String,
    "src_row": pl.Int64,
    # The account is SIS-linked in another district too (its contacts are shared).
    "other_districts": pl.Boolean,
}

CANDIDATES_SCHEMA = {**PAIRS_SCHEMA, "pair_key": pl.String}

OWNERS_SCHEMA = {
    "kind": pl.String,
    "value": pl.String,
    "account_id": pl.Int64,
    "verified": pl.Boolean,
}

_LINKS_SCHEMA = {
    "person_key": pl.String,
    "role": pl.String,
    "active": pl.Boolean,
    "account_id": pl.Int64,
}


@dataclass
class KeptLinks:
    """The district's SIS links as an applied drop's apply left them (`_LINKS_SCHEMA`;
    merged accounts not followed), and that drop's run. The next drop reads from the
    database only the links of the accounts written outside the sync since
    (`sync.keep_links`): a million links took 0.45 s to read, their file 0.03 s."""

    links: pl.DataFrame
    run_id: int


class LinksFolder(stage_files.KeptFolder):
    """One district's kept links, one folder per applied drop."""

    kind = KeptLinks


@dataclass
class FoundCandidates:
    """The merge candidates a drop reveals, and what its similar-people scan leaves for
    the next drop's (`similar_people.SimilarKeys`)."""

    pairs: pl.DataFrame  # CANDIDATES_SCHEMA, one row per pair
    keys: SimilarKeys
    # How many accounts the scan worked out again from the last applied drop's keys
    # (None: it scanned the district in full).
    rescanned: int | None = None


@dataclass
class Resolution:
    identities: pl.DataFrame  # IDENTITY_SCHEMA, one row per person of the drop
    # None when asked for later (`later_candidates`).
    candidates: FoundCandidates | None
    # OWNERS_SCHEMA: the app accounts owning the drop's contact points (the plan uses
    # them too, so the database is asked once per drop).
    contact_owners: pl.DataFrame
    # state.CONTACTS_SCHEMA: the contact points of the district's SIS-linked accounts,
    # which the plan reads too (planned whole: one read of a million rows, not two).
    district_contacts: pl.DataFrame | None = None
    # The district's latest applied run when the database was read (0: none yet).
    base_run_id: int | None = None
    # Works out `candidates` when they were asked for later (the similar-people scan
    # is a third of identity's time and nothing but the report needs its result).
    later_candidates: Callable[[], FoundCandidates] | None = None
    # The district's links as read (`_LINKS_SCHEMA`, merged accounts not followed),
    # and whether they came from the last applied drop's (`KeptLinks`).
    links: pl.DataFrame | None = None
    links_kept: bool = False


# --- reading the database set-based --------------------------------------------------


def _bool(column: str) -> pl.Expr:
    """Booleans as they come back from SQLite (0/1) or Python."""
    c = pl.col(column).cast(pl.String).str.to_lowercase()
    return c.is_in(["t", "true", "1"]).alias(column)


def query_frame(
    conn: Connection, sql: str, schema: dict, params: dict | None = None
) -> pl.DataFrame:
    """Run a SELECT and return its rows as a frame with `schema`.

    On Postgres the rows travel as CSV through ``COPY (...) TO STDOUT`` (several times
    faster than fetching Python tuples at a million rows); `params` are integers,
    rendered into the statement. On SQLite it is a plain query with bound parameters.
    (Big reads that need no temporary table of this transaction use
    `frames.read_many` instead.)
    """
    params = params or {}
    raw = {c: (t if t == pl.Int64 else pl.String) for c, t in schema.items()}
    if is_postgres(conn):
        for name, value in params.items():
            if not isinstance(value, int):
                raise TypeError("query_frame binds integer parameters only")
            sql = sql.replace(f":{name}", str(int(value)))
        return copy_out(conn, text(sql), schema)
    rows = conn.execute(text(sql), params).all()
    if not rows:
        return pl.DataFrame(schema=schema)
    frame = pl.DataFrame(
        [
            tuple(
                str(v) if v is not None and raw[c] == pl.String else v
                for c, v in zip(schema, r, strict=True)
            )
            for r in rows
        ],
        schema=raw,
        orient="row",
    )
    converted = []
    for column, dtype in schema.items():
        if dtype == pl.Boolean:
            converted.append(_bool(column))
        elif dtype == pl.Date:
            converted.append(pl.col(column).str.slice(0, 10).str.to_date("%Y-%m-%d"))
        elif dtype != raw[column]:
            converted.append(pl.col(column).cast(dtype))
    return frame.with_columns(converted) if converted else frame


def _stage(conn: Connection, frame: pl.DataFrame, columns: dict[str, str]) -> str:
    """A temporary table holding `frame` (columns name → SQL type); returns its name.

    Postgres: ``COPY`` from CSV, then ANALYZE so the join uses real row counts; the
    table is dropped at commit. SQLite: ``executemany``. Callers drop it when done.
    """
    name = f"tmp_identity_{uuid.uuid4().hex[:10]}"
    ddl = ", ".join(f"{c} {t} NOT NULL" for c, t in columns.items())
    if is_postgres(conn):
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({ddl}) ON COMMIT DROP")
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN (FORMAT csv)") as copy:
                data = frame.select(list(columns)).write_csv(include_header=False).encode()
                step = 8 << 20
                for start in range(0, len(data), step):
                    copy.write(data[start : start + step])
        finally:
            cursor.close()
        conn.exec_driver_sql(f"ANALYZE {name}")
    else:
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({ddl})")
        if frame.height:
            placeholders = ", ".join("?" for _ in columns)
            conn.exec_driver_sql(
                f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({placeholders})",
                [tuple(r) for r in frame.select(list(columns)).iter_rows()],
            )
    return name


def _drop_stage(conn: Connection, name: str) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def contact_owners(conn: Connection, wanted: pl.DataFrame) -> pl.DataFrame:
    """Existing accounts owning any of the wanted (kind, value) contact points.

    (kind, value, account_id, verified); account_id is the surviving account when the
    owner was merged (a tombstone's contact points normally moved with the merge).
    """
    wanted = wanted.select("kind", "value").unique()
    if not wanted.height:
        return pl.DataFrame(schema=OWNERS_SCHEMA)
    stage = _stage(conn, wanted, {"kind": "varchar(8)", "value": "varchar(320)"})
    if is_postgres(conn):
        # Room for the hash join of a million-person drop (this transaction only).
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
    try:
        return query_frame(
            conn,
            f"SELECT w.kind, w.value, COALESCE(a.merged_into_id, a.id), cp.verified "
            f"FROM {stage} w "
            "JOIN contact_points cp ON cp.kind = w.kind AND cp.value = w.value "
            "JOIN accounts a ON a.id = cp.account_id",
            OWNERS_SCHEMA,
        )
    finally:
        _drop_stage(conn, stage)


def _owners(conn: Connection, wanted: pl.DataFrame, district: pl.DataFrame) -> pl.DataFrame:
    """`contact_owners` of `wanted`, found first among the district's own contact points
    (`district`, OWNERS_SCHEMA): one email or phone is one row in the whole app, so a
    value found there has that owner; only the others are looked up app-wide."""
    # Not made unique first (0.45 s at a million): a semi-join keeps each of the
    # district's rows once, and `contact_owners` makes the (few) others unique.
    wanted = wanted.select("kind", "value")
    known = district.join(wanted, on=["kind", "value"], how="semi")
    rest = wanted.join(known, on=["kind", "value"], how="anti")
    return pl.concat([known, contact_owners(conn, rest)], how="vertical_relaxed").cast(
        OWNERS_SCHEMA
    )


# The links as stored, and apart the (few) merged accounts with their survivors: a
# join of the links with every account cost three times the two reads (1.15 s against
# 0.4 s + 0.07 s of server time at a million people).
_LINKS_SQL = (
    "SELECT sl.person_key, sl.role, sl.active, sl.account_id FROM sis_links sl "
    "WHERE sl.district_id = :d"
)
# The district's links of some accounts (`{ids}`: an `id_array`), read again on top of
# the links an applied drop kept (`KeptLinks`).
_LINKS_OF_SQL = _LINKS_SQL + " AND sl.account_id = ANY({ids})"
_MERGED_SQL = "SELECT a.id, a.merged_into_id FROM accounts a WHERE a.merged_into_id IS NOT NULL"
_MERGED_SCHEMA = {"account_id": pl.Int64, "merged_into_id": pl.Int64}


# The contact points of the district's SIS-linked accounts, as the plan's state has them
# (`state.CONTACTS_SCHEMA`); their owners (`contact_owners`' rows) follow with the merged
# accounts: most of a maintenance drop's values are found here, so only the rest (new or
# changed values) are looked up across the whole app.
_DISTRICT_CONTACTS_SQL = (
    "SELECT cp.id, cp.account_id, cp.kind, cp.value, cp.verified, cp.source "
    "FROM contact_points cp "
    "WHERE cp.account_id IN (SELECT sl.account_id FROM sis_links sl WHERE sl.district_id = :d)"
)


# The district's accounts (members of its organisations or ever SIS-linked in it), each
# with its phones (one row per phone; null when it has none): one query, where an
# accounts read and a phones read each worked out the same million account ids.
_ORG_PEOPLE_SQL = """
SELECT a.id, a.first_name, a.last_name, a.dob, cp.value FROM accounts a
LEFT JOIN contact_points cp ON cp.account_id = a.id AND cp.kind = 'phone'
WHERE a.merged_into_id IS NULL AND a.id IN (
    SELECT om.account_id FROM org_memberships om
    JOIN organisations o ON o.id = om.org_id
    WHERE om.active AND (o.id = :d OR o.district_id = :d)
    UNION
    SELECT sl.account_id FROM sis_links sl WHERE sl.district_id = :d
)
"""


# `_ORG_PEOPLE_SQL` for given accounts: each account's membership found by its indexes,
# its SIS link first (most have one: 0.96 s against 1.7 s for 220,000 accounts). The
# ids travel as a literal array, as `state` sends them.
_PEOPLE_OF_SQL = """
SELECT a.id, a.first_name, a.last_name, a.dob, cp.value FROM accounts a
LEFT JOIN contact_points cp ON cp.account_id = a.id AND cp.kind = 'phone'
WHERE a.id = ANY({ids}) AND a.merged_into_id IS NULL AND (
    EXISTS (SELECT 1 FROM sis_links sl WHERE sl.account_id = a.id AND sl.district_id = {d})
    OR EXISTS (
        SELECT 1 FROM org_memberships om JOIN organisations o ON o.id = om.org_id
        WHERE om.account_id = a.id AND om.active AND (o.id = {d} OR o.district_id = {d})
    )
)
"""


_DISTRICT_QUERIES = {
    "contacts": (_DISTRICT_CONTACTS_SQL, CONTACTS_SCHEMA),
    "links": (_LINKS_SQL, _LINKS_SCHEMA),
    "merged": (_MERGED_SQL, _MERGED_SCHEMA),
}
_PEOPLE_QUERY = (_ORG_PEOPLE_SQL, PEOPLE_SCHEMA)


def _base_run_id(conn: Connection, district_id: int) -> int:
    last = latest_run(conn, district_id)
    return last.id if last is not None else 0


def _read_district(
    conn: Connection,
    district_id: int,
    *,
    contacts: bool = True,
    people: bool = True,
    kept_links: KeptLinks | None = None,
    rewritten: pl.Series | None = None,
) -> tuple[dict[str, pl.DataFrame], Callable[[], pl.DataFrame] | None, int]:
    """The district's SIS links (each with its surviving account: tombstones followed),
    its linked accounts' contact points (`contacts`) and their owners (`owners`); as a
    callable that returns it, its people's accounts and phones (`people`: for the
    similar-people scan, the last thing identity needs); and the latest applied run the
    reads reflect.

    On Postgres the other reads run two at a time (`frames.read_many`) while the people
    are read (`_district_people`).

    Without `contacts` (an incremental drop: `resolve_identities`' `scope_of`) the
    district's contact points are not read, nor their owners worked out; without
    `people` (a scan from the last drop's keys) nor are the district's people.

    With `kept_links` (Postgres: the links an applied drop left, `KeptLinks`), when they
    are the latest applied run's, only the links of the `rewritten` accounts (written
    outside the sync since: both the account a link left and the one it went to) are
    read, and replace the kept ones of those accounts and people. `links_raw` holds
    the links before merged accounts are followed (what `sync.keep_links` keeps)."""
    # The run the reads reflect is read first: a drop applied meanwhile makes the plan
    # refuse this result (`sync.plan_drop`).
    base_run_id = _base_run_id(conn, district_id)
    queries = {k: q for k, q in _DISTRICT_QUERIES.items() if contacts or k != "contacts"}
    # Links kept by another run than the one these reads reflect (a drop applied
    # meanwhile) are not used: its links are not in them.
    if kept_links is not None and is_postgres(conn) and kept_links.run_id == base_run_id:
        ids = id_array(rewritten if rewritten is not None else pl.Series([], dtype=pl.Int64))
        queries["links"] = (_LINKS_OF_SQL.format(ids=ids), _LINKS_SCHEMA)
    else:
        kept_links = None
    people_later = _district_people(conn, district_id) if people else None
    if not is_postgres(conn):
        read = {
            name: query_frame(conn, sql, schema, {"d": district_id})
            for name, (sql, schema) in queries.items()
        }
    else:
        # Through their own ADBC connections (`frames.read_many`): committed data only.
        read = read_many(conn, {name: _bound(district_id, *q) for name, q in queries.items()})
    if contacts:
        read["owners"] = _surviving(read["contacts"], read["merged"], list(OWNERS_SCHEMA))
    if kept_links is not None:
        kept = kept_links.links
        if rewritten is not None and rewritten.len():
            kept = kept.filter(~pl.col("account_id").is_in(rewritten.cast(pl.Int64).implode()))
        read["links"] = _links_read_again(kept, read["links"])
    read["links_raw"] = read["links"]
    read["links"] = _surviving(read["links"], read["merged"], list(_LINKS_SCHEMA))
    return read, people_later, base_run_id


def kept_links_after_apply(
    conn: Connection,
    district_id: int,
    links: pl.DataFrame | None = None,
    people: pl.Series | None = None,
    link_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """The district's links (`KeptLinks`) after an apply: `links` (as identity read
    them) with those of `people` (person keys) and `link_ids` read again; without
    `links`, all of them read (Postgres)."""
    if links is None:
        return read_many(conn, {"links": _bound(district_id, *_DISTRICT_QUERIES["links"])})["links"]
    sql = _LINKS_SQL.replace(":d", str(int(district_id)))
    keys = [] if people is None else people.drop_nulls().unique().to_list()
    ids = [] if link_ids is None else link_ids.drop_nulls().unique().cast(pl.Int64).to_list()
    rows = conn.execute(
        text(
            f"{sql} AND (sl.person_key = ANY(CAST(:keys AS text[])) "
            "OR sl.id = ANY(CAST(:ids AS integer[])))"
        ),
        {"keys": keys, "ids": ids},
    ).all()
    fresh = pl.DataFrame([tuple(r) for r in rows], schema=_LINKS_SCHEMA, orient="row")
    return _links_read_again(links, fresh)


def _links_read_again(links: pl.DataFrame, fresh: pl.DataFrame) -> pl.DataFrame:
    """`links` with the people's links read again (`fresh`) in place of theirs."""
    return pl.concat(
        [links.join(fresh.select("person_key"), on="person_key", how="anti"), fresh]
    ).cast(_LINKS_SCHEMA)


def _bound(district_id: int, sql: str, schema: dict) -> tuple[Any, dict]:
    return text(sql.replace(":d", str(int(district_id)))), schema


def _district_people(conn: Connection, district_id: int) -> Callable[[], pl.DataFrame]:
    """The district's accounts with their phones (`PEOPLE_SCHEMA`), as a callable. On
    Postgres they are read at once, in a thread of their own (about 1.5 s less at a
    million people on two cores); elsewhere when called."""
    if not is_postgres(conn):
        return partial(query_frame, conn, *_PEOPLE_QUERY, {"d": district_id})
    query = _bound(district_id, *_PEOPLE_QUERY)
    return in_background(lambda: read_many(conn, {"people": query}, workers=1)["people"]).result


def _all_people_of(engine: Engine, district_id: int) -> pl.DataFrame:
    """`_district_people`, read on a connection of its own."""
    with engine.connect() as conn:
        return query_frame(conn, *_PEOPLE_QUERY, {"d": district_id})


def similar_keys_after_apply(engine: Engine, district_id: int, roster: Roster) -> SimilarKeys:
    """The similar-people keys of the district as an applied drop left it: its accounts
    read in full, with the drop's people under the accounts now linked to them. Kept
    for the next drop's scan in place of the drop's own scan's keys when its apply made
    or wrote too many accounts for those to serve (a district's first drop made them
    all), so the next drop still works out again only what changed."""
    with engine.connect() as conn:
        read, district_people, _ = _read_district(conn, district_id, contacts=False)
    assert district_people is not None
    first_rows = _first_rows(roster)
    linked = first_rows.select("person_key").join(
        read["links"].select("person_key", "account_id"), on="person_key", how="left"
    )
    return keys_of(drop_entities(first_rows, linked), roster.contacts, district_people())


def _people_of(engine: Engine, district_id: int, ids: pl.Series) -> pl.DataFrame:
    """`_district_people` of these accounts only (Postgres; its own connection)."""
    if not ids.len():
        return pl.DataFrame(schema=PEOPLE_SCHEMA)
    sql = _PEOPLE_OF_SQL.format(ids=id_array(ids), d=int(district_id))
    with engine.connect() as conn:
        return read_frame(conn, text(sql), PEOPLE_SCHEMA)


def _read_district_contacts(
    conn: Connection, district_id: int, merged: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The district's contact points and their owners, as `_read_district` reads them."""
    sql, schema = _DISTRICT_QUERIES["contacts"]
    frame = query_frame(conn, sql, schema, {"d": district_id})
    return frame, _surviving(frame, merged, list(OWNERS_SCHEMA))


def _surviving(frame: pl.DataFrame, merged: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """`frame`'s `columns`, each `account_id` replaced by its surviving account (a
    merged account's tombstone followed to the account it was merged into)."""
    return (
        frame.join(merged, on="account_id", how="left")
        .with_columns(account_id=pl.coalesce("merged_into_id", "account_id"))
        .select(columns)
    )


def _linked_elsewhere(conn: Connection, district_id: int, account_ids: pl.Series) -> pl.Series:
    """Which of these accounts hold an active SIS link in another district."""
    ids = account_ids.drop_nulls().unique()
    if not ids.len():
        return pl.Series("account_id", [], pl.Int64)
    stage = _stage(conn, pl.DataFrame({"account_id": ids}), {"account_id": "bigint"})
    try:
        return query_frame(
            conn,
            f"SELECT DISTINCT w.account_id FROM {stage} w "
            "JOIN sis_links sl ON sl.account_id = w.account_id "
            "WHERE sl.district_id <> :d AND sl.active",
            {"account_id": pl.Int64},
            {"d": district_id},
        )["account_id"]
    finally:
        _drop_stage(conn, stage)


# --- decisions ------------------------------------------------------------------------


def _matched(contacts: pl.DataFrame, owners: pl.DataFrame, people: pl.DataFrame) -> pl.DataFrame:
    """The drop's contact points (`contacts`) that an app account owns, with that owner
    and the person's role."""
    return contacts.join(owners, on=["kind", "value"], how="inner").join(
        people.select("person_key", "role"), on="person_key"
    )


def _first_rows(roster: Roster) -> pl.DataFrame:
    """One row per person: the first. A validated roster has one already. Counting its
    keys' hashes tells (0.03-0.05 s at a million people, against 0.18-0.24 s to count
    the keys and more to make them unique): distinct hashes are distinct keys, and a
    collision only takes the exact way."""
    people = roster.people
    if people["person_key"].hash(seed=0).n_unique() == people.height:
        return people
    return people.unique("person_key", keep="first", maintain_order=True)


def resolve_identities(
    conn: Connection,
    district_id: int,
    roster: Roster,
    *,
    candidates_later: bool = False,
    scope_of: Callable[[pl.DataFrame], tuple[pl.Series, pl.Series, pl.Series] | None] | None = None,
    similar_base: Callable[[], StoredKeys | None] | None = None,
    kept_links: Callable[[], KeptLinks | None] | None = None,
    rewritten: pl.Series | None = None,
) -> Resolution:
    """Every person of the drop with its account (null when one must be created), the
    decision and its reason; plus the merge candidates the drop reveals, or with
    `candidates_later` a function that works them out.

    `scope_of` (an incremental drop) is given every person's identity and returns the
    people whose contact points the drop's plan diffs (`Scope.own_people`), their
    accounts, and the accounts whose similar-people keys may have changed (None: all
    of them). A person
    already linked needs nothing but their link, so the district's million contact
    points are not read: only the scope's accounts' (which the plan diffs) and the
    owners of the new people's and the scope's values; and the contact conflicts of
    already-linked people (merge candidates) are looked for in the scope, which holds
    every such person (the last plan refused them the value: `sync._verify_incremental`
    checks the candidates against a full match). With a scope, `identities` flags
    `other_districts` for its accounts only, `contact_owners` holds the owners of its
    values and of the new people's, and `district_contacts` its accounts' contact
    points.

    `similar_base` (with `scope_of`, on Postgres) gives the similar-people keys the last
    applied drop left (read from disk meanwhile; None: not that drop's after all); the
    scan then reads and works out again only the scope's accounts and those that drop
    wrote (`similar_people.scan_scoped`), not the district's million people.

    `kept_links` (with `scope_of`) gives the links the last applied drop kept (None:
    not that drop's after all): only those of the `rewritten` accounts are read."""
    first_rows = _first_rows(roster)
    people = first_rows.select("person_key", "role", "sis_id", "src_file", "src_row")
    from_base = scope_of is not None and similar_base is not None and is_postgres(conn)
    kept = kept_links() if scope_of is not None and kept_links is not None else None
    read, district_people, base_run_id = _read_district(
        conn,
        district_id,
        contacts=scope_of is None,
        people=not from_base,
        kept_links=kept,
        rewritten=rewritten,
    )
    links = read["links"]
    contacts = roster.contacts.select("person_key", "kind", "value")

    # One join splits the people (a link's account is never null).
    joined = people.join(
        links.select("person_key", "account_id"), on="person_key", how="left", maintain_order="left"
    )
    bound = joined.filter(pl.col("account_id").is_not_null())
    unbound = joined.filter(pl.col("account_id").is_null()).drop("account_id")
    if scope_of is None:
        owners = _owners(conn, contacts, read["owners"])
    else:
        # Only a person without a link is matched by contact (`options` below).
        owners = contact_owners(conn, contacts.join(unbound, on="person_key", how="semi"))

    matched = _matched(contacts, owners, people)

    # Accounts bound to an SIS person of the same role who is still in this drop (a
    # person key names its role, so the person's role is the link's).
    held = bound.select("account_id", "role").unique().with_columns(held=pl.lit(True))
    options = (
        matched.join(unbound.select("person_key"), on="person_key", how="semi")
        .join(held, on=["account_id", "role"], how="left")
        .with_columns(
            held=pl.col("held").fill_null(False),
            strength=pl.when(pl.col("kind") == CONTACT_EMAIL).then(0).otherwise(1),
            unverified=pl.col("verified").not_().cast(pl.Int8),
        )
        .sort(["person_key", "strength", "unverified", "value"])
    )
    eligible = options.filter(pl.col("held").not_())
    best = eligible.group_by("person_key", maintain_order=True).first()
    # One account per role among the drop's new people: the strongest match wins.
    best = best.sort(["account_id", "role", "strength", "unverified", "person_key"]).with_columns(
        wins=pl.col("person_key").first().over(["account_id", "role"]) == pl.col("person_key"),
        winner=pl.col("person_key").first().over(["account_id", "role"]),
    )
    winners = best.filter(pl.col("wins"))
    beaten = best.filter(pl.col("wins").not_())

    # Conflicts: a linked person's other contacts match other accounts.
    others = (
        eligible.join(winners.select("person_key", best_id="account_id"), on="person_key")
        .filter(pl.col("account_id") != pl.col("best_id"))
        .unique(["person_key", "account_id"], keep="first", maintain_order=True)
    )
    conflict_text = others.group_by("person_key", maintain_order=True).agg(
        other_ids=pl.col("account_id"),
        other_text=pl.concat_str(
            pl.col("kind"),
            pl.lit(" "),
            pl.col("value"),
            pl.lit(" matches account "),
            pl.col("account_id").cast(pl.String),
        ).str.join("; "),
    )

    linked = (
        winners.join(conflict_text, on="person_key", how="left")
        .join(people.select("person_key", "sis_id", "src_file", "src_row"), on="person_key")
        .with_columns(
            decision=pl.lit(LINKED),
            matched_kind=pl.col("kind"),
            matched_value=pl.col("value"),
            conflict=pl.col("other_ids").is_not_null(),
        )
        .with_columns(
            reason=pl.concat_str(
                pl.col("kind"),
                pl.lit(" "),
                pl.col("value"),
                pl.lit(" matches account "),
                pl.col("account_id").cast(pl.String),
                pl.when(pl.col("conflict"))
                .then(
                    pl.concat_str(
                        pl.lit("; also "), pl.col("other_text"), pl.lit(" (merge candidates)")
                    )
                )
                .otherwise(pl.lit("")),
            ),
            alert_code=pl.when(pl.col("conflict")).then(pl.lit("IDENTITY_CONFLICT")),
            alert_message=pl.when(pl.col("conflict")).then(
                pl.concat_str(
                    pl.col("src_file"),
                    pl.lit(" row "),
                    pl.col("src_row").cast(pl.String),
                    pl.lit(": "),
                    pl.col("person_key"),
                    pl.lit("'s contacts match several app accounts: "),
                    pl.col("kind"),
                    pl.lit(" "),
                    pl.col("value"),
                    pl.lit(" matches account "),
                    pl.col("account_id").cast(pl.String),
                    pl.lit("; "),
                    pl.col("other_text"),
                    pl.lit(". Linked to account "),
                    pl.col("account_id").cast(pl.String),
                    pl.lit("; the accounts are listed as merge candidates"),
                )
            ),
        )
    )

    # Created: no eligible match (maybe matches taken by other SIS people: an alert).
    taken = (
        pl.concat(
            [
                options.filter(pl.col("held")).select("person_key", "account_id", "kind", "value"),
                beaten.select("person_key", "account_id", "kind", "value"),
            ]
        )
        .join(winners.select("person_key"), on="person_key", how="anti")
        .unique("person_key", keep="first", maintain_order=True)
    )
    created = (
        unbound.join(winners.select("person_key"), on="person_key", how="anti")
        .select("person_key", "role", "sis_id", "src_file", "src_row")
        .join(taken, on="person_key", how="left")
        .with_columns(
            account_id=pl.lit(None, pl.Int64),
            decision=pl.lit(CREATED),
            matched_kind=pl.lit(None, pl.String),
            matched_value=pl.lit(None, pl.String),
            conflict=pl.lit(False),
            reason=pl.when(pl.col("value").is_null())
            .then(pl.lit("no contact point matches an app account"))
            .otherwise(
                pl.concat_str(
                    pl.col("kind"),
                    pl.lit(" "),
                    pl.col("value"),
                    pl.lit(" matches account "),
                    pl.col("account_id").cast(pl.String),
                    pl.lit(", which belongs to another SIS person of the same role"),
                )
            ),
            alert_code=pl.when(pl.col("value").is_not_null()).then(pl.lit("ACCOUNT_TAKEN")),
        )
        .with_columns(
            alert_message=pl.when(pl.col("alert_code").is_not_null()).then(
                pl.concat_str(
                    pl.col("src_file"),
                    pl.lit(" row "),
                    pl.col("src_row").cast(pl.String),
                    pl.lit(": "),
                    pl.col("reason"),
                    pl.lit("; a new account was made for "),
                    pl.col("person_key"),
                )
            )
        )
    )

    already = bound.with_columns(
        decision=pl.lit(ALREADY_LINKED),
        matched_kind=pl.lit(None, pl.String),
        matched_value=pl.lit(None, pl.String),
        conflict=pl.lit(False),
        reason=pl.concat_str(
            pl.lit("SIS identity bound to account "),
            pl.col("account_id").cast(pl.String),
            pl.lit(" by an earlier drop"),
        ),
        alert_code=pl.lit(None, pl.String),
        alert_message=pl.lit(None, pl.String),
    )
    cols = [c for c in IDENTITY_SCHEMA if c != "other_districts"]
    identities = pl.concat(
        [already.select(cols), linked.select(cols), created.select(cols)], how="vertical_relaxed"
    )
    scope = None if scope_of is None else scope_of(identities)
    rescan = None
    base_keys = similar_base() if from_base and similar_base is not None else None
    if scope is not None and base_keys is not None:
        rescan = partial(
            scan_scoped,
            base=base_keys,
            changed=scope[2],
            read_people=partial(_people_of, conn.engine, district_id),
            read_district=partial(_all_people_of, conn.engine, district_id),
        )
    elif district_people is None:  # a full plan after all: the district's people
        district_people = _district_people(conn, district_id)

    checked = identities["account_id"]
    if scope_of is not None and scope is None:
        # Planned in full after all: the district's contact points, as without a scope.
        read["contacts"], district_owners = _read_district_contacts(
            conn, district_id, read["merged"]
        )
        owners = _owners(conn, contacts, district_owners)
        matched = _matched(contacts, owners, people)
    elif scope is not None:
        # The scope's accounts' contact points (the plan diffs them), the owners of the
        # scope's values (found there first, as `_owners` does with the district's),
        # and the flag below for the scope's accounts only: the plan looks at no other.
        scope_people, scope_accounts, _ = scope
        read["contacts"] = read_contacts_of(conn, scope_accounts)
        in_scope = contacts.join(scope_people.to_frame("person_key"), on="person_key", how="semi")
        unknown = in_scope.join(owners, on=["kind", "value"], how="anti")
        scope_owners = _surviving(read["contacts"], read["merged"], list(OWNERS_SCHEMA))
        owners = pl.concat(
            [owners, _owners(conn, unknown, scope_owners)], how="vertical_relaxed"
        ).cast(OWNERS_SCHEMA)
        matched = _matched(in_scope, owners, people)
        checked = identities.filter(pl.col("person_key").is_in(scope_people.implode()))[
            "account_id"
        ]
    elsewhere = _linked_elsewhere(conn, district_id, checked)
    identities = identities.with_columns(
        other_districts=pl.col("account_id").is_in(elsewhere.implode()).fill_null(False)
    ).cast(IDENTITY_SCHEMA)

    # Merge candidates.
    contact_pairs = pl.concat(
        [
            others.join(winners.select("person_key", best_id="account_id"), on="person_key").select(
                a="best_id",
                b="account_id",
                detail=pl.concat_str(
                    pl.col("person_key"),
                    pl.lit(": "),
                    pl.col("kind"),
                    pl.lit(" "),
                    pl.col("value"),
                    pl.lit(" matches account "),
                    pl.col("account_id").cast(pl.String),
                    pl.lit(", linked to account "),
                    pl.col("best_id").cast(pl.String),
                ),
            ),
            # An already-linked person's SIS contact point held by another account.
            matched.join(bound.select("person_key", best_id="account_id"), on="person_key")
            .filter(pl.col("account_id") != pl.col("best_id"))
            .select(
                a="best_id",
                b="account_id",
                detail=pl.concat_str(
                    pl.col("person_key"),
                    pl.lit(" (account "),
                    pl.col("best_id").cast(pl.String),
                    pl.lit("): SIS "),
                    pl.col("kind"),
                    pl.lit(" "),
                    pl.col("value"),
                    pl.lit(" belongs to account "),
                    pl.col("account_id").cast(pl.String),
                ),
            ),
        ]
    )
    contact_candidates = contact_pairs.select(
        account_id="a",
        person_key=pl.lit(None, pl.String),
        other_account_id="b",
        other_person_key=pl.lit(None, pl.String),
        reason=pl.lit(CONTACT_CONFLICT),
        detail="detail",
    )

    def all_candidates() -> FoundCandidates:
        entities = drop_entities(first_rows, identities)
        rescanned = None
        if rescan is not None:
            similar, keys, rescanned = rescan(entities, roster.contacts)
        else:
            assert district_people is not None
            similar, keys = scan(entities, roster.contacts, district_people())
        pairs = pl.concat(
            [
                contact_candidates.cast({"account_id": pl.Int64, "other_account_id": pl.Int64}),
                similar,
            ],
            how="vertical_relaxed",
        )
        return FoundCandidates(_finish_candidates(pairs), keys, rescanned)

    return Resolution(
        identities=identities,
        candidates=None if candidates_later else all_candidates(),
        contact_owners=owners,
        district_contacts=read.get("contacts"),
        base_run_id=base_run_id,
        later_candidates=all_candidates if candidates_later else None,
        links=read["links_raw"],
        # As `_read_district` decides: they are the run its reads reflect.
        links_kept=kept is not None and kept.run_id == base_run_id and is_postgres(conn),
    )


# --- merge candidates ------------------------------------------------------------------


def _entity(account: pl.Expr, person: pl.Expr) -> pl.Expr:
    """One account or, for a person whose account this drop creates, that person."""
    return (
        pl.when(account.is_not_null())
        .then(pl.concat_str(pl.lit("a:"), account.cast(pl.String)))
        .otherwise(pl.concat_str(pl.lit("p:"), person))
    )


def _finish_candidates(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per pair (the strongest reason), sides ordered, with a stable pair key."""
    if not frame.height:
        return pl.DataFrame(schema=CANDIDATES_SCHEMA)
    left = _entity(pl.col("account_id"), pl.col("person_key"))
    right = _entity(pl.col("other_account_id"), pl.col("other_person_key"))
    swap = left > right
    frame = frame.with_columns(
        [
            pl.when(swap).then(pl.col(b)).otherwise(pl.col(a)).alias(a)
            for a, b in (
                ("account_id", "other_account_id"),
                ("person_key", "other_person_key"),
                ("other_account_id", "account_id"),
                ("other_person_key", "person_key"),
            )
        ]
    )
    return (
        frame.with_columns(
            pair_key=pl.concat_str(
                _entity(pl.col("account_id"), pl.col("person_key")),
                pl.lit("|"),
                _entity(pl.col("other_account_id"), pl.col("other_person_key")),
            ),
            _rank=pl.col("reason").replace_strict(
                {r: i for i, r in enumerate(REASONS)}, return_dtype=pl.Int8
            ),
        )
        .filter(
            _entity(pl.col("account_id"), pl.col("person_key"))
            != _entity(pl.col("other_account_id"), pl.col("other_person_key"))
        )
        .sort(["pair_key", "_rank", "detail"])
        .unique("pair_key", keep="first", maintain_order=True)
        .select(list(CANDIDATES_SCHEMA))
        .cast(CANDIDATES_SCHEMA)
    )


_EXISTING_SQL = """
SELECT mc.id, mc.pair_key,
       COALESCE(mc.account_id, l1.account_id), COALESCE(mc.other_account_id, l2.account_id),
       mc.person_key, mc.other_person_key
FROM merge_candidates mc
LEFT JOIN sis_links l1 ON l1.district_id = mc.district_id AND l1.person_key = mc.person_key
LEFT JOIN sis_links l2 ON l2.district_id = mc.district_id AND l2.person_key = mc.other_person_key
WHERE mc.district_id = :d
"""


def record_candidates(
    conn: Connection, district_id: int, drop_id: str | None, candidates: pl.DataFrame
) -> None:
    """Upsert the drop's candidates into ``merge_candidates`` (one row per pair and
    district). A pair seen again moves to this drop (``last_drop_id``); a dismissed or
    merged pair keeps its status. A pair first recorded with a person side (an SIS
    person whose account that drop created) is the same pair once the person's account
    exists: the row is updated to the account, not recorded twice."""
    if not candidates.height:
        return
    existing = query_frame(
        conn,
        _EXISTING_SQL,
        {
            "id": pl.Int64,
            "pair_key": pl.String,
            "a": pl.Int64,
            "b": pl.Int64,
            "pa": pl.String,
            "pb": pl.String,
        },
        {"d": district_id},
    )
    left = _entity(pl.col("a"), pl.col("pa"))
    right = _entity(pl.col("b"), pl.col("pb"))
    existing = existing.with_columns(
        resolved=pl.when(left <= right)
        .then(pl.concat_str(left, pl.lit("|"), right))
        .otherwise(pl.concat_str(right, pl.lit("|"), left))
    )
    same = candidates.join(existing.select("pair_key"), on="pair_key", how="semi")
    rest = candidates.join(existing.select("pair_key"), on="pair_key", how="anti")
    resolved = rest.join(
        existing.filter(pl.col("resolved") != pl.col("pair_key"))
        .unique("resolved", keep="first")
        .select("id", pair_key="resolved"),
        on="pair_key",
        how="inner",
    )
    new = rest.join(resolved.select("pair_key"), on="pair_key", how="anti")
    if new.height:
        conn.execute(
            insert(MergeCandidate),
            [
                r | {"district_id": district_id, "first_drop_id": drop_id, "last_drop_id": drop_id}
                for r in new.to_dicts()
            ],
        )
    for chunk in chunks(same["pair_key"].to_list()):
        conn.execute(
            update(MergeCandidate)
            .where(MergeCandidate.district_id == district_id, MergeCandidate.pair_key.in_(chunk))
            .values(last_drop_id=drop_id)
        )
    for row in resolved.iter_rows(named=True):
        conn.execute(
            update(MergeCandidate)
            .where(MergeCandidate.id == row["id"])
            .values(
                account_id=row["account_id"],
                person_key=row["person_key"],
                other_account_id=row["other_account_id"],
                other_person_key=row["other_person_key"],
                pair_key=row["pair_key"],
                last_drop_id=drop_id,
            )
        )


def drop_candidates(conn: Connection, district_id: int, drop_id: str) -> pl.DataFrame:
    """The merge candidates a drop reported (for the sync report)."""
    rows = conn.execute(
        select(
            MergeCandidate.id,
            MergeCandidate.account_id,
            MergeCandidate.person_key,
            MergeCandidate.other_account_id,
            MergeCandidate.other_person_key,
            MergeCandidate.reason,
            MergeCandidate.detail,
            MergeCandidate.status,
        )
        .where(MergeCandidate.district_id == district_id, MergeCandidate.last_drop_id == drop_id)
        .order_by(MergeCandidate.id)
    ).all()
    return pl.DataFrame(
        [tuple(r) for r in rows],
        schema={
            "id": pl.Int64,
            **{k: v for k, v in CANDIDATES_SCHEMA.items() if k != "pair_key"},
            "status": pl.String,
        },
        orient="row",
    )


def decision_counts(
    identities: pl.DataFrame, candidates: pl.DataFrame | None = None
) -> dict[str, int]:
    """already_linked, linked, created, conflicts (linked by the stronger of two
    accounts' contacts) and candidates (merge candidates the drop reveals)."""
    counts = identities.group_by("decision").len()
    result = {ALREADY_LINKED: 0, LINKED: 0, CREATED: 0}
    result.update(dict(zip(counts["decision"].to_list(), counts["len"].to_list(), strict=True)))
    result["conflicts"] = (
        int(identities["conflict"].sum()) if "conflict" in identities.columns else 0
    )
    result["candidates"] = 0 if candidates is None else candidates.height
    return result
