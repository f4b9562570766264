"""Identity resolution end to end (issue 4), on SQLite and Postgres, through the same
assets as production: every decision, stable re-syncs, R4 contact updates, siblings
sharing a guardian across two schools, a parent in two districts.

The district (two schools):
- T1 Ann Lee: an app account already has her school email (verified) → linked by email.
- T2 Bob Ray: nothing matches → created.
- ST1 (S1) and ST5 (S2), siblings: guardian Dana by email and phone → one parent
  account for both, member of both schools.
- ST3: guardian Gus (phone only) whose phone an app account has → linked by phone;
  guardian Hana whose email is account A's and phone account B's → conflict: linked to
  A by the email, A–B a merge candidate, IDENTITY_CONFLICT alert.
- ST4: a guardian with a name and no contact → no account (GUARDIAN_NO_CONTACT).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from roster_pipelines.cli import sync_folder
from roster_pipelines.defs.sync import assets
from roster_pipelines.lib import identity
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.identity import drop_candidates
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import (
    Account,
    ContactPoint,
    Guardianship,
    MergeCandidate,
    Organisation,
    OrgMembership,
    SisLink,
    SyncRun,
)
from roster_pipelines_tests.conftest import write_drop

DISTRICT = "identity-usd"
SCHOOLS = [["S1", "Lincoln Elementary"], ["S2", "Washington Middle"]]


def _teachers(t1_email: str = "ann.lee@identity.k12.us", t2_email: str = "bob.ray@identity.k12.us"):
    return [
        ["S1", "T1", "Ann", "Lee", t1_email, ""],
        ["S2", "T2", "Bob", "Ray", t2_email, ""],
    ]


def _students(dana_email: str = "dana.diaz@gmail.com", st3_first: str = "Finn"):
    blank = ["", ""]
    return [
        [
            "S1",
            "ST1",
            "Cara",
            "Diaz",
            "2016-03-04",
            "3",
            *blank,
            "Dana",
            "Diaz",
            dana_email,
            "(617) 444-1000",
        ],
        [
            "S2",
            "ST5",
            "Eli",
            "Diaz",
            "2012-05-06",
            "7",
            *blank,
            "Dana",
            "Diaz",
            dana_email,
            "617-444-1000",
        ],
        [
            "S1",
            "ST3",
            st3_first,
            "Park",
            "2016-07-08",
            "3",
            *blank,
            "Gus",
            "Park",
            "",
            "617.333.2211",
        ],
        [
            "S1",
            "ST3",
            st3_first,
            "Park",
            "2016-07-08",
            "3",
            *blank,
            "Hana",
            "Park",
            "hana.park@yahoo.com",
            "(617) 555-0000",
        ],
        ["S2", "ST4", "Ivy", "Chen", "2012-01-02", "7", *blank, "Ola", "Chen", "", ""],
    ]


CLASSES = [["S1", "C1", "T1", "Grade 3"], ["S2", "C2", "T2", "Grade 7 Science"]]
ENROLLMENTS = [["S1", "C1", "ST1"], ["S1", "C1", "ST3"], ["S2", "C2", "ST5"], ["S2", "C2", "ST4"]]


def drop(folder: Path, **kw) -> Path:
    teachers = _teachers(**{k: v for k, v in kw.items() if k.startswith("t")})
    students = _students(**{k: v for k, v in kw.items() if not k.startswith("t")})
    return write_drop(
        folder,
        {
            "schools.csv": SCHOOLS,
            "teachers.csv": teachers,
            "students.csv": students,
            "classes.csv": CLASSES,
            "enrollments.csv": ENROLLMENTS,
        },
    )


def seed_account(conn, first: str, last: str, contacts, dob=None) -> int:
    account_id = conn.execute(
        sa.insert(Account).values(first_name=first, last_name=last, dob=dob).returning(Account.id)
    ).scalar_one()
    for kind, value, verified in contacts:
        conn.execute(
            sa.insert(ContactPoint).values(
                account_id=account_id, kind=kind, value=value, verified=verified, source="user"
            )
        )
    return account_id


def account_of(conn, person_key: str, district: str = DISTRICT) -> int:
    return conn.execute(
        sa.select(SisLink.account_id)
        .join(Organisation, Organisation.id == SisLink.district_id)
        .where(SisLink.person_key == person_key, Organisation.sis_id == district)
    ).scalar_one()


def contacts_of(conn, account_id: int) -> set[tuple[str, str, bool]]:
    rows = conn.execute(
        sa.select(ContactPoint.kind, ContactPoint.value, ContactPoint.verified).where(
            ContactPoint.account_id == account_id
        )
    ).all()
    return {(r[0], r[1], bool(r[2])) for r in rows}


def count(conn, model, *where) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(model).where(*where)).scalar_one()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings.from_env(state_dir=str(tmp_path / "state"), database_url=db_url)


@pytest.fixture
def seeded(settings: Settings) -> dict[str, int]:
    """App accounts that existed before the district's first drop."""
    with make_engine(settings.database_url).begin() as conn:
        return {
            "ann": seed_account(conn, "Ann", "Lee", [("email", "ann.lee@identity.k12.us", True)]),
            "gus": seed_account(conn, "Gus", "Park", [("phone", "+16173332211", False)]),
            "hana_email": seed_account(
                conn, "Hana", "Park", [("email", "hana.park@yahoo.com", False)]
            ),
            "hana_phone": seed_account(conn, "H.", "Park", [("phone", "+16175550000", False)]),
        }


# The first drop against the `seeded` accounts: T1, Gus and Hana linked (Hana by her
# email, in conflict with her phone's account); T2, four students and Dana created;
# Ola (no contact) gets nothing.
FIRST_DROP_DECISIONS = {
    "already_linked": 0,
    "linked": 3,
    "created": 6,
    "conflicts": 1,
    "candidates": 1,
}


def test_decisions_resyncs_and_contact_updates(tmp_path: Path, settings: Settings, seeded) -> None:
    engine = make_engine(settings.database_url)
    first = sync_folder(drop(tmp_path / "d1"), district=DISTRICT, settings=settings, drop="d1")
    assert first.status == "applied"
    assert first.decisions == FIRST_DROP_DECISIONS
    codes = first.issues.group_by("code").len()
    codes = dict(zip(codes["code"].to_list(), codes["len"].to_list(), strict=True))
    assert codes.get("IDENTITY_CONFLICT") == 1
    assert codes.get("GUARDIAN_NO_CONTACT") == 1
    conflict = first.issues.filter(first.issues["code"] == "IDENTITY_CONFLICT").row(0, named=True)
    assert (
        "hana.park@yahoo.com" in conflict["message"]
        and str(seeded["hana_phone"]) in conflict["message"]
    )
    with engine.connect() as conn:
        assert account_of(conn, "teacher:T1") == seeded["ann"]
        assert account_of(conn, "parent:phone:+16173332211") == seeded["gus"]
        hana = account_of(conn, "parent:email:hana.park@yahoo.com")
        assert hana == seeded["hana_email"]
        # The phone stays with its account (one contact point = one account).
        assert contacts_of(conn, seeded["hana_phone"]) == {("phone", "+16175550000", False)}
        candidates = drop_candidates(
            conn,
            conn.execute(
                sa.select(Organisation.id).where(Organisation.sis_id == DISTRICT)
            ).scalar_one(),
            "d1",
        )
        assert candidates.select("account_id", "other_account_id", "reason").rows() == [
            (seeded["hana_email"], seeded["hana_phone"], "contact_conflict")
        ]
    # The candidate is in the drop's report for the district admin (HTML and summary).
    report = settings.reports_root / DISTRICT / "d1"
    html = (report / "report.html").read_text()
    assert 'id="merge-candidates"' in html and "parent:email:hana.park@yahoo.com" in html
    assert "contact conflict" in html
    with engine.connect() as conn:
        # Siblings in two schools share one guardian account.
        dana = account_of(conn, "parent:email:dana.diaz@gmail.com")
        assert (
            count(conn, Guardianship, Guardianship.parent_account_id == dana, Guardianship.active)
            == 2
        )
        schools = (
            conn.execute(
                sa.select(Organisation.sis_id)
                .join(OrgMembership, OrgMembership.org_id == Organisation.id)
                .where(OrgMembership.account_id == dana, OrgMembership.role == "parent")
            )
            .scalars()
            .all()
        )
        assert sorted(schools) == ["S1", "S2"]
        assert count(conn, SisLink, SisLink.person_key.like("parent:%")) == 3  # Dana, Gus, Hana
        accounts_after_first = count(conn, Account)
        assert accounts_after_first == 4 + 6

    # The same drop again: nothing is created or changed; everyone is already linked.
    again = sync_folder(tmp_path / "d1", district=DISTRICT, settings=settings, drop="d1-again")
    assert again.status == "applied"
    assert set(again.changes.values()) == {0}, again.changes
    assert again.decisions["already_linked"] == 9 and again.decisions["created"] == 0
    with engine.connect() as conn:
        assert count(conn, Account) == accounts_after_first
        assert count(conn, MergeCandidate) == 1  # the same pair, not a second row

    # Drop 3: T2's (unverified SIS) email changes → updated in place; T1's verified email
    # is never overwritten (alert); Dana's email changes but her phone still matches →
    # same account, re-keyed; ST3's first name changes → account name updated.
    third = sync_folder(
        drop(
            tmp_path / "d3",
            t1_email="ann.lee2@identity.k12.us",
            t2_email="robert.ray@identity.k12.us",
            dana_email="dana.new@gmail.com",
            st3_first="Finnegan",
        ),
        district=DISTRICT,
        settings=settings,
        drop="d3",
    )
    assert third.status == "applied"
    assert third.changes["accounts_created"] == 0
    assert third.changes["contacts_updated"] == 2  # T2's and Dana's emails, in place
    kept = third.issues.filter(third.issues["code"] == "CONTACT_VERIFIED_KEPT")
    assert kept.height == 1 and "ann.lee2@identity.k12.us" in kept["message"][0]
    with engine.connect() as conn:
        assert count(conn, Account) == accounts_after_first
        assert contacts_of(conn, seeded["ann"]) == {("email", "ann.lee@identity.k12.us", True)}
        t2 = account_of(conn, "teacher:T2")
        assert contacts_of(conn, t2) == {("email", "robert.ray@identity.k12.us", False)}
        new_dana = account_of(conn, "parent:email:dana.new@gmail.com")
        assert new_dana == dana
        assert contacts_of(conn, dana) == {
            ("email", "dana.new@gmail.com", False),
            ("phone", "+16174441000", False),
        }
        assert (
            count(conn, Guardianship, Guardianship.parent_account_id == dana, Guardianship.active)
            == 2
        )
        st3 = account_of(conn, "student:ST3")
        assert (
            conn.execute(sa.select(Account.first_name).where(Account.id == st3)).scalar_one()
            == "Finnegan"
        )

    # And that drop again changes nothing (the verified-email alert repeats, nothing else).
    fourth = sync_folder(tmp_path / "d3", district=DISTRICT, settings=settings, drop="d3-again")
    assert set(fourth.changes.values()) == {0}, fourth.changes


def test_parent_in_two_districts_keeps_one_account(tmp_path: Path, settings: Settings) -> None:
    engine = make_engine(settings.database_url)

    def district_drop(folder: Path, school: str, student: str, phone: str) -> Path:
        return write_drop(
            folder,
            {
                "schools.csv": [[school, f"{school} School"]],
                "teachers.csv": [
                    [school, f"T{school}", "Tea", "Cher", f"t@{school.lower()}.k12.us", ""]
                ],
                "students.csv": [
                    [
                        school,
                        student,
                        "Kid",
                        "Moss",
                        "2015-01-01",
                        "4",
                        "",
                        "",
                        "Pat",
                        "Moss",
                        "pat.moss@gmail.com",
                        phone,
                    ]
                ],
                "classes.csv": [],
                "enrollments.csv": [],
            },
        )

    a = sync_folder(
        district_drop(tmp_path / "a", "NA", "SA1", "(212) 555-0101"),
        district="north-usd",
        settings=settings,
        drop="a1",
    )
    b = sync_folder(
        district_drop(tmp_path / "b", "SO", "SB1", "(212) 555-0202"),
        district="south-usd",
        settings=settings,
        drop="b1",
    )
    assert a.status == b.status == "applied"
    assert b.decisions["linked"] == 1  # Pat, by email, across districts
    with engine.connect() as conn:
        pat_a = account_of(conn, "parent:email:pat.moss@gmail.com", "north-usd")
        pat_b = account_of(conn, "parent:email:pat.moss@gmail.com", "south-usd")
        assert pat_a == pat_b
        assert count(conn, Guardianship, Guardianship.parent_account_id == pat_a) == 2
        # Each district's phone is kept: one district's drop never replaces the other's.
        assert contacts_of(conn, pat_a) == {
            ("email", "pat.moss@gmail.com", False),
            ("phone", "+12125550101", False),
            ("phone", "+12125550202", False),
        }
    again = sync_folder(tmp_path / "a", district="north-usd", settings=settings, drop="a2")
    assert set(again.changes.values()) == {0}, again.changes


def test_candidate_for_a_new_person_follows_its_account(tmp_path: Path, settings: Settings) -> None:
    """A personal account (same name and dob, member of the school by hand) is a merge
    candidate of a student whose account the drop creates; the next drop finds the same
    pair through the new account and updates that one row."""
    engine = make_engine(settings.database_url)
    without_cara = [r for r in _students() if r[1] != "ST1"]
    write_drop(
        tmp_path / "d0",
        {
            "schools.csv": SCHOOLS,
            "teachers.csv": _teachers(),
            "students.csv": without_cara,
            "classes.csv": CLASSES,
            "enrollments.csv": [e for e in ENROLLMENTS if e[2] != "ST1"],
        },
    )
    assert (
        sync_folder(tmp_path / "d0", district=DISTRICT, settings=settings, drop="d0").status
        == "applied"
    )
    with engine.begin() as conn:
        school = conn.execute(
            sa.select(Organisation.id).where(Organisation.sis_id == "S1")
        ).scalar_one()
        personal = seed_account(
            conn, "Cara", "Diaz", [("email", "cara.d@kidmail.example", False)], dob=date(2016, 3, 4)
        )
        conn.execute(
            sa.insert(OrgMembership).values(
                org_id=school, account_id=personal, role="student", source="manual"
            )
        )

    first = sync_folder(drop(tmp_path / "d1"), district=DISTRICT, settings=settings, drop="d1")
    assert first.decisions["candidates"] == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(MergeCandidate)).one()
        assert (row.account_id, row.other_person_key, row.reason) == (
            personal,
            "student:ST1",
            "same_name_dob",
        )
        cara = account_of(conn, "student:ST1")

    again = sync_folder(tmp_path / "d1", district=DISTRICT, settings=settings, drop="d1-again")
    assert again.decisions["candidates"] == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(MergeCandidate)).one()  # still one row
        assert {row.account_id, row.other_account_id} == {personal, cara}
        assert (row.first_drop_id, row.last_drop_id) == ("d1", "d1-again")


def test_merge_candidates_that_fail_leave_the_drop_unapplied(
    tmp_path: Path, settings: Settings, seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The candidates are worked out in a thread while the drop is applied (on
    Postgres; with the decisions elsewhere); the apply's transaction waits for them
    before it commits, so their failure applies nothing, and the drop synced again
    applies in full."""
    folder = drop(tmp_path / "d1")

    def broken(*args, **kwargs):
        raise RuntimeError("similar-people scan broke")

    monkeypatch.setattr("roster_pipelines.lib.identity.scan", broken)
    with pytest.raises(Exception, match="similar-people scan broke"):
        sync_folder(folder, district=DISTRICT, settings=settings, drop="d1")
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        assert count(conn, SisLink) == 0
        assert count(conn, SyncRun) == 0

    monkeypatch.undo()
    again = sync_folder(folder, district=DISTRICT, settings=settings, drop="d1-again")
    assert again.status == "applied"
    assert again.decisions == FIRST_DROP_DECISIONS
    with engine.connect() as conn:
        assert count(conn, SisLink) == 9


def test_merge_candidates_are_worked_out_while_the_drop_applies(
    tmp_path: Path, settings: Settings, seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Postgres the similar-people scan waits for the plan: the plan's reads had it
    on the two cores beside them, the apply's transaction leaves one idle. Elsewhere it
    runs with the decisions. Either way the run counts and records the candidates."""
    events: list[str] = []
    real_scan, real_plan = identity.scan, assets.plan_drop

    def scan(*args, **kwargs):
        events.append("scan")
        return real_scan(*args, **kwargs)

    def plan_drop(*args, **kwargs):
        try:
            return real_plan(*args, **kwargs)
        finally:
            events.append("planned")

    monkeypatch.setattr(identity, "scan", scan)
    monkeypatch.setattr(assets, "plan_drop", plan_drop)
    outcome = sync_folder(drop(tmp_path / "d1"), district=DISTRICT, settings=settings, drop="d1")
    assert outcome.status == "applied"
    postgres = settings.database_url.startswith("postgresql")
    assert events == (["planned", "scan"] if postgres else ["scan", "planned"])
    assert outcome.decisions == FIRST_DROP_DECISIONS
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        district = conn.execute(
            sa.select(Organisation.id).where(Organisation.sis_id == DISTRICT)
        ).scalar_one()
        assert drop_candidates(conn, district, "d1").height == FIRST_DROP_DECISIONS["candidates"]
