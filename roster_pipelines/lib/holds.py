"""An administrator's one-time decision on a held drop (R10): confirm or discard.

Confirming applies exactly the removals the hold recorded (`held_changes`) that are
still in force; discarding applies none of them. Either way the decision is final. A
hold made moot by a newer drop is `superseded` and can no longer be decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from roster_pipelines.lib.store.frames import chunks
from roster_pipelines.lib.store.locks import lock_district
from roster_pipelines.lib.store.models import (
    Class,
    ClassMembership,
    Guardianship,
    HeldChange,
    Hold,
    Organisation,
    OrgMembership,
    SisLink,
    SyncRun,
)
from roster_pipelines.lib.store.state import find_district, utcnow

CONFIRM = "confirm"
DISCARD = "discard"

_TABLES = {
    "organisations": Organisation,
    "sis_links": SisLink,
    "classes": Class,
    "org_memberships": OrgMembership,
    "class_memberships": ClassMembership,
    "guardianships": Guardianship,
}
# How a confirmed hold's removals count in the run's `changes`.
_CHANGE_KEYS = {
    "organisations": "schools_removed",
    "sis_links": "accounts_removed",
    "classes": "classes_removed",
    "org_memberships": "memberships_removed",
    "class_memberships": "memberships_removed",
    "guardianships": "guardianships_removed",
}


class HoldError(ValueError):
    """The decision cannot be made (no such hold, already decided, superseded)."""


@dataclass
class HoldDecision:
    district: str
    drop: str
    decision: str
    actor: str
    removed: dict[str, int]


def decide_hold(
    engine: Engine, district: str, drop: str, decision: str, *, actor: str
) -> HoldDecision:
    if decision not in (CONFIRM, DISCARD):
        raise HoldError(f"decision must be {CONFIRM!r} or {DISCARD!r}, not {decision!r}")
    if not actor.strip():
        raise HoldError("say who decides (--by): holds are audited")
    with engine.begin() as conn:
        district_id = find_district(conn, district)
        if district_id is None:
            raise HoldError(f"district {district!r} is not known")
        lock_district(conn, district_id)
        hold = conn.execute(
            select(Hold.id, Hold.status, Hold.sync_run_id)
            .join(SyncRun, SyncRun.id == Hold.sync_run_id)
            .where(Hold.district_id == district_id, SyncRun.drop_id == drop)
            .order_by(Hold.id.desc())
            .limit(1)
        ).first()
        if hold is None:
            raise HoldError(f"drop {drop!r} of district {district!r} has no hold")
        if hold.status != "pending":
            raise HoldError(
                f"the hold on drop {drop!r} is already {hold.status}; a hold is decided once"
                + (" (a newer drop was applied after it)" if hold.status == "superseded" else "")
            )
        removed: dict[str, int] = {}
        now = utcnow()
        if decision == CONFIRM:
            for table_name, model in _TABLES.items():
                ids = (
                    conn.execute(
                        select(HeldChange.row_id).where(
                            HeldChange.hold_id == hold.id, HeldChange.table_name == table_name
                        )
                    )
                    .scalars()
                    .all()
                )
                count = 0
                for chunk in chunks(list(ids)):
                    result = conn.execute(
                        update(model)
                        .where(model.id.in_(chunk), model.active)
                        .values(active=False, removed_at=now, updated_at=now)
                    )
                    count += result.rowcount
                key = _CHANGE_KEYS[table_name]
                removed[key] = removed.get(key, 0) + count
            changes = conn.execute(
                select(SyncRun.changes).where(SyncRun.id == hold.sync_run_id)
            ).scalar()
            conn.execute(
                update(SyncRun)
                .where(SyncRun.id == hold.sync_run_id)
                .values(status="applied", changes={**(changes or {}), **removed})
            )
        conn.execute(
            update(Hold)
            .where(Hold.id == hold.id)
            .values(
                status="confirmed" if decision == CONFIRM else "discarded",
                decided_at=now,
                decided_by=actor.strip(),
            )
        )
    return HoldDecision(
        district=district, drop=drop, decision=decision, actor=actor, removed=removed
    )
