"""Change marks: has anything but its own sync written a district's roster since its
last applied drop? (migration 0006, Postgres.)

Row triggers move a district's mark when its roster rows are written outside its own
sync. The sync marks its transaction (`mark_sync_transaction`) so its own rows do not
count, marks the other districts of the shared accounts it changed
(`mark_districts_sharing`), and records the mark it leaves on its run. A district is
unchanged since its last apply when its mark still equals that run's: the condition
an incremental maintenance sync needs (docs/INCREMENTAL_SYNC.md). SQLite keeps no
marks (`current_mark` is None) and always needs the full plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from sqlalchemy import Connection, select, text

from roster_pipelines.lib.plan import SyncPlan
from roster_pipelines.lib.store.models import RosterChangeMark, SyncRun

SYNC_SETTING = "roster.sync_district"


def _is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def mark_sync_transaction(conn: Connection, district_id: int) -> None:
    """The rest of this transaction is the district's sync: the triggers skip its rows."""
    if _is_postgres(conn):
        conn.execute(
            text("SELECT set_config(:name, :district, true)"),
            {"name": SYNC_SETTING, "district": str(district_id)},
        )


def current_mark(conn: Connection, district_id: int) -> int | None:
    """The district's mark (0 before anything marked it); None where none are kept."""
    if not _is_postgres(conn):
        return None
    seq = conn.execute(
        select(RosterChangeMark.seq).where(RosterChangeMark.district_id == district_id)
    ).scalar()
    return int(seq or 0)


@dataclass(frozen=True)
class CleanBase:
    """The district's latest run, applied in full, with nothing written since."""

    run_id: int
    drop_id: str
    plan_version: str | None
    roster_digest: str | None


def clean_base_run(conn: Connection, district_id: int) -> CleanBase | None:
    """The district's latest applied or held run when it applied in full and nothing
    but its sync has written the district's roster since (Postgres); else None."""
    mark = current_mark(conn, district_id)
    if mark is None:
        return None
    latest = conn.execute(
        select(
            SyncRun.id,
            SyncRun.drop_id,
            SyncRun.status,
            SyncRun.change_mark,
            SyncRun.plan_version,
            SyncRun.roster_digest,
        )
        .where(SyncRun.district_id == district_id, SyncRun.status.in_(("applied", "held")))
        .order_by(SyncRun.id.desc())
        .limit(1)
    ).first()
    if latest is None or latest.status != "applied" or latest.change_mark != mark:
        return None
    return CleanBase(int(latest.id), latest.drop_id, latest.plan_version, latest.roster_digest)


def unchanged_since_last_apply(conn: Connection, district_id: int) -> bool:
    """True when the district's latest run applied in full and nothing but its sync has
    written the district's roster since (Postgres); False otherwise, or on SQLite."""
    return clean_base_run(conn, district_id) is not None


def mark_districts_sharing(conn: Connection, plan: SyncPlan) -> int:
    """After the plan's writes: move the marks of the other districts linking an account
    whose rows the plan changed in a way they see (names and dates, contact points, and
    SIS links: whether an account is linked elsewhere changes how its contacts are
    synced). Accounts the plan created (negative temporary ids) are in no other
    district. Returns how many districts were marked (Postgres; 0 elsewhere)."""
    if not _is_postgres(conn):
        return 0
    accounts = pl.concat(
        [
            plan.accounts.updates["id"].cast(pl.Int64),
            plan.contacts.adds["account_id"].cast(pl.Int64),
            plan.links.adds["account_id"].cast(pl.Int64),
        ]
    )
    links = pl.concat([plan.links.reactivations["id"], plan.links.removals["id"]])
    marked = conn.execute(
        text(
            "WITH touched AS ("
            " SELECT unnest(CAST(:accounts AS bigint[])) AS account_id"
            " UNION SELECT account_id FROM contact_points WHERE id = ANY(CAST(:contacts AS bigint[]))"
            " UNION SELECT account_id FROM sis_links WHERE id = ANY(CAST(:links AS bigint[])))"
            " INSERT INTO roster_change_marks AS m (district_id, seq, changed_at)"
            " SELECT DISTINCT l.district_id, 1, now()"
            " FROM sis_links l JOIN touched t ON t.account_id = l.account_id"
            " WHERE l.district_id <> :d"
            " ON CONFLICT (district_id) DO UPDATE SET seq = m.seq + 1, changed_at = now()"
            " RETURNING m.district_id"
        ),
        {
            "accounts": accounts.filter(accounts > 0).unique().to_list(),
            "contacts": plan.contacts.updates["id"].cast(pl.Int64).to_list(),
            "links": links.cast(pl.Int64).to_list(),
            "d": plan.district_id,
        },
    ).all()
    return len(marked)
