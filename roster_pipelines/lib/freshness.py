"""R9 freshness: days since each district's last applied drop, warnings and the hold rule.

One date drives everything: the `finished_at` of the district's last sync run that
applied (status `applied` or `held`; a held drop applied its additions and updates).
- The daily freshness schedule warns the district admin at 75 and 85 days
  (`WARN_DAYS`) and fails the `district_freshness` asset check at 90 (`LIMIT_DAYS`).
- The plan stage holds a drop's removals when that date is more than 90 days old
  (`removals_held`, called by `plan.guard_reasons`).

Emails are written to `notification_outbox` (issue 7 sends them), idempotently:
``freshness:<district>:<last drop date>:<75|85>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, and_, func, insert, select

from roster_pipelines.lib.store.models import (
    DistrictSettings,
    NotificationOutbox,
    Organisation,
    SyncRun,
)

LIMIT_DAYS = 90
WARN_DAYS = (75, 85)
APPLIED_STATUSES = ("applied", "held")


def _aware(value: datetime, like: datetime) -> datetime:
    return value.replace(tzinfo=like.tzinfo) if value.tzinfo is None else value


def days_since(last_applied_at: datetime | None, now: datetime) -> int | None:
    """Whole days since the last applied drop (None: the district never applied one)."""
    if last_applied_at is None:
        return None
    return (now - _aware(last_applied_at, now)).days


def removals_held(last_applied_at: datetime | None, now: datetime) -> bool:
    """R9: a drop more than 90 days after the previous applied drop holds its removals."""
    if last_applied_at is None:
        return False
    return now - _aware(last_applied_at, now) > timedelta(days=LIMIT_DAYS)


def warning_due(days: int | None) -> int | None:
    """The warning threshold (75 or 85) reached and not yet past the limit, if any."""
    if days is None or days >= LIMIT_DAYS:
        return None
    reached = [t for t in WARN_DAYS if days >= t]
    return max(reached) if reached else None


@dataclass(frozen=True)
class DistrictFreshness:
    district: str
    district_id: int
    last_applied_at: datetime | None
    days: int | None
    admin_email: str | None

    @property
    def overdue(self) -> bool:
        return self.days is not None and self.days >= LIMIT_DAYS

    @property
    def last_drop_date(self) -> date | None:
        return self.last_applied_at.date() if self.last_applied_at else None


def last_applied(conn: Connection) -> dict[int, datetime]:
    """The last applied drop's `finished_at` of every district (the one R9 date)."""
    rows = conn.execute(
        select(SyncRun.district_id, func.max(SyncRun.finished_at))
        .where(SyncRun.status.in_(APPLIED_STATUSES))
        .group_by(SyncRun.district_id)
    ).all()
    return {int(d): at for d, at in rows if at is not None}


def district_freshness(conn: Connection, now: datetime) -> list[DistrictFreshness]:
    """Every district's freshness, sorted by district id."""
    last = last_applied(conn)
    rows = conn.execute(
        select(Organisation.id, Organisation.sis_id, DistrictSettings.admin_email)
        .outerjoin(DistrictSettings, DistrictSettings.district_id == Organisation.id)
        .where(and_(Organisation.kind == "district", Organisation.district_id.is_(None)))
        .order_by(Organisation.sis_id)
    ).all()
    return [
        DistrictFreshness(
            district=sis_id,
            district_id=int(org_id),
            last_applied_at=last.get(int(org_id)),
            days=days_since(last.get(int(org_id)), now),
            admin_email=email,
        )
        for org_id, sis_id, email in rows
    ]


def queue_admin_email(
    conn: Connection,
    *,
    district_id: int,
    template: str,
    idempotency_key: str,
    payload: dict,
    destination: str,
) -> bool:
    """Write one email for the district admin to the outbox; False if already queued."""
    exists = conn.execute(
        select(NotificationOutbox.id).where(NotificationOutbox.idempotency_key == idempotency_key)
    ).first()
    if exists:
        return False
    conn.execute(
        insert(NotificationOutbox).values(
            district_id=district_id,
            account_id=None,
            channel="email",
            destination=destination,
            template=template,
            payload=payload,
            idempotency_key=idempotency_key,
            status="pending",
        )
    )
    return True


def admin_email(conn: Connection, district_sis_id: str) -> tuple[int, str | None] | None:
    """(district id, admin email) of a district known to the database, else None."""
    row = conn.execute(
        select(Organisation.id, DistrictSettings.admin_email)
        .outerjoin(DistrictSettings, DistrictSettings.district_id == Organisation.id)
        .where(
            Organisation.kind == "district",
            Organisation.district_id.is_(None),
            Organisation.sis_id == district_sis_id,
        )
    ).first()
    return (int(row[0]), row[1]) if row else None


@dataclass(frozen=True)
class FreshnessRun:
    districts: list[DistrictFreshness]
    queued: list[str]  # idempotency keys written this run
    no_admin: list[str]  # districts due a warning but without an admin email


def check_freshness(conn: Connection, now: datetime) -> FreshnessRun:
    """The daily job: compute every district's days and queue the 75/85-day warnings."""
    districts = district_freshness(conn, now)
    queued, no_admin = [], []
    for d in districts:
        threshold = warning_due(d.days)
        if threshold is None:
            continue
        if not d.admin_email:
            no_admin.append(d.district)
            continue
        key = f"freshness:{d.district}:{d.last_drop_date.isoformat()}:{threshold}"
        payload = {
            "district": d.district,
            "days_since_last_drop": d.days,
            "last_drop_date": d.last_drop_date.isoformat(),
            "threshold_days": threshold,
            "limit_days": LIMIT_DAYS,
            "removals_held_from": (d.last_applied_at + timedelta(days=LIMIT_DAYS)).isoformat(),
        }
        if queue_admin_email(
            conn,
            district_id=d.district_id,
            template="freshness_warning",
            idempotency_key=key,
            payload=payload,
            destination=d.admin_email,
        ):
            queued.append(key)
    return FreshnessRun(districts=districts, queued=queued, no_admin=no_admin)
