"""Writing notifications to the outbox, in the caller's transaction.

Who hears what (SYNC_RULES R12-R15):
- Initial sync of a district: no one automatically (R12). `enqueue_manual` sends the
  fixed `welcome` template to a district's teachers, students or parents on an
  administrator's request, once per person and role.
- Every maintenance sync: each teacher gets one `classes_added` message listing the
  classes the sync added them to (R13).
- Students and parents get `class_ready` when the class's teacher claims it
  (`enqueue_claim_notifications`, called by the claim operation) (R13). Decision where
  the rules are silent: a student or parent a maintenance sync adds to a class that is
  already claimed gets the same `class_ready` message straight away, since the claim
  they would wait for has already happened. Both paths share one idempotency key per
  (class, person), so nobody hears about the same class twice.
- The district's administrator (DistrictSettings.admin_email, and only that address)
  gets `sync_report` for every applied, held or rejected drop (R15) and
  `freshness_warning` before the 90-day rule runs out (queued by `lib/freshness.py`;
  rendered and sent here).

Channel (R14): people synced by email get email, people synced by a mobile number
get a text. "Synced by" is read from the account's contact points: an SIS-sourced
contact first (email before phone), else the account's own contacts (an account the
sync linked through a contact its owner had added, R1). No notification is ever
written for a device being added to an account (there is no such trigger here).

Every row carries an idempotency key that says what it is about; inserts skip keys
that exist (ON CONFLICT DO NOTHING), so enqueuing the same thing twice is harmless.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, and_, select
from sqlalchemy.dialects import postgresql, sqlite

from roster_pipelines.lib.store.frames import chunks
from roster_pipelines.lib.store.models import (
    Account,
    Class,
    ClassMembership,
    ContactPoint,
    DistrictSettings,
    NotificationOutbox,
    Organisation,
    SisLink,
    SyncRun,
)

EMAIL, SMS = "email", "sms"
AUDIENCES = {"teachers": "teacher", "students": "student", "parents": "parent"}


def _insert_ignoring_duplicates(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert rows whose idempotency key is new; returns how many were written."""
    if not rows:
        return 0
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    inserted = 0
    for chunk in chunks(rows, 1000):
        keys = [r["idempotency_key"] for r in chunk]
        existing = set(
            conn.execute(
                select(NotificationOutbox.idempotency_key).where(
                    NotificationOutbox.idempotency_key.in_(keys)
                )
            ).scalars()
        )
        fresh = list(
            {
                r["idempotency_key"]: r for r in chunk if r["idempotency_key"] not in existing
            }.values()
        )
        if fresh:
            # ON CONFLICT DO NOTHING also covers a concurrent writer of the same key.
            conn.execute(
                dialect.insert(NotificationOutbox).on_conflict_do_nothing(
                    index_elements=["idempotency_key"]
                ),
                fresh,
            )
        inserted += len(fresh)
    return inserted


def _row(
    *,
    district_id: int,
    sync_run_id: int | None,
    account_id: int | None,
    channel: str,
    destination: str,
    template: str,
    payload: dict[str, Any],
    key: str,
) -> dict[str, Any]:
    return {
        "district_id": district_id,
        "sync_run_id": sync_run_id,
        "account_id": account_id,
        "channel": channel,
        "destination": destination,
        "template": template,
        "payload": payload,
        "idempotency_key": key,
        "status": "pending",
        "attempts": 0,
    }


def channels_for(conn: Connection, account_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """account id -> (channel, destination) by R14; accounts without contact are left out."""
    ids = sorted(set(account_ids))
    best: dict[int, tuple[tuple[int, int, int, int], str, str]] = {}
    for chunk in chunks(ids):
        rows = conn.execute(
            select(
                ContactPoint.id,
                ContactPoint.account_id,
                ContactPoint.kind,
                ContactPoint.value,
                ContactPoint.source,
                ContactPoint.verified,
            ).where(ContactPoint.account_id.in_(chunk))
        ).all()
        for r in rows:
            rank = (
                0 if r.source == "sis" else 1,
                0 if r.kind == "email" else 1,
                0 if r.verified else 1,
                r.id,
            )
            if r.account_id not in best or rank < best[r.account_id][0]:
                channel = EMAIL if r.kind == "email" else SMS
                best[r.account_id] = (rank, channel, r.value)
    return {a: (c, v) for a, (_, c, v) in best.items()}


def _names(
    conn: Connection, account_ids: Iterable[int]
) -> dict[int, tuple[str | None, str | None]]:
    out: dict[int, tuple[str | None, str | None]] = {}
    for chunk in chunks(sorted(set(account_ids))):
        for r in conn.execute(
            select(Account.id, Account.first_name, Account.last_name).where(Account.id.in_(chunk))
        ):
            out[r.id] = (r.first_name, r.last_name)
    return out


def _full_name(name: tuple[str | None, str | None] | None) -> str:
    if not name:
        return ""
    return " ".join(p for p in name if p)


def _district_name(conn: Connection, district_id: int) -> str:
    return conn.execute(
        select(Organisation.name).where(Organisation.id == district_id)
    ).scalar_one()


def _class_info(conn: Connection, class_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for chunk in chunks(sorted(set(class_ids))):
        rows = conn.execute(
            select(
                Class.id,
                Class.name,
                Class.claimed,
                Class.owner_account_id,
                Class.district_id,
                Organisation.name.label("school"),
            )
            .join(Organisation, Organisation.id == Class.school_id)
            .where(Class.id.in_(chunk))
        ).all()
        for r in rows:
            out[r.id] = dict(r._mapping)
    return out


def _class_ready_rows(
    conn: Connection,
    members: list[tuple[int, int, str]],
    *,
    sync_run_id: int | None,
) -> list[dict[str, Any]]:
    """`class_ready` rows for (class_id, account_id, role) of students and parents."""
    if not members:
        return []
    info = _class_info(conn, (c for c, _, _ in members))
    owners = {i["owner_account_id"] for i in info.values() if i["owner_account_id"]}
    names = _names(conn, [a for _, a, _ in members] + list(owners))
    channels = channels_for(conn, (a for _, a, _ in members))
    district_names: dict[int, str] = {}
    rows = []
    for class_id, account_id, role in members:
        cls = info.get(class_id)
        if cls is None or account_id not in channels:
            continue
        channel, destination = channels[account_id]
        district_id = cls["district_id"]
        if district_id not in district_names:
            district_names[district_id] = _district_name(conn, district_id)
        rows.append(
            _row(
                district_id=district_id,
                sync_run_id=sync_run_id,
                account_id=account_id,
                channel=channel,
                destination=destination,
                template="class_ready",
                payload={
                    "first_name": (names.get(account_id) or (None, None))[0],
                    "role": role,
                    "class_id": class_id,
                    "class_name": cls["name"],
                    "school": cls["school"],
                    "teacher": _full_name(names.get(cls["owner_account_id"])),
                    "district_name": district_names[district_id],
                },
                key=f"class_ready:{class_id}:{account_id}:{role}",
            )
        )
    return rows


def enqueue_sync_notifications(conn: Connection, plan: Any, applied: Any, sync_run_id: int) -> int:
    """The people notifications of one applied (or held) drop, in its transaction.

    `plan` is the `SyncPlan` (for `district_id`, `is_initial`), `applied` the
    `AppliedChanges` of `apply_plan` (real ids of the memberships added).
    """
    if plan.is_initial:  # R12: nothing automatic after a district's first sync
        return 0
    added: pl.DataFrame = applied.class_memberships_added
    if not added.height:
        return 0
    district_id = plan.district_id
    district_name = _district_name(conn, district_id)
    info = _class_info(conn, added["class_id"].unique().to_list())

    # Teachers: one message per teacher listing every class the drop added them to.
    teacher_classes: dict[int, list[int]] = defaultdict(list)
    ready: list[tuple[int, int, str]] = []
    for class_id, account_id, role in (
        added.select("class_id", "account_id", "role").unique(maintain_order=True).iter_rows()
    ):
        if class_id not in info:
            continue
        if role == "teacher":
            teacher_classes[account_id].append(class_id)
        elif info[class_id]["claimed"]:
            ready.append((class_id, account_id, role))
    rows: list[dict[str, Any]] = []
    if teacher_classes:
        channels = channels_for(conn, teacher_classes)
        names = _names(conn, teacher_classes)
        for account_id, class_ids in sorted(teacher_classes.items()):
            if account_id not in channels:
                continue
            channel, destination = channels[account_id]
            rows.append(
                _row(
                    district_id=district_id,
                    sync_run_id=sync_run_id,
                    account_id=account_id,
                    channel=channel,
                    destination=destination,
                    template="classes_added",
                    payload={
                        "first_name": (names.get(account_id) or (None, None))[0],
                        "district_name": district_name,
                        "classes": [
                            {"id": c, "name": info[c]["name"], "school": info[c]["school"]}
                            for c in sorted(class_ids)
                        ],
                    },
                    key=f"run:{sync_run_id}:classes_added:{account_id}",
                )
            )
    rows += _class_ready_rows(conn, ready, sync_run_id=sync_run_id)
    return _insert_ignoring_duplicates(conn, rows)


def enqueue_claim_notifications(
    conn: Connection, class_id: int, now: datetime | None = None
) -> int:
    """Students and parents of a class hear that it is active, when its teacher claims
    it (R13). Call in the claim's transaction. Returns the number of rows written."""
    del now  # rows take the database's time; kept for the claim operation's signature
    members = conn.execute(
        select(ClassMembership.class_id, ClassMembership.account_id, ClassMembership.role).where(
            and_(
                ClassMembership.class_id == class_id,
                ClassMembership.active,
                ClassMembership.role.in_(("student", "parent")),
            )
        )
    ).all()
    rows = _class_ready_rows(conn, [tuple(m) for m in members], sync_run_id=None)
    return _insert_ignoring_duplicates(conn, rows)


def enqueue_manual(conn: Connection, district_id: int, audience: str) -> int:
    """An administrator's manual send (R12): the fixed `welcome` message to every active
    SIS-linked teacher, student or parent of the district who has not had it yet."""
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, not {audience!r}")
    role = AUDIENCES[audience]
    account_ids = (
        conn.execute(
            select(SisLink.account_id)
            .where(SisLink.district_id == district_id, SisLink.role == role, SisLink.active)
            .distinct()
        )
        .scalars()
        .all()
    )
    district_name = _district_name(conn, district_id)
    schools: dict[int, list[str]] = defaultdict(list)
    from roster_pipelines.lib.store.models import OrgMembership

    for chunk in chunks(sorted(account_ids)):
        for account_id, name in conn.execute(
            select(OrgMembership.account_id, Organisation.name)
            .join(Organisation, Organisation.id == OrgMembership.org_id)
            .where(
                OrgMembership.account_id.in_(chunk),
                OrgMembership.active,
                OrgMembership.role == role,
                Organisation.district_id == district_id,
            )
            .order_by(Organisation.name)
        ):
            schools[account_id].append(name)
    channels = channels_for(conn, account_ids)
    names = _names(conn, account_ids)
    rows = [
        _row(
            district_id=district_id,
            sync_run_id=None,
            account_id=account_id,
            channel=channels[account_id][0],
            destination=channels[account_id][1],
            template="welcome",
            payload={
                "first_name": (names.get(account_id) or (None, None))[0],
                "role": role,
                "district_name": district_name,
                "destination": channels[account_id][1],
                "schools": schools.get(account_id, []),
            },
            key=f"welcome:{district_id}:{account_id}:{role}",
        )
        for account_id in sorted(account_ids)
        if account_id in channels
    ]
    return _insert_ignoring_duplicates(conn, rows)


def admin_contact(conn: Connection, district_id: int) -> tuple[str | None, str | None]:
    row = conn.execute(
        select(DistrictSettings.admin_email, DistrictSettings.admin_name).where(
            DistrictSettings.district_id == district_id
        )
    ).first()
    return (row.admin_email, row.admin_name) if row else (None, None)


def _admin_account(conn: Connection, email: str) -> int | None:
    return conn.execute(
        select(ContactPoint.account_id).where(
            ContactPoint.kind == "email", ContactPoint.value == email
        )
    ).scalar()


def enqueue_admin_report(
    conn: Connection, sync_run_id: int, report: dict[str, Any], *, report_location: str = ""
) -> int:
    """The sync report email to the district's own administrator (R15); none when the
    district has no administrator address. `report` is `ReportData.to_json()`."""
    district_id, status = conn.execute(
        select(SyncRun.district_id, SyncRun.status).where(SyncRun.id == sync_run_id)
    ).one()
    if status == "dry_run":
        return 0
    email, name = admin_contact(conn, district_id)
    if not email:
        return 0
    payload = {
        **{
            k: report[k]
            for k in (
                "district",
                "district_name",
                "drop",
                "status",
                "status_label",
                "is_initial",
                "changes",
                "hold_reasons",
                "issue_totals",
                "schools",
            )
        },
        "issue_codes": [
            {k: c[k] for k in ("code", "severity", "count", "description")}
            for c in report.get("issue_codes", [])
        ],
        "admin_name": name,
        "report_location": report_location,
    }
    row = _row(
        district_id=district_id,
        sync_run_id=sync_run_id,
        account_id=_admin_account(conn, email),
        channel=EMAIL,
        destination=email,
        template="sync_report",
        payload=payload,
        key=f"run:{sync_run_id}:sync_report",
    )
    return _insert_ignoring_duplicates(conn, [row])


def enqueue_report_email(engine: Any, report: dict[str, Any], *, report_location: str = "") -> int:
    """`enqueue_admin_report` in its own transaction, right after the report is written
    (the report needs the applied data, so it cannot share the apply transaction; the
    idempotency key makes a re-run of the report step enqueue nothing new)."""
    run_id = report.get("sync_run_id")
    if run_id is None:
        return 0
    with engine.begin() as conn:
        return enqueue_admin_report(conn, run_id, report, report_location=report_location)
