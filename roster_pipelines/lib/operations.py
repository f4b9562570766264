"""What the messaging app (and its administrators) do between syncs.

These are the app-side operations the sync must respect: a teacher claims a class
(R5), an owner edits it or adds participants (R6), a person leaves an organisation or
an administrator removes them (R11). The tests use them to prove later syncs keep
their effects.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, Engine, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from roster_pipelines.lib.notify.outbox import enqueue_claim_notifications
from roster_pipelines.lib.store.models import (
    Class,
    ClassMembership,
    DistrictSettings,
    Organisation,
    OrgMembership,
    SisLink,
)
from roster_pipelines.lib.store.state import find_district, utcnow

MANUAL = "manual"
JOIN_CODE = re.compile(r"^[A-Z0-9]{4,32}$")


class OperationRefused(ValueError):
    """The operation is not allowed; the message says why, for the person asking."""


def find_class(engine: Engine, district: str, sis_class_id: str) -> int:
    with engine.connect() as conn:
        district_id = _district(conn, district)
        class_id = conn.execute(
            select(Class.id).where(
                Class.district_id == district_id, Class.sis_class_id == sis_class_id
            )
        ).scalar()
    if class_id is None:
        raise OperationRefused(f"class {sis_class_id!r} is not a class of district {district!r}")
    return int(class_id)


def _district(conn: Connection, district: str) -> int:
    district_id = find_district(conn, district)
    if district_id is None:
        raise OperationRefused(f"district {district!r} is not known")
    return district_id


def _class_row(conn: Connection, class_id: int) -> Any:
    row = conn.execute(
        select(Class.id, Class.active, Class.claimed, Class.owner_account_id).where(
            Class.id == class_id
        )
    ).first()
    if row is None or not row.active:
        raise OperationRefused(f"class {class_id} does not exist or was removed")
    return row


def _is_class_teacher(conn: Connection, class_id: int, account_id: int) -> bool:
    return bool(
        conn.execute(
            select(
                exists().where(
                    ClassMembership.class_id == class_id,
                    ClassMembership.account_id == account_id,
                    ClassMembership.role == "teacher",
                    ClassMembership.active,
                )
            )
        ).scalar()
    )


def claim_class(engine: Engine, class_id: int, *, by_account_id: int) -> None:
    """A rostered teacher of the class claims it, which activates it for members (R5)."""
    with engine.begin() as conn:
        row = _class_row(conn, class_id)
        if row.owner_account_id != by_account_id and not _is_class_teacher(
            conn, class_id, by_account_id
        ):
            raise OperationRefused("only a teacher of the class can claim it")
        if row.claimed:
            return
        now = utcnow()
        conn.execute(
            update(Class)
            .where(Class.id == class_id)
            .values(
                claimed=True, claimed_at=now, owner_account_id=row.owner_account_id or by_account_id
            )
        )
        # Students and parents hear about the class once their teacher claims it (R13).
        enqueue_claim_notifications(conn, class_id, now)


def edit_class(
    engine: Engine,
    class_id: int,
    *,
    by_account_id: int,
    name: str | None = None,
    join_code: str | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """The owner renames the class, changes its join code or settings (R6).

    An edited name is marked owner-edited, so later syncs keep it.
    """
    values: dict[str, Any] = {}
    if name is not None:
        name = " ".join(name.split())
        if not name or len(name) > 255:
            raise OperationRefused("a class name must have 1 to 255 characters")
        values |= {"name": name, "name_edited": True}
    if join_code is not None:
        join_code = join_code.strip().upper()
        if not JOIN_CODE.match(join_code):
            raise OperationRefused("a join code has 4 to 32 letters or digits")
        values["join_code"] = join_code
    try:
        with engine.begin() as conn:
            row = _class_row(conn, class_id)
            if row.owner_account_id != by_account_id:
                raise OperationRefused("only the class owner can edit the class")
            if settings is not None:
                current = (
                    conn.execute(select(Class.settings).where(Class.id == class_id)).scalar() or {}
                )
                values["settings"] = {**current, **settings}
            if values:
                conn.execute(update(Class).where(Class.id == class_id).values(values))
    except IntegrityError as err:
        raise OperationRefused(f"join code {join_code} is already used by another class") from err


def add_participant(
    engine: Engine, class_id: int, account_id: int, *, role: str, by_account_id: int
) -> None:
    """The owner adds someone by hand; a sync never removes a manual member (R6)."""
    if role not in ("teacher", "student", "parent"):
        raise OperationRefused("role must be teacher, student or parent")
    with engine.begin() as conn:
        row = _class_row(conn, class_id)
        if row.owner_account_id != by_account_id:
            raise OperationRefused("only the class owner can add participants")
        existing = conn.execute(
            select(ClassMembership.id).where(
                ClassMembership.class_id == class_id,
                ClassMembership.account_id == account_id,
                ClassMembership.role == role,
                ClassMembership.source == MANUAL,
            )
        ).scalar()
        if existing is None:
            conn.execute(
                insert(ClassMembership).values(
                    class_id=class_id, account_id=account_id, role=role, source=MANUAL
                )
            )
        else:
            conn.execute(
                update(ClassMembership)
                .where(ClassMembership.id == existing)
                .values(active=True, removed_at=None)
            )


def _deactivate_in_district(conn: Connection, district_id: int, account_id: int) -> None:
    now = utcnow()
    org_ids = select(Organisation.id).where(Organisation.district_id == district_id)
    class_ids = select(Class.id).where(Class.district_id == district_id)
    conn.execute(
        update(OrgMembership)
        .where(
            OrgMembership.account_id == account_id,
            OrgMembership.org_id.in_(org_ids),
            OrgMembership.active,
        )
        .values(active=False, removed_at=now)
    )
    conn.execute(
        update(ClassMembership)
        .where(
            ClassMembership.account_id == account_id,
            ClassMembership.class_id.in_(class_ids),
            ClassMembership.active,
        )
        .values(active=False, removed_at=now)
    )


def leave_organisation(engine: Engine, district: str, account_id: int) -> None:
    """A person leaves the district's schools and classes themselves.

    Refused for SIS-linked people while the district enforces SIS rostering (R11).
    """
    with engine.begin() as conn:
        district_id = _district(conn, district)
        enforced = conn.execute(
            select(DistrictSettings.rostering_enforced).where(
                DistrictSettings.district_id == district_id
            )
        ).scalar()
        linked = conn.execute(
            select(
                exists().where(
                    SisLink.district_id == district_id,
                    SisLink.account_id == account_id,
                    SisLink.active,
                )
            )
        ).scalar()
        if enforced and linked:
            raise OperationRefused(
                "your school district manages its rosters through its SIS: ask a district "
                "administrator to remove you, or your school to update its records"
            )
        _deactivate_in_district(conn, district_id, account_id)


def remove_person(engine: Engine, district: str, account_id: int, *, by: str) -> None:
    """An administrator removes a person from the people list (always allowed, R11).

    Their SIS link is deactivated too; a later drop that still lists them brings
    them back, because the SIS remains the source of truth.
    """
    if not by.strip():
        raise OperationRefused("say who removes the person (--by)")
    with engine.begin() as conn:
        district_id = _district(conn, district)
        _deactivate_in_district(conn, district_id, account_id)
        conn.execute(
            update(SisLink)
            .where(
                SisLink.district_id == district_id, SisLink.account_id == account_id, SisLink.active
            )
            .values(active=False, removed_at=utcnow())
        )
