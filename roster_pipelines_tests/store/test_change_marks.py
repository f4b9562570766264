"""Change marks (migration 0006): a district's mark moves when anything but its own
sync writes its roster, and each applied run records the mark it left."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from roster_pipelines.cli import sync_folder
from roster_pipelines.lib import admin
from roster_pipelines.lib import operations as ops
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.marks import current_mark, unchanged_since_last_apply
from roster_pipelines.lib.store.models import ClassMembership, ContactPoint, SisLink, SyncRun
from roster_pipelines.lib.store.state import find_district
from roster_pipelines_tests.e2e.test_walking_skeleton import DISTRICT, initial_drop

OTHER = "marks-other-district"


def _sync(tmp_path: Path, url: str, district: str, name: str):
    settings = Settings.from_env(state_dir=str(tmp_path / "state"), database_url=url)
    return sync_folder(initial_drop(tmp_path / name), district=district, settings=settings)


def _unchanged(engine: sa.Engine, district: str) -> bool:
    with engine.connect() as conn:
        return unchanged_since_last_apply(conn, find_district(conn, district))


def _mark(engine: sa.Engine, district: str) -> int | None:
    with engine.connect() as conn:
        return current_mark(conn, find_district(conn, district))


@pytest.mark.postgres
def test_the_sync_s_own_writes_leave_the_mark_and_app_writes_move_it(
    tmp_path: Path, pg_url: str
) -> None:
    engine = make_engine(pg_url)
    assert _sync(tmp_path, pg_url, DISTRICT, "d1").status == "applied"
    assert _unchanged(engine, DISTRICT)
    with engine.connect() as conn:
        recorded = conn.execute(sa.select(SyncRun.change_mark)).scalar()
    assert recorded == _mark(engine, DISTRICT)

    # A second sync (the same data) writes nothing new and leaves the mark too.
    assert _sync(tmp_path, pg_url, DISTRICT, "d2").status == "applied"
    assert _unchanged(engine, DISTRICT)

    # The app's operations move it: a claim (an update), a manual member (an insert).
    class_id = ops.find_class(engine, DISTRICT, "C1")
    with engine.connect() as conn:
        teacher = conn.execute(
            sa.select(SisLink.account_id).where(SisLink.person_key == "teacher:T1")
        ).scalar()
    before = _mark(engine, DISTRICT)
    ops.claim_class(engine, class_id, by_account_id=teacher)
    assert _mark(engine, DISTRICT) == before + 1
    assert not _unchanged(engine, DISTRICT)

    # The next applied drop records the new mark: unchanged again.
    _sync(tmp_path, pg_url, DISTRICT, "d3")
    assert _unchanged(engine, DISTRICT)

    # A deleted row counts (through the row it deleted): a membership removed by hand.
    with engine.begin() as conn:
        conn.execute(sa.delete(ClassMembership).where(ClassMembership.class_id == class_id))
    assert not _unchanged(engine, DISTRICT)
    _sync(tmp_path, pg_url, DISTRICT, "d4")
    assert _unchanged(engine, DISTRICT)

    # A user editing their contact point, and a settings change.
    with engine.begin() as conn:
        conn.execute(
            sa.update(ContactPoint).where(ContactPoint.account_id == teacher).values(verified=True)
        )
    assert not _unchanged(engine, DISTRICT)
    _sync(tmp_path, pg_url, DISTRICT, "d5")
    admin.set_threshold(engine, DISTRICT, kind="people", percent=50, count=10)
    assert not _unchanged(engine, DISTRICT)


@pytest.mark.postgres
def test_another_district_s_sync_of_a_shared_account_moves_the_mark(
    tmp_path: Path, pg_url: str
) -> None:
    engine = make_engine(pg_url)
    _sync(tmp_path, pg_url, DISTRICT, "a1")
    before = _mark(engine, DISTRICT)
    # The other district sends the same people: its sync links them to the accounts
    # this district already has (matched by email and phone).
    assert _sync(tmp_path, pg_url, OTHER, "b1").status == "applied"
    with engine.connect() as conn:
        shared = conn.execute(
            sa.select(sa.func.count(sa.distinct(SisLink.account_id))).where(
                SisLink.district_id == find_district(conn, OTHER),
                SisLink.account_id.in_(
                    sa.select(SisLink.account_id).where(
                        SisLink.district_id == find_district(conn, DISTRICT)
                    )
                ),
            )
        ).scalar()
    assert shared > 0
    assert _mark(engine, DISTRICT) > before
    assert not _unchanged(engine, DISTRICT)
    # ... and not its own: nothing but its sync wrote it.
    assert _unchanged(engine, OTHER)


def test_sqlite_keeps_no_marks_so_a_sync_never_counts_as_unchanged(
    tmp_path: Path, sqlite_url: str
) -> None:
    engine = make_engine(sqlite_url)
    assert _sync(tmp_path, sqlite_url, DISTRICT, "s1").status == "applied"
    assert _mark(engine, DISTRICT) is None
    assert not _unchanged(engine, DISTRICT)
    with engine.connect() as conn:
        assert conn.execute(sa.select(SyncRun.change_mark)).scalar() is None
