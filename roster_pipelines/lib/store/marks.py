"""Change marks: what was written in a district's roster outside its own sync since
its last applied drop (migrations 0006 and 0008, Postgres).

Row triggers record the accounts whose rows (contact points included, since 0008)
anything but the district's sync wrote (`roster_account_changes`) and move a
per-district counter when its schools or settings are written (`roster_change_marks`).
The sync marks its transaction (`mark_sync_transaction`) so its own rows do not count,
records the accounts of other districts whose names or contact points it wrote
(`log_shared_account_changes`), and its apply deletes the account records its plan saw
(`consume_account_changes`) and records the counter its plan saw on its run. An
incremental plan (lib/incremental.py) then needs: the last run applied in full with
the counter unchanged since (`clean_base_run`), and the recorded accounts added to its
scope. SQLite keeps no marks: there every sync plans in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from sqlalchemy import Connection, select, text

from roster_pipelines.lib.plan import SyncPlan
from roster_pipelines.lib.store.frames import is_postgres, read_frame
from roster_pipelines.lib.store.models import RosterAccountChange, RosterChangeMark, SyncRun

SYNC_SETTING = "roster.sync_district"
_CHANGES_SCHEMA = {"id": pl.Int64, "account_id": pl.Int64}


def mark_sync_transaction(conn: Connection, district_id: int) -> None:
    """The rest of this transaction is the district's sync: the triggers skip its rows."""
    if is_postgres(conn):
        conn.execute(
            text("SELECT set_config(:name, :district, true)"),
            {"name": SYNC_SETTING, "district": str(district_id)},
        )


@dataclass(frozen=True)
class ChangesSeen:
    """What a plan saw of the writes made outside the sync (read before its state)."""

    mark: int | None  # the district-wide counter; None where no marks are kept
    account_changes: pl.DataFrame  # id, account_id: the recorded account writes

    @property
    def accounts(self) -> pl.Series:
        return self.account_changes["account_id"].unique().sort()


def changes_seen(conn: Connection, district_id: int) -> ChangesSeen:
    """The district's counter and its recorded account writes, now."""
    if not is_postgres(conn):
        return ChangesSeen(None, pl.DataFrame(schema=_CHANGES_SCHEMA))
    seq = conn.execute(
        select(RosterChangeMark.seq).where(RosterChangeMark.district_id == district_id)
    ).scalar()
    changes = read_frame(
        conn,
        select(RosterAccountChange.id, RosterAccountChange.account_id).where(
            RosterAccountChange.district_id == district_id
        ),
        _CHANGES_SCHEMA,
    )
    return ChangesSeen(int(seq or 0), changes)


@dataclass(frozen=True)
class CleanBase:
    """The district's latest run, applied in full, with its schools and settings
    unwritten since."""

    run_id: int
    drop_id: str
    plan_version: str | None
    roster_digest: str | None


def clean_base_run(conn: Connection, district_id: int, seen: ChangesSeen) -> CleanBase | None:
    """The district's latest applied or held run when it applied in full and the
    district-wide counter is the one its plan saw; else None (and on SQLite)."""
    if seen.mark is None:
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
    if latest is None or latest.status != "applied" or latest.change_mark != seen.mark:
        return None
    return CleanBase(int(latest.id), latest.drop_id, latest.plan_version, latest.roster_digest)


def unchanged_since_last_apply(conn: Connection, district_id: int) -> bool:
    """True when nothing but the district's sync has written its roster since its last
    run applied in full (Postgres); False otherwise, or on SQLite."""
    seen = changes_seen(conn, district_id)
    return clean_base_run(conn, district_id, seen) is not None and not seen.account_changes.height


def consume_account_changes(conn: Connection, ids: pl.Series) -> None:
    """The apply of a plan that saw these account writes (`ChangesSeen.account_changes`
    ids): they are planned now."""
    if ids.len() and is_postgres(conn):
        conn.execute(
            text("DELETE FROM roster_account_changes WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": ids.to_list()},
        )


def accounts_written(conn: Connection, plan: SyncPlan) -> pl.Series:
    """The existing accounts whose names, dates of birth or contact points the plan
    changes (Postgres: a replaced contact point's account is read from the database;
    the accounts the plan creates have no id yet and are left out)."""
    ids = pl.concat(
        [
            plan.accounts.updates["id"].cast(pl.Int64),
            plan.contacts.adds["account_id"].cast(pl.Int64),
        ]
    )
    replaced = plan.contacts.updates["id"].cast(pl.Int64).unique().sort().to_list()
    if replaced:
        owners = conn.execute(
            text("SELECT account_id FROM contact_points WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": replaced},
        ).scalars()
        ids = pl.concat([ids, pl.Series(list(owners), dtype=pl.Int64)])
    return ids.filter(ids > 0).unique().sort().rename("account_id")


def log_shared_account_changes(conn: Connection, plan: SyncPlan) -> int:
    """After the plan's writes: record, for every other district linking them or
    listing them as members, the accounts whose names, dates or contact points the plan
    changed (`accounts_written`: the rows of another district's scope a sync writes;
    classes are planned whole). Returns how many records were written (Postgres; 0
    elsewhere)."""
    if not is_postgres(conn):
        return 0
    written = accounts_written(conn, plan)
    if not written.len():
        return 0
    return conn.execute(
        text(_SHARED_CHANGES_SQL), {"ids": written.to_list(), "d": plan.district_id}
    ).rowcount


# The written accounts' other districts: those linking them, and those whose schools
# list them as members (the similar-people scan looks at those too, migration 0009).
_SHARED_CHANGES_SQL = """
WITH written AS (SELECT unnest(CAST(:ids AS bigint[])) AS account_id)
INSERT INTO roster_account_changes (district_id, account_id)
SELECT DISTINCT x.district_id, x.account_id FROM (
    SELECT l.district_id, l.account_id FROM sis_links l JOIN written w USING (account_id)
    UNION
    SELECT coalesce(o.district_id, o.id), om.account_id FROM org_memberships om
    JOIN written w USING (account_id) JOIN organisations o ON o.id = om.org_id
) AS x WHERE x.district_id <> :d
"""
