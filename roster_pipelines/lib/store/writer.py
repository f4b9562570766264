"""Applies a sync plan in bulk, inside the caller's transaction.

Writes are set-based: one executemany per table and kind of change, never an ORM
loop per row. New rows are inserted with RETURNING so their real ids replace the
plan's temporary negative ids in every reference.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, Table, bindparam, insert, select, update

from roster_pipelines.lib.plan import BEFORE, SyncPlan, TableChanges, held_changes, removals_frame
from roster_pipelines.lib.store.frames import chunks, concat, read_frame, records
from roster_pipelines.lib.store.models import (
    Account,
    Class,
    ClassMembership,
    ContactPoint,
    Guardianship,
    HeldChange,
    Hold,
    Organisation,
    OrgMembership,
    SisLink,
    SyncIssue,
    SyncRun,
)

_JOIN_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I look-alikes


def _table(model: Any) -> Table:
    return model.__table__


def _insert_returning_ids(conn: Connection, model: Any, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    result = conn.execute(insert(model).returning(model.id, sort_by_parameter_order=True), rows)
    return [int(r[0]) for r in result.all()]


def _id_map(temp_ids: pl.Series, real_ids: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"temp_id": temp_ids, "real_id": pl.Series(real_ids, dtype=pl.Int64)})


def _remap(frame: pl.DataFrame, column: str, id_map: pl.DataFrame) -> pl.DataFrame:
    """Replace temporary (negative) ids in `column` with the inserted rows' real ids."""
    if not frame.height or not id_map.height:
        return frame
    return (
        frame.join(id_map, left_on=column, right_on="temp_id", how="left")
        .with_columns(pl.coalesce("real_id", column).alias(column))
        .drop("real_id")
    )


def _set_active(
    conn: Connection, model: Any, ids: pl.DataFrame, *, active: bool, now: datetime
) -> None:
    id_list = ids["id"].to_list()
    for chunk in chunks(id_list):
        conn.execute(
            update(model)
            .where(model.id.in_(chunk))
            .values(active=active, removed_at=None if active else now, updated_at=now)
        )


def _update_by_id(conn: Connection, model: Any, frame: pl.DataFrame, now: datetime) -> None:
    if not frame.height:
        return
    frame = frame.select(c for c in frame.columns if not c.endswith(BEFORE))
    columns = [c for c in frame.columns if c != "id"]
    stmt = (
        update(_table(model))
        .where(_table(model).c.id == bindparam("b_id"))
        .values({c: bindparam(f"b_{c}") for c in columns} | {"updated_at": now})
    )
    conn.execute(stmt, records(frame, {c: f"b_{c}" for c in frame.columns}))


def _apply_links(
    conn: Connection,
    model: Any,
    changes: TableChanges,
    extra: dict[str, Any],
    *,
    removals: bool,
    now: datetime,
) -> None:
    if changes.adds.height:
        conn.execute(insert(model), [r | extra for r in changes.adds.to_dicts()])
    _set_active(conn, model, changes.reactivations, active=True, now=now)
    if removals:
        _set_active(conn, model, changes.removals, active=False, now=now)


def _join_codes(n: int) -> list[str]:
    return ["".join(secrets.choice(_JOIN_CODE_ALPHABET) for _ in range(10)) for _ in range(n)]


@dataclass
class AppliedChanges:
    """What `apply_plan` wrote: counts, and the added rows with their real ids (for
    notifications and reports)."""

    counts: dict[str, int]
    classes_added: pl.DataFrame  # id, sis_class_id, school_org_id, sis_name, owner_account_id
    class_memberships_added: pl.DataFrame  # class_id, account_id, role (adds and reactivations)
    accounts_added: pl.DataFrame  # id, person_key


def apply_plan(conn: Connection, plan: SyncPlan, *, now: datetime) -> AppliedChanges:
    """Write the plan; a held plan applies additions and updates but no removals."""
    removals = not plan.held
    district_id = plan.district_id

    # Schools and programs.
    school_adds = plan.schools.adds
    school_ids = _insert_returning_ids(
        conn,
        Organisation,
        [
            {
                "kind": r["kind"],
                "district_id": district_id,
                "sis_id": r["school_id"],
                "name": r["name"],
            }
            for r in school_adds.to_dicts()
        ],
    )
    org_map = _id_map(school_adds["temp_id"], school_ids)
    _update_by_id(conn, Organisation, plan.schools.updates, now)
    _set_active(conn, Organisation, plan.schools.reactivations, active=True, now=now)
    if removals:
        _set_active(conn, Organisation, plan.schools.removals, active=False, now=now)

    # Accounts.
    account_adds = plan.accounts.adds
    account_ids = _insert_returning_ids(
        conn, Account, records(account_adds.select("first_name", "last_name", "dob", "grade"))
    )
    account_map = _id_map(account_adds["temp_id"], account_ids)
    _update_by_id(conn, Account, plan.accounts.updates, now)

    # SIS links.
    link_adds = _remap(plan.links.adds, "account_id", account_map)
    _apply_links(
        conn,
        SisLink,
        TableChanges(
            adds=link_adds, reactivations=plan.links.reactivations, removals=plan.links.removals
        ),
        {"district_id": district_id},
        removals=removals,
        now=now,
    )

    # Contact points: R4 updates (a changed unverified SIS contact) before the adds.
    _update_by_id(conn, ContactPoint, plan.contacts.updates, now)
    contact_adds = _remap(plan.contacts.adds, "account_id", account_map)
    if contact_adds.height:
        conn.execute(
            insert(ContactPoint),
            [r | {"verified": False, "source": "sis"} for r in contact_adds.to_dicts()],
        )

    # Classes: created unclaimed, named by the SIS, with a fresh join code (R5).
    class_adds = _remap(
        _remap(plan.classes.adds, "school_org_id", org_map), "owner_account_id", account_map
    )
    codes = _join_codes(class_adds.height)
    class_ids = _insert_returning_ids(
        conn,
        Class,
        [
            {
                "district_id": district_id,
                "school_id": r["school_org_id"],
                "sis_class_id": r["sis_class_id"],
                "sis_name": r["sis_name"],
                "name": r["sis_name"],
                "owner_account_id": r["owner_account_id"],
                "join_code": code,
            }
            for r, code in zip(class_adds.to_dicts(), codes, strict=True)
        ],
    )
    class_map = _id_map(class_adds["temp_id"], class_ids)
    class_updates = _remap(
        _remap(plan.classes.updates, "school_org_id", org_map), "owner_account_id", account_map
    ).rename({"school_org_id": "school_id"})
    _update_by_id(conn, Class, class_updates, now)
    _set_active(conn, Class, plan.classes.reactivations, active=True, now=now)
    if removals:
        _set_active(conn, Class, plan.classes.removals, active=False, now=now)

    # Memberships and guardianships.
    om = plan.org_memberships
    _apply_links(
        conn,
        OrgMembership,
        TableChanges(
            adds=_remap(_remap(om.adds, "org_id", org_map), "account_id", account_map),
            reactivations=om.reactivations,
            removals=om.removals,
        ),
        {"source": "sis"},
        removals=removals,
        now=now,
    )
    cm = plan.class_memberships
    class_membership_adds = _remap(
        _remap(cm.adds, "class_id", class_map), "account_id", account_map
    )
    _apply_links(
        conn,
        ClassMembership,
        TableChanges(
            adds=class_membership_adds, reactivations=cm.reactivations, removals=cm.removals
        ),
        {"source": "sis"},
        removals=removals,
        now=now,
    )
    gu = plan.guardianships
    _apply_links(
        conn,
        Guardianship,
        TableChanges(
            adds=_remap(
                _remap(gu.adds, "parent_account_id", account_map), "student_account_id", account_map
            ),
            reactivations=gu.reactivations,
            removals=gu.removals,
        ),
        {"district_id": district_id},
        removals=removals,
        now=now,
    )
    reactivated = _read_memberships(conn, cm.reactivations)
    return AppliedChanges(
        counts=plan.counts(include_removals=removals),
        classes_added=class_adds.with_columns(id=pl.Series(class_ids, dtype=pl.Int64)).drop(
            "temp_id"
        ),
        class_memberships_added=pl.concat(
            [class_membership_adds.select(reactivated.columns), reactivated]
        ),
        accounts_added=pl.DataFrame(
            {"id": pl.Series(account_ids, dtype=pl.Int64), "person_key": account_adds["person_key"]}
        ),
    )


def _read_memberships(conn: Connection, ids: pl.DataFrame) -> pl.DataFrame:
    schema = {"class_id": pl.Int64, "account_id": pl.Int64, "role": pl.String}
    return concat(
        (
            read_frame(
                conn,
                select(
                    ClassMembership.class_id, ClassMembership.account_id, ClassMembership.role
                ).where(ClassMembership.id.in_(chunk)),
                schema,
            )
            for chunk in chunks(ids["id"].to_list())
        ),
        schema,
    )


def record_sync_run(
    conn: Connection,
    *,
    district_id: int,
    drop_id: str,
    content_hash: str | None,
    status: str,
    is_initial: bool,
    counts: dict[str, int],
    changes: dict[str, int] | None,
    planned: dict[str, int] | None,
    issues: pl.DataFrame,
    started_at: datetime,
    finished_at: datetime,
    received_at: datetime | None = None,
) -> int:
    """One sync_runs row with its issues; returns its id."""
    run_id = conn.execute(
        insert(SyncRun)
        .values(
            district_id=district_id,
            drop_id=drop_id,
            content_hash=content_hash,
            status=status,
            is_initial=is_initial,
            counts=counts,
            changes=changes,
            planned=planned,
            started_at=started_at,
            finished_at=finished_at,
            received_at=received_at,
        )
        .returning(SyncRun.id)
    ).scalar_one()
    if issues.height:
        conn.execute(insert(SyncIssue), [r | {"sync_run_id": run_id} for r in issues.to_dicts()])
    return int(run_id)


def record_hold(conn: Connection, *, sync_run_id: int, plan: SyncPlan) -> int:
    """The hold and its exact list of held removals (`held_changes`)."""
    hold_id = int(
        conn.execute(
            insert(Hold)
            .values(
                sync_run_id=sync_run_id,
                district_id=plan.district_id,
                reasons=plan.hold_reasons,
                held_changes=held_changes(plan),
                status="pending",
            )
            .returning(Hold.id)
        ).scalar_one()
    )
    rows = removals_frame(plan).with_columns(hold_id=pl.lit(hold_id, pl.Int64))
    if rows.height:
        conn.execute(insert(HeldChange), rows.to_dicts())
    return hold_id


def supersede_pending_holds(conn: Connection, district_id: int) -> None:
    """A newer drop makes older pending holds moot: its own plan decides removals now."""
    conn.execute(
        update(Hold)
        .where(Hold.district_id == district_id, Hold.status == "pending")
        .values(status="superseded")
    )
