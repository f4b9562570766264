"""The district's current state in the app database, read as polars frames.

Only SIS-sourced rows are read for memberships: manual memberships belong to the
app's users and a sync never touches them (R6).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import polars as pl
from sqlalchemy import Connection, Select, and_, func, insert, literal_column, or_, select

from roster_pipelines.lib.background import in_background
from roster_pipelines.lib.store.frames import chunks, concat, is_postgres, read_frame, read_many
from roster_pipelines.lib.store.models import (
    Account,
    Class,
    ClassMembership,
    ContactPoint,
    DistrictSettings,
    Guardianship,
    Organisation,
    OrgMembership,
    SisLink,
    SyncRun,
)

ORGS_SCHEMA = {
    "id": pl.Int64,
    "sis_id": pl.String,
    "name": pl.String,
    "kind": pl.String,
    "active": pl.Boolean,
}
LINKS_SCHEMA = {
    "id": pl.Int64,
    "person_key": pl.String,
    "role": pl.String,
    "sis_id": pl.String,
    "account_id": pl.Int64,
    "active": pl.Boolean,
}
ACCOUNTS_SCHEMA = {
    "id": pl.Int64,
    "first_name": pl.String,
    "last_name": pl.String,
    "dob": pl.Date,
    "grade": pl.String,
}
CONTACTS_SCHEMA = {
    "id": pl.Int64,
    "account_id": pl.Int64,
    "kind": pl.String,
    "value": pl.String,
    "verified": pl.Boolean,
    "source": pl.String,  # sis | user (R4: the sync replaces only unverified SIS contacts)
}
CLASSES_SCHEMA = {
    "id": pl.Int64,
    "sis_class_id": pl.String,
    "school_org_id": pl.Int64,
    "sis_name": pl.String,
    "name": pl.String,
    "name_edited": pl.Boolean,
    "owner_account_id": pl.Int64,
    "active": pl.Boolean,
}
ORG_MEMBERSHIPS_SCHEMA = {
    "id": pl.Int64,
    "org_id": pl.Int64,
    "account_id": pl.Int64,
    "role": pl.String,
    "active": pl.Boolean,
}
CLASS_MEMBERSHIPS_SCHEMA = {
    "id": pl.Int64,
    "class_id": pl.Int64,
    "account_id": pl.Int64,
    "role": pl.String,
    "active": pl.Boolean,
}
GUARDIANSHIPS_SCHEMA = {
    "id": pl.Int64,
    "parent_account_id": pl.Int64,
    "student_account_id": pl.Int64,
    "active": pl.Boolean,
}


@dataclass
class CurrentState:
    """What the database holds for one district (SIS-sourced rows only)."""

    district_id: int
    orgs: pl.DataFrame
    links: pl.DataFrame
    accounts: pl.DataFrame
    contacts: pl.DataFrame
    classes: pl.DataFrame
    org_memberships: pl.DataFrame
    class_memberships: pl.DataFrame
    guardianships: pl.DataFrame
    last_applied_at: datetime | None
    # The run the state reflects; the apply step refuses a plan made on older state.
    last_run_id: int | None = None
    # A scoped read (an incremental plan) holds only some accounts' rows: the hold
    # thresholds count the district's active people or enrollments with this
    # (`count_total("people")`), when the scope's own rows cannot decide (its classes
    # are read whole).
    count_total: Callable[[str], int] | None = None


def get_or_create_district(conn: Connection, district_sis_id: str) -> int:
    """The district's organisation id; a district unknown to the database is registered."""
    existing = conn.execute(
        select(Organisation.id).where(
            Organisation.kind == "district",
            Organisation.district_id.is_(None),
            Organisation.sis_id == district_sis_id,
        )
    ).scalar()
    if existing is not None:
        return int(existing)
    district_id = conn.execute(
        insert(Organisation)
        .values(kind="district", sis_id=district_sis_id, name=district_sis_id)
        .returning(Organisation.id)
    ).scalar_one()
    conn.execute(insert(DistrictSettings).values(district_id=district_id))
    return int(district_id)


def find_district(conn: Connection, district_sis_id: str) -> int | None:
    return conn.execute(
        select(Organisation.id).where(
            Organisation.kind == "district",
            Organisation.district_id.is_(None),
            Organisation.sis_id == district_sis_id,
        )
    ).scalar()


# Tables every plan reads whole, scoped or not (`start_whole_reads`).
WHOLE_TABLES = ("contacts", "classes", "orgs")


@dataclass
class WholeReads:
    """The tables every plan reads whole, being read in a thread of their own, and the
    district's latest run as it was before they started (what the state reflects)."""

    last: RunRef | None
    frames: Future[dict[str, pl.DataFrame]]
    tables: tuple[str, ...] = WHOLE_TABLES  # what `frames` holds, or `known` did


def start_whole_reads(
    conn: Connection,
    district_id: int,
    known: dict[str, pl.DataFrame | None] | None = None,
    *,
    scoped: bool = False,
) -> WholeReads | None:
    """Start reading `WHOLE_TABLES` (Postgres, through their own connection: committed
    data) while the caller works out what else to read, except those `known` holds
    already; None on SQLite. `scoped` (the plan's scope is known already): the contact
    points are left to the scoped reads, unless known."""
    if not is_postgres(conn):
        return None
    last = latest_run(conn, district_id)
    skip = _known(known)
    tables = tuple(t for t in WHOLE_TABLES if not (scoped and t == "contacts" and t not in skip))
    queries = {
        k: q for k, q in _state_queries(district_id).items() if k in tables and k not in skip
    }
    return WholeReads(last, in_background(read_many, conn, queries, workers=1), tables)


def load_current_state(
    conn: Connection,
    district_id: int,
    extra_account_ids: pl.Series | None = None,
    *,
    bulk: bool = False,
    accounts_in_scope: pl.Series | None = None,
    own_accounts_in_scope: pl.Series | None = None,
    whole: WholeReads | None = None,
    known: dict[str, pl.DataFrame | None] | None = None,
) -> CurrentState:
    """Read the district's rows; `extra_account_ids` adds accounts matched by contact.

    With `accounts_in_scope` (an incremental plan, Postgres) the rows of people,
    memberships and guardianships are read for those accounts only (their ids inside
    the statements), schools, classes and contact points whole; the district-wide totals
    the hold thresholds may need are counted on demand (`CurrentState.count_total`).
    With `own_accounts_in_scope` too (`Scope.own_accounts`), accounts, contact points,
    school memberships and guardianships are read for those only.

    `bulk` (the plan stage) reads the big tables at once through separate ADBC
    connections on Postgres (`frames.read_many`): committed data only, so never inside
    a transaction that has written to them. The apply step re-checks under the
    district's lock that no drop was applied since (`last_run_id`), so the plan cannot
    act on stale state.

    `whole` (from `start_whole_reads`) holds the reads of `WHOLE_TABLES` already under
    way, and the latest run read before they started. `known` gives tables already read
    by the same query (identity reads the district's contact points; None: read here).
    """
    # The run the state reflects is read first: a drop applied while the tables are
    # read makes the plan stale, and the apply step refuses it.
    last = whole.last if whole is not None else latest_run(conn, district_id)
    skip = _known(known)
    queries = {k: q for k, q in _state_queries(district_id).items() if k not in skip}
    count_total = None
    if accounts_in_scope is not None:
        count_total = partial(_count_total, conn, district_id)
        queries |= {
            k: q
            for k, q in _scoped_queries(
                district_id, accounts_in_scope, own_accounts_in_scope
            ).items()
            if k not in skip
        }
    if whole is not None:
        queries = {k: q for k, q in queries.items() if k not in whole.tables}
    if bulk:
        read = read_many(conn, queries)
    else:
        read = {name: read_frame(conn, stmt, schema) for name, (stmt, schema) in queries.items()}
    if whole is not None:
        read |= whole.frames.result()
    read |= skip
    # Accounts matched by contact and not yet linked are fetched by id (few). A scoped
    # read holds every account of its scope already, these included.
    wanted = (
        (
            pl.Series("account_id", [], pl.Int64)
            if extra_account_ids is None
            else extra_account_ids.cast(pl.Int64).rename("account_id")
        )
        .unique()
        .to_frame()
    )
    if accounts_in_scope is not None:
        wanted = wanted.join(accounts_in_scope.rename("account_id").to_frame(), on="account_id")
    extra = (
        wanted.join(read["links"].select("account_id"), on="account_id", how="anti")
        .sort("account_id")["account_id"]
        .to_list()
    )
    accounts = concat(
        [
            read["accounts"],
            *(
                read_frame(
                    conn, select(*_ACCOUNT_COLS).where(Account.id.in_(chunk)), ACCOUNTS_SCHEMA
                )
                for chunk in (chunks(extra) if accounts_in_scope is None else ())
            ),
        ],
        ACCOUNTS_SCHEMA,
    )
    contacts = concat(
        [
            read["contacts"],
            *(
                read_frame(
                    conn,
                    select(*_CONTACT_COLS).where(ContactPoint.account_id.in_(chunk)),
                    CONTACTS_SCHEMA,
                )
                for chunk in chunks(extra)
            ),
        ],
        CONTACTS_SCHEMA,
    )
    return CurrentState(
        district_id=district_id,
        orgs=read["orgs"],
        links=read["links"],
        accounts=accounts,
        contacts=contacts,
        classes=read["classes"],
        org_memberships=read["org_memberships"],
        class_memberships=read["class_memberships"],
        guardianships=read["guardianships"],
        last_applied_at=last.finished_at if last else None,
        last_run_id=last.id if last else None,
        count_total=count_total,
    )


def _known(known: dict[str, pl.DataFrame | None] | None) -> dict[str, pl.DataFrame]:
    return {k: frame for k, frame in (known or {}).items() if frame is not None}


def id_array(ids: pl.Series) -> str:
    """The ids as a Postgres array literal (`'{1,2}'::integer[]`), for `= ANY(...)`.

    Integer, as the id columns are: `integer = ANY(bigint[])` is a cross-type test that
    Postgres cannot hash, so a filter compared each row with the whole list and the
    planner walked the index instead; with `integer[]` it may hash the list and scan
    (the scope's class memberships at a million people: 0.49 s of server time against
    0.80 s, its accounts 0.12 s against 0.19 s, its contact points 0.12 s against
    0.27 s)."""
    values = ids.drop_nulls().unique().sort().cast(pl.String).str.join(",").item()
    return f"'{{{values}}}'::integer[]"


def _ids_in(ids: pl.Series) -> Any:
    """`= ANY(<literal array>)`: the ids travel inside the statement, so the read can
    run on another connection (`read_many`), and the planner walks the indexes for
    them where a join with a staged table scanned the whole table."""
    return literal_column(f"ANY({id_array(ids)})")


def _contacts_of(ids: Any) -> Select:
    return select(*_CONTACT_COLS).where(ContactPoint.account_id == ids)


def read_contacts_of(conn: Connection, account_ids: pl.Series) -> pl.DataFrame:
    """The contact points of these accounts (`CONTACTS_SCHEMA`), as a scoped plan reads
    them (identity reads them for the plan when it works out the scope)."""
    if not account_ids.drop_nulls().len():
        return pl.DataFrame(schema=CONTACTS_SCHEMA)
    return read_frame(conn, _contacts_of(_ids_in(account_ids)), CONTACTS_SCHEMA)


def _scoped_queries(
    district_id: int, accounts: pl.Series, own_accounts: pl.Series | None = None
) -> dict[str, tuple[Select, dict[str, Any]]]:
    """The district's rows of these accounts (links, accounts, contact points,
    memberships and guardianships: the tables whose rows follow people), as
    `_state_queries` names them; accounts, contact points, school memberships and
    guardianships of `own_accounts` only, when given (the plan diffs no more of them)."""
    full = _state_queries(district_id)
    ids = _ids_in(accounts)
    own = ids if own_accounts is None else _ids_in(own_accounts)
    queries = {}
    for key, on, of in (
        ("class_memberships", ClassMembership.account_id, ids),
        ("links", SisLink.account_id, ids),
        ("org_memberships", OrgMembership.account_id, own),
        ("accounts", Account.id, own),
    ):
        stmt, schema = full[key]
        if key == "accounts":
            stmt = select(*_ACCOUNT_COLS)
        queries[key] = (stmt.where(on == of), schema)
    queries["contacts"] = (_contacts_of(own), CONTACTS_SCHEMA)
    stmt, schema = full["guardianships"]
    queries["guardianships"] = (
        stmt.where(
            or_(Guardianship.parent_account_id == own, Guardianship.student_account_id == own)
        ),
        schema,
    )
    return queries


def _count_total(conn: Connection, district_id: int, kind: str) -> int:
    """The district's active SIS people or enrollments (`kind`), for a hold threshold
    a scoped read cannot decide (0.13 s and 0.83 s of server time at a million people,
    which most maintenance drops no longer spend)."""
    if kind == "people":
        stmt = select(func.count()).where(SisLink.district_id == district_id, SisLink.active)
    else:
        stmt = (
            select(func.count())
            .select_from(ClassMembership)
            .join(Class, Class.id == ClassMembership.class_id)
            .where(
                Class.district_id == district_id,
                ClassMembership.source == "sis",
                ClassMembership.active,
            )
        )
    return int(conn.execute(stmt).scalar_one())


_ACCOUNT_COLS = (Account.id, Account.first_name, Account.last_name, Account.dob, Account.grade)
_CONTACT_COLS = (
    ContactPoint.id,
    ContactPoint.account_id,
    ContactPoint.kind,
    ContactPoint.value,
    ContactPoint.verified,
    ContactPoint.source,
)


def _state_queries(district_id: int) -> dict[str, tuple[Select, dict[str, Any]]]:
    """The district's state, one query per table, biggest first (for `read_many`).

    Accounts and contacts of the district's people are read by joining the links (no
    id lists); memberships are SIS-sourced only (manual ones belong to the app, R6).
    """
    linked_ids = select(SisLink.account_id).where(SisLink.district_id == district_id)
    return {
        "class_memberships": (
            select(
                ClassMembership.id,
                ClassMembership.class_id,
                ClassMembership.account_id,
                ClassMembership.role,
                ClassMembership.active,
            )
            .join(Class, Class.id == ClassMembership.class_id)
            .where(and_(Class.district_id == district_id, ClassMembership.source == "sis")),
            CLASS_MEMBERSHIPS_SCHEMA,
        ),
        "org_memberships": (
            select(
                OrgMembership.id,
                OrgMembership.org_id,
                OrgMembership.account_id,
                OrgMembership.role,
                OrgMembership.active,
            )
            .join(Organisation, Organisation.id == OrgMembership.org_id)
            .where(Organisation.district_id == district_id, OrgMembership.source == "sis"),
            ORG_MEMBERSHIPS_SCHEMA,
        ),
        "contacts": (
            select(*_CONTACT_COLS).where(ContactPoint.account_id.in_(linked_ids)),
            CONTACTS_SCHEMA,
        ),
        "links": (
            select(
                SisLink.id,
                SisLink.person_key,
                SisLink.role,
                SisLink.sis_id,
                SisLink.account_id,
                SisLink.active,
            ).where(SisLink.district_id == district_id),
            LINKS_SCHEMA,
        ),
        "accounts": (
            select(*_ACCOUNT_COLS).where(Account.id.in_(linked_ids)),
            ACCOUNTS_SCHEMA,
        ),
        "guardianships": (
            select(
                Guardianship.id,
                Guardianship.parent_account_id,
                Guardianship.student_account_id,
                Guardianship.active,
            ).where(Guardianship.district_id == district_id),
            GUARDIANSHIPS_SCHEMA,
        ),
        "classes": (
            select(
                Class.id,
                Class.sis_class_id,
                Class.school_id,
                Class.sis_name,
                Class.name,
                Class.name_edited,
                Class.owner_account_id,
                Class.active,
            ).where(Class.district_id == district_id, Class.sis_class_id.is_not(None)),
            CLASSES_SCHEMA,
        ),
        "orgs": (
            select(
                Organisation.id,
                Organisation.sis_id,
                Organisation.name,
                Organisation.kind,
                Organisation.active,
            ).where(Organisation.district_id == district_id),
            ORGS_SCHEMA,
        ),
    }


@dataclass(frozen=True)
class RunRef:
    id: int
    drop_id: str
    finished_at: datetime | None
    received_at: datetime | None


def latest_run(conn: Connection, district_id: int) -> RunRef | None:
    """The district's latest drop that changed its data (applied or held)."""
    row = conn.execute(
        select(SyncRun.id, SyncRun.drop_id, SyncRun.finished_at, SyncRun.received_at)
        .where(SyncRun.district_id == district_id, SyncRun.status.in_(("applied", "held")))
        .order_by(SyncRun.id.desc())
        .limit(1)
    ).first()
    return RunRef(*row) if row else None


def utcnow() -> datetime:
    return datetime.now(UTC)
