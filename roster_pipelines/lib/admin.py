"""District settings an administrator changes: admin contact, thresholds, enforcement."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select, update

from roster_pipelines.lib.plan import DEFAULT_THRESHOLDS
from roster_pipelines.lib.store.models import DistrictSettings, SisLink, SyncRun
from roster_pipelines.lib.store.state import find_district, get_or_create_district


class AdminError(ValueError):
    pass


def set_admin_contact(engine: Engine, district: str, *, name: str | None, email: str) -> None:
    from roster_pipelines.lib.normalize import normalize_email

    normalised = normalize_email(email)
    if normalised is None:
        raise AdminError(f"{email!r} is not a valid email address")
    with engine.begin() as conn:
        district_id = get_or_create_district(conn, district)
        conn.execute(
            update(DistrictSettings)
            .where(DistrictSettings.district_id == district_id)
            .values(admin_name=name, admin_email=normalised)
        )


def set_threshold(engine: Engine, district: str, *, kind: str, percent: float, count: int) -> None:
    if kind not in DEFAULT_THRESHOLDS:
        raise AdminError(
            f"unknown threshold type {kind!r}; use one of {', '.join(DEFAULT_THRESHOLDS)}"
        )
    if not 0 <= percent <= 100 or count < 0:
        raise AdminError("percent must be between 0 and 100 and count at least 0")
    with engine.begin() as conn:
        district_id = get_or_create_district(conn, district)
        current = (
            conn.execute(
                select(DistrictSettings.removal_thresholds).where(
                    DistrictSettings.district_id == district_id
                )
            ).scalar()
            or {}
        )
        current = {**current, kind: {"percent": float(percent), "count": int(count)}}
        conn.execute(
            update(DistrictSettings)
            .where(DistrictSettings.district_id == district_id)
            .values(removal_thresholds=current)
        )


def set_enforcement(engine: Engine, district: str, *, enabled: bool) -> None:
    with engine.begin() as conn:
        district_id = get_or_create_district(conn, district)
        conn.execute(
            update(DistrictSettings)
            .where(DistrictSettings.district_id == district_id)
            .values(rostering_enforced=enabled)
        )


def describe_district(engine: Engine, district: str) -> dict[str, Any]:
    """Settings, effective thresholds, people linked and the last runs of a district."""
    with engine.connect() as conn:
        district_id = find_district(conn, district)
        if district_id is None:
            raise AdminError(
                f"district {district!r} is not known; it is registered by its first drop"
            )
        settings = conn.execute(
            select(
                DistrictSettings.admin_name,
                DistrictSettings.admin_email,
                DistrictSettings.rostering_enforced,
                DistrictSettings.removal_thresholds,
            ).where(DistrictSettings.district_id == district_id)
        ).one()
        people = conn.execute(
            select(func.count()).where(SisLink.district_id == district_id, SisLink.active)
        ).scalar_one()
        runs = conn.execute(
            select(SyncRun.drop_id, SyncRun.status, SyncRun.finished_at)
            .where(SyncRun.district_id == district_id)
            .order_by(SyncRun.id.desc())
            .limit(10)
        ).all()
    return {
        "district": district,
        "admin_name": settings.admin_name,
        "admin_email": settings.admin_email,
        "rostering_enforced": settings.rostering_enforced,
        "removal_thresholds": {**DEFAULT_THRESHOLDS, **(settings.removal_thresholds or {})},
        "active_sis_people": people,
        "recent_runs": [
            {"drop": r.drop_id, "status": r.status, "finished_at": str(r.finished_at)} for r in runs
        ],
    }
