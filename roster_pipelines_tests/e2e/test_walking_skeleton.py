"""End to end, on SQLite and Postgres: initial drop, maintenance drop, the same again.

The district is small and hand-written so every expected row is known:

- Lincoln Elementary (S1) and Riverside YMCA After-School Program (S2, a program).
- Teachers T1 (S1) and T2 (S1 and S2).
- Students ST1 and ST2 (siblings, guardian Dana by email), ST3 (guardians Gus by phone
  and Hana by email), ST4 at S2 with no guardian.
- Dana already has an app account: the sync links it instead of creating one (R1).
- The maintenance drop: ST2 leaves, ST3's first name changes, a new class C4 with ST1
  in it (Dana follows her child into it, R7).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from roster_pipelines.cli import main, sync_folder
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import (
    Account,
    Class,
    ClassMembership,
    ContactPoint,
    Guardianship,
    Organisation,
    OrgMembership,
    SisLink,
    SyncRun,
)
from roster_pipelines_tests.conftest import write_drop

DISTRICT = "lincoln-usd"

SCHOOLS = [["S1", "Lincoln Elementary"], ["S2", "Riverside YMCA After-School Program"]]
TEACHERS = [
    ["S1", "T1", "Ann", "Lee", "Ann.Lee@Lincoln.k12.us", ""],
    ["S1", "T2", "Bob", "Ray", "bob.ray@lincoln.k12.us", "(212) 201-3344"],
    ["S2", "T2", "Bob", "Ray", "bob.ray@lincoln.k12.us", "(212) 201-3344"],
]
STUDENTS = [
    [
        "S1",
        "ST1",
        "Cara",
        "Diaz",
        "2016-03-04",
        "3",
        "",
        "",
        "Dana",
        "Diaz",
        "dana.diaz@gmail.com",
        "",
    ],
    [
        "S1",
        "ST2",
        "Eli",
        "Diaz",
        "2018-05-06",
        "1",
        "",
        "",
        "Dana",
        "Diaz",
        "dana.diaz@gmail.com",
        "",
    ],
    ["S1", "ST3", "Finn", "Park", "2016-07-08", "3", "", "", "Gus", "Park", "", "617.333.2211"],
    [
        "S1",
        "ST3",
        "Finn",
        "Park",
        "2016-07-08",
        "3",
        "",
        "",
        "Hana",
        "Park",
        "hana.park@yahoo.com",
        "",
    ],
    ["S2", "ST4", "Ivy", "Chen", "2014-01-02", "5", "", "", "", "", "", ""],
]
CLASSES = [
    ["S1", "C1", "T1", "Grade 3 Homeroom"],
    ["S1", "C2", "T2", "Art, Section A"],
    ["S2", "C3", "T2", "YMCA Club"],
]
ENROLLMENTS = [
    ["S1", "C1", "ST1"],
    ["S1", "C1", "ST2"],
    ["S1", "C1", "ST3"],
    ["S1", "C2", "ST1"],
    ["S2", "C3", "ST4"],
]


def initial_drop(folder: Path) -> Path:
    return write_drop(
        folder,
        {
            "schools.csv": SCHOOLS,
            "teachers.csv": TEACHERS,
            "students.csv": STUDENTS,
            "classes.csv": CLASSES,
            "enrollments.csv": ENROLLMENTS,
        },
    )


def maintenance_drop(folder: Path) -> Path:
    students = [r for r in STUDENTS if r[1] != "ST2"]
    students = [[*r[:2], "Finnegan", *r[3:]] if r[1] == "ST3" else r for r in students]
    return write_drop(
        folder,
        {
            "schools.csv": SCHOOLS,
            "teachers.csv": TEACHERS,
            "students.csv": students,
            "classes.csv": [*CLASSES, ["S1", "C4", "T1", "Science"]],
            "enrollments.csv": [*[r for r in ENROLLMENTS if r[2] != "ST2"], ["S1", "C4", "ST1"]],
        },
    )


def _count(conn: sa.Connection, model, *where) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(model).where(*where)).scalar_one()


def _account_of(conn: sa.Connection, person_key: str) -> int:
    return conn.execute(
        sa.select(SisLink.account_id).where(SisLink.person_key == person_key)
    ).scalar_one()


def _class_members(conn: sa.Connection, class_id: str) -> set[tuple[str, str]]:
    """(person_key, role) of the active SIS members of a class."""
    rows = conn.execute(
        sa.select(SisLink.person_key, ClassMembership.role)
        .join(Class, Class.id == ClassMembership.class_id)
        .join(SisLink, SisLink.account_id == ClassMembership.account_id)
        .where(Class.sis_class_id == class_id, ClassMembership.active)
        .where(SisLink.role == ClassMembership.role)
    ).all()
    return {(r[0], r[1]) for r in rows}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings.from_env(state_dir=str(tmp_path / "state"), database_url=db_url)


@pytest.fixture
def dana_account(settings: Settings) -> int:
    """Dana had an app account (verified email) before her district turned on the sync."""
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        account_id = conn.execute(
            sa.insert(Account).values(first_name="Dana", last_name="Diaz-Old").returning(Account.id)
        ).scalar_one()
        conn.execute(
            sa.insert(ContactPoint).values(
                account_id=account_id,
                kind="email",
                value="dana.diaz@gmail.com",
                verified=True,
                source="user",
            )
        )
    return account_id


def test_initial_maintenance_and_repeat(
    tmp_path: Path, settings: Settings, dana_account: int
) -> None:
    engine = make_engine(settings.database_url)

    # Initial drop.
    first = sync_folder(
        initial_drop(tmp_path / "d1"), district=DISTRICT, settings=settings, drop="initial"
    )
    assert first.status == "applied"
    assert first.is_initial
    assert first.counts == {
        "schools": 2,
        "teachers": 2,
        "students": 4,
        "parents": 3,
        "classes": 3,
        "enrollments": 5,
    }
    assert first.changes["accounts_created"] == 8  # T1, T2, ST1-ST4, Gus, Hana
    assert first.changes["accounts_linked"] == 1  # Dana
    assert first.changes["classes_created"] == 3
    with engine.connect() as conn:
        assert _count(conn, Account) == 9
        assert _count(conn, SisLink, SisLink.active) == 9
        assert _account_of(conn, "parent:email:dana.diaz@gmail.com") == dana_account
        # The SIS name replaces the app name (R4); the verified email stays verified.
        assert (
            conn.execute(
                sa.select(Account.last_name).where(Account.id == dana_account)
            ).scalar_one()
            == "Diaz"
        )
        assert conn.execute(
            sa.select(ContactPoint.verified).where(ContactPoint.value == "dana.diaz@gmail.com")
        ).scalar_one()
        # A created account carries its normalised contacts.
        t2 = _account_of(conn, "teacher:T2")
        assert set(
            conn.execute(
                sa.select(ContactPoint.kind, ContactPoint.value).where(
                    ContactPoint.account_id == t2
                )
            ).all()
        ) == {("email", "bob.ray@lincoln.k12.us"), ("phone", "+12122013344")}
        assert _account_of(conn, "parent:phone:+16173332211") not in (dana_account, t2)
        kinds = dict(conn.execute(sa.select(Organisation.sis_id, Organisation.kind)).all())
        assert kinds == {DISTRICT: "district", "S1": "school", "S2": "program"}
        assert _count(conn, OrgMembership, OrgMembership.active) == 10
        assert _count(conn, ClassMembership, ClassMembership.active) == 12
        assert _count(conn, Guardianship, Guardianship.active) == 4
        assert _class_members(conn, "C1") == {
            ("teacher:T1", "teacher"),
            ("student:ST1", "student"),
            ("student:ST2", "student"),
            ("student:ST3", "student"),
            ("parent:email:dana.diaz@gmail.com", "parent"),
            ("parent:phone:+16173332211", "parent"),
            ("parent:email:hana.park@yahoo.com", "parent"),
        }
        classes = conn.execute(sa.select(Class.claimed, Class.active, Class.join_code)).all()
        assert all(not c.claimed and c.active and c.join_code for c in classes)  # unclaimed (R5)

    # Maintenance drop.
    second = sync_folder(
        maintenance_drop(tmp_path / "d2"), district=DISTRICT, settings=settings, drop="maint"
    )
    assert second.status == "applied"
    assert not second.is_initial
    assert second.changes == {
        "accounts_created": 0,
        "accounts_linked": 0,
        "accounts_updated": 1,
        "accounts_removed": 1,
        "classes_created": 1,
        "classes_updated": 0,
        "classes_removed": 0,
        "memberships_added": 3,
        "memberships_removed": 2,
        "schools_created": 0,
        "schools_updated": 0,
        "schools_removed": 0,
        "guardianships_added": 0,
        "guardianships_removed": 1,
        "contacts_added": 0,
        "contacts_updated": 0,
    }
    with engine.connect() as conn:
        st2 = _account_of(conn, "student:ST2")
        link = conn.execute(
            sa.select(SisLink.active, SisLink.removed_at).where(SisLink.person_key == "student:ST2")
        ).one()
        assert not link.active and link.removed_at is not None  # soft removal (R8)
        assert (
            _count(conn, ClassMembership, ClassMembership.account_id == st2, ClassMembership.active)
            == 0
        )
        assert (
            _count(conn, ClassMembership, ClassMembership.account_id == st2) == 1
        )  # kept, inactive
        assert (
            _count(conn, OrgMembership, OrgMembership.account_id == st2, OrgMembership.active) == 0
        )
        assert _class_members(conn, "C4") == {
            ("teacher:T1", "teacher"),
            ("student:ST1", "student"),
            ("parent:email:dana.diaz@gmail.com", "parent"),
        }
        # Dana stays in C1: her other child ST1 is still in it.
        assert ("parent:email:dana.diaz@gmail.com", "parent") in _class_members(conn, "C1")
        st3 = _account_of(conn, "student:ST3")
        assert (
            conn.execute(sa.select(Account.first_name).where(Account.id == st3)).scalar_one()
            == "Finnegan"
        )
        before = {
            m.__tablename__: _count(conn, m)
            for m in (
                Account,
                SisLink,
                ClassMembership,
                OrgMembership,
                Guardianship,
                Class,
                ContactPoint,
            )
        }

    # The same maintenance drop again changes nothing.
    third = sync_folder(tmp_path / "d2", district=DISTRICT, settings=settings, drop="maint-again")
    assert third.status == "applied"
    assert all(v == 0 for v in third.changes.values()), third.changes
    with engine.connect() as conn:
        after = {
            m.__tablename__: _count(conn, m)
            for m in (
                Account,
                SisLink,
                ClassMembership,
                OrgMembership,
                Guardianship,
                Class,
                ContactPoint,
            )
        }
        assert after == before
        statuses = conn.execute(
            sa.select(SyncRun.drop_id, SyncRun.status).order_by(SyncRun.id)
        ).all()
        assert statuses == [
            ("initial", "applied"),
            ("maint", "applied"),
            ("maint-again", "applied"),
        ]


def test_cli_json_dry_run_and_rejection(tmp_path: Path, settings: Settings, capsys) -> None:
    drop = initial_drop(tmp_path / "d1")
    common = ["--state-dir", str(settings.state_dir), "--db", settings.database_url]

    code = main(["sync", str(drop), "--district", DISTRICT, "--dry-run", "--json", *common])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["status"] == "dry_run"
    assert out["planned"]["accounts_created"] == 9 and out["changes"]["accounts_created"] == 0
    with make_engine(settings.database_url).connect() as conn:
        assert _count(conn, Account) == 0  # a dry run applies nothing

    (drop / "classes.csv").unlink()
    code = main(["sync", str(drop), "--district", DISTRICT, "--json", *common])
    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert out["status"] == "rejected"
    assert [(i["code"], i["severity"], i["file"]) for i in out["issues"]] == [
        ("FILE_MISSING", "file_error", "classes.csv")
    ]
    with make_engine(settings.database_url).connect() as conn:
        assert _count(conn, Account) == 0 and _count(conn, Class) == 0
