"""Change marks (migration 0006): the accounts written outside a district's sync are
recorded until its next apply, a write to its schools or settings moves its mark, and
its own sync's writes count for neither."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from roster_pipelines.cli import sync_folder
from roster_pipelines.lib import admin
from roster_pipelines.lib import operations as ops
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.marks import changes_seen, unchanged_since_last_apply
from roster_pipelines.lib.store.models import (
    Account,
    ClassMembership,
    ContactPoint,
    Organisation,
    OrgMembership,
    SisLink,
    SyncRun,
)
from roster_pipelines.lib.store.state import find_district
from roster_pipelines_tests.e2e.test_walking_skeleton import DISTRICT, initial_drop

OTHER = "marks-other-district"


def _sync(tmp_path: Path, url: str, district: str, name: str):
    settings = Settings.from_env(state_dir=str(tmp_path / "state"), database_url=url)
    return sync_folder(initial_drop(tmp_path / name), district=district, settings=settings)


def _sync_other_district(tmp_path: Path, url: str, teachers_edit: tuple[str, str]) -> str:
    """The other district's first drop: this district's people, with one edit of its
    teachers file (`teachers_edit`: old text, new text); its sync's status."""
    folder = initial_drop(tmp_path / "other")
    teachers = folder / "teachers.csv"
    teachers.write_text(teachers.read_text().replace(*teachers_edit))
    settings = Settings.from_env(state_dir=str(tmp_path / "state"), database_url=url)
    return sync_folder(folder, district=OTHER, settings=settings).status


def _unchanged(engine: sa.Engine, district: str) -> bool:
    with engine.connect() as conn:
        return unchanged_since_last_apply(conn, find_district(conn, district))


def _mark(engine: sa.Engine, district: str) -> int | None:
    with engine.connect() as conn:
        return changes_seen(conn, find_district(conn, district)).mark


def _recorded(engine: sa.Engine, district: str) -> set[int]:
    with engine.connect() as conn:
        return set(changes_seen(conn, find_district(conn, district)).accounts.to_list())


def _account(engine: sa.Engine, person_key: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(SisLink.account_id).where(SisLink.person_key == person_key)
        ).scalar()


@pytest.mark.postgres
def test_the_sync_s_own_writes_are_not_recorded_and_the_app_s_are(
    tmp_path: Path, pg_url: str
) -> None:
    engine = make_engine(pg_url)
    assert _sync(tmp_path, pg_url, DISTRICT, "d1").status == "applied"
    assert _unchanged(engine, DISTRICT)
    with engine.connect() as conn:
        recorded = conn.execute(sa.select(SyncRun.change_mark)).scalar()
    assert recorded == _mark(engine, DISTRICT)

    # A second sync (the same data) leaves nothing recorded either.
    assert _sync(tmp_path, pg_url, DISTRICT, "d2").status == "applied"
    assert _unchanged(engine, DISTRICT)

    # A claim writes only the class (classes are planned whole): nothing to record.
    class_id = ops.find_class(engine, DISTRICT, "C1")
    teacher = _account(engine, "teacher:T1")
    ops.claim_class(engine, class_id, by_account_id=teacher)
    assert _unchanged(engine, DISTRICT)

    # A hand-added participant is an account written outside the sync.
    student = _account(engine, "student:ST4")
    ops.add_participant(engine, class_id, student, role="student", by_account_id=teacher)
    assert _recorded(engine, DISTRICT) == {student}
    assert not _unchanged(engine, DISTRICT)
    # The next applied drop plans it and clears the record.
    _sync(tmp_path, pg_url, DISTRICT, "d3")
    assert _recorded(engine, DISTRICT) == set()
    assert _unchanged(engine, DISTRICT)

    # A deleted row counts through the row it deleted; a renamed account too.
    with engine.begin() as conn:
        conn.execute(sa.delete(ClassMembership).where(ClassMembership.class_id == class_id))
        conn.execute(sa.update(Account).where(Account.id == teacher).values(first_name="Annie"))
    assert teacher in _recorded(engine, DISTRICT)
    _sync(tmp_path, pg_url, DISTRICT, "d4")
    assert _unchanged(engine, DISTRICT)

    # The district's settings: the district-wide mark moves.
    before = _mark(engine, DISTRICT)
    admin.set_threshold(engine, DISTRICT, kind="people", percent=50, count=10)
    assert _mark(engine, DISTRICT) > before
    assert not _unchanged(engine, DISTRICT)
    _sync(tmp_path, pg_url, DISTRICT, "d5")
    assert _unchanged(engine, DISTRICT)


@pytest.mark.postgres
def test_another_district_s_sync_renaming_a_shared_account_is_recorded(
    tmp_path: Path, pg_url: str
) -> None:
    engine = make_engine(pg_url)
    _sync(tmp_path, pg_url, DISTRICT, "a1")
    # The other district sends the same people (its sync links them to this
    # district's accounts by email and phone), one teacher under another first name.
    assert _sync_other_district(tmp_path, pg_url, (",Ann,", ",Annabel,")) == "applied"
    teacher = _account(engine, "teacher:T1")
    with engine.connect() as conn:
        linked_in_other = conn.execute(
            sa.select(SisLink.account_id).where(
                SisLink.district_id == find_district(conn, OTHER), SisLink.account_id == teacher
            )
        ).scalar()
    assert linked_in_other == teacher
    assert _recorded(engine, DISTRICT) == {teacher}
    assert not _unchanged(engine, DISTRICT)
    # ... and nothing for the district whose sync it was.
    assert _unchanged(engine, OTHER)


@pytest.mark.postgres
def test_contact_points_the_app_writes_are_recorded_and_the_sync_s_are_not(
    tmp_path: Path, pg_url: str
) -> None:
    """Migration 0008: a contact point added, verified or deleted in the app records
    its account; the sync's own contact writes (every contact of a first drop) do not."""
    engine = make_engine(pg_url)
    _sync(tmp_path, pg_url, DISTRICT, "c1")
    assert _unchanged(engine, DISTRICT)
    teacher, other = _account(engine, "teacher:T1"), _account(engine, "teacher:T2")
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ContactPoint).values(
                account_id=teacher, kind="phone", value="+12125550199", source="user"
            )
        )
    assert _recorded(engine, DISTRICT) == {teacher}
    _sync(tmp_path, pg_url, DISTRICT, "c2")
    assert _unchanged(engine, DISTRICT)
    with engine.begin() as conn:
        conn.execute(
            sa.update(ContactPoint)
            .where(ContactPoint.account_id == other, ContactPoint.kind == "email")
            .values(verified=True)
        )
        conn.execute(sa.delete(ContactPoint).where(ContactPoint.value == "+12125550199"))
    assert _recorded(engine, DISTRICT) == {teacher, other}


@pytest.mark.postgres
def test_another_district_s_sync_adding_a_contact_to_a_shared_account_is_recorded(
    tmp_path: Path, pg_url: str
) -> None:
    engine = make_engine(pg_url)
    _sync(tmp_path, pg_url, DISTRICT, "a1")
    # The other district knows teacher T1 by the same email, with a phone this
    # district never sent: its sync adds the phone to the shared account.
    edit = ("Ann.Lee@Lincoln.k12.us,", "Ann.Lee@Lincoln.k12.us,(212) 555-0142")
    assert _sync_other_district(tmp_path, pg_url, edit) == "applied"
    teacher = _account(engine, "teacher:T1")
    with engine.connect() as conn:
        phones = conn.execute(
            sa.select(ContactPoint.value).where(
                ContactPoint.account_id == teacher, ContactPoint.kind == "phone"
            )
        ).scalars()
        assert set(phones) == {"+12125550142"}
    assert _recorded(engine, DISTRICT) == {teacher}
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


def _member_by_hand(engine: sa.Engine, district: str, first_name: str) -> int:
    """An app account (no SIS link) an administrator made a member of the district's
    first school: what the similar-people scan looks at beside the SIS people."""
    with engine.begin() as conn:
        account = conn.execute(
            sa.insert(Account).values(first_name=first_name, last_name="Hand").returning(Account.id)
        ).scalar_one()
        school = conn.execute(
            sa.select(Organisation.id)
            .where(Organisation.district_id == find_district(conn, district))
            .order_by(Organisation.id)
            .limit(1)
        ).scalar_one()
        conn.execute(
            sa.insert(OrgMembership).values(
                org_id=school, account_id=account, role="parent", source="manual"
            )
        )
    return account


@pytest.mark.postgres
def test_writes_to_a_member_added_by_hand_are_recorded_for_its_district(
    tmp_path: Path, pg_url: str
) -> None:
    """Migration 0009: an account a district lists only as a member (no SIS link) has
    its renames and phone writes recorded for that district, as a linked one does."""
    engine = make_engine(pg_url)
    _sync(tmp_path, pg_url, DISTRICT, "m1")
    member = _member_by_hand(engine, DISTRICT, "Morgan")
    assert _recorded(engine, DISTRICT) == {member}  # the membership (migration 0006)
    _sync(tmp_path, pg_url, DISTRICT, "m2")
    assert _unchanged(engine, DISTRICT)

    with engine.begin() as conn:
        conn.execute(sa.update(Account).where(Account.id == member).values(first_name="Morgana"))
    assert _recorded(engine, DISTRICT) == {member}
    _sync(tmp_path, pg_url, DISTRICT, "m3")
    assert _unchanged(engine, DISTRICT)

    with engine.begin() as conn:
        conn.execute(
            sa.insert(ContactPoint).values(
                account_id=member, kind="phone", value="+12125550177", source="user"
            )
        )
    assert _recorded(engine, DISTRICT) == {member}


@pytest.mark.postgres
def test_another_district_s_sync_renaming_an_account_listed_here_by_hand_is_recorded(
    tmp_path: Path, pg_url: str
) -> None:
    """An account this district lists by hand, which the other district's SIS then
    links (by its email) and renames: that sync's write is recorded here
    (`marks.log_shared_account_changes`), though no SIS link of this district names it."""
    engine = make_engine(pg_url)
    _sync(tmp_path, pg_url, DISTRICT, "h1")
    member = _member_by_hand(engine, DISTRICT, "Morgan")
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ContactPoint).values(
                account_id=member, kind="email", value="morgan.hand@example.org", source="user"
            )
        )
    _sync(tmp_path, pg_url, DISTRICT, "h2")
    assert _unchanged(engine, DISTRICT)
    # The other district's teacher T1 has the member's email: linked to it, renamed.
    edit = ("Ann.Lee@Lincoln.k12.us", "morgan.hand@example.org")
    assert _sync_other_district(tmp_path, pg_url, edit) == "applied"
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(SisLink.account_id).where(
                    SisLink.district_id == find_district(conn, OTHER),
                    SisLink.person_key == "teacher:T1",
                )
            ).scalar()
            == member
        )
        assert (
            conn.execute(sa.select(Account.first_name).where(Account.id == member)).scalar()
            == "Ann"
        )
    assert _recorded(engine, DISTRICT) == {member}
