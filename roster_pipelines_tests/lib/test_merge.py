"""Account merges (issue 4, R2), on SQLite and Postgres: every membership, class,
guardianship, contact point and SIS link kept, nothing doubled, idempotent, audited,
refused when it would give one account two SIS identities of one role in one district,
and followed by later syncs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from roster_pipelines.cli import main, sync_folder
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.identity import resolve_identities
from roster_pipelines.lib.merge import MergeError, list_candidates, merge_accounts_engine
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import (
    Account,
    Class,
    ClassMembership,
    ContactPoint,
    Guardianship,
    MergeAudit,
    MergeCandidate,
    Organisation,
    OrgMembership,
    SisLink,
)
from roster_pipelines_tests.conftest import write_drop

DISTRICT = "merge-usd"


def the_drop(folder: Path) -> Path:
    return write_drop(
        folder,
        {
            "schools.csv": [["S1", "Lincoln Elementary"]],
            "teachers.csv": [["S1", "T1", "Ann", "Lee", "ann.lee@merge.k12.us", ""]],
            "students.csv": [
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
                    "dana.diaz@school-mail.org",
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
                    "dana.diaz@school-mail.org",
                    "",
                ],
            ],
            "classes.csv": [["S1", "C1", "T1", "Grade 3"]],
            "enrollments.csv": [["S1", "C1", "ST1"], ["S1", "C1", "ST2"]],
        },
    )


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings.from_env(state_dir=str(tmp_path / "state"), database_url=db_url)


def _link(conn, person_key: str) -> int:
    return conn.execute(
        sa.select(SisLink.account_id).where(SisLink.person_key == person_key)
    ).scalar_one()


def _count(conn, model, *where) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(model).where(*where)).scalar_one()


@pytest.fixture
def synced(tmp_path: Path, settings: Settings) -> dict[str, int]:
    """The district synced, plus Dana's personal account: she joined the school and class
    by hand, made a class of her own, and is guardian of ST1 (as the SIS also says) and
    of a child outside the SIS."""
    outcome = sync_folder(
        the_drop(tmp_path / "d1"), district=DISTRICT, settings=settings, drop="d1"
    )
    assert outcome.status == "applied"
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        district = conn.execute(
            sa.select(Organisation.id).where(Organisation.sis_id == DISTRICT)
        ).scalar_one()
        school = conn.execute(
            sa.select(Organisation.id).where(Organisation.sis_id == "S1")
        ).scalar_one()
        c1 = conn.execute(sa.select(Class.id).where(Class.sis_class_id == "C1")).scalar_one()
        dana = _link(conn, "parent:email:dana.diaz@school-mail.org")
        st1 = _link(conn, "student:ST1")
        personal = conn.execute(
            sa.insert(Account)
            .values(first_name="Dana", last_name="Diaz", dob=None)
            .returning(Account.id)
        ).scalar_one()
        outside_child = conn.execute(
            sa.insert(Account).values(first_name="Zoe", last_name="Diaz").returning(Account.id)
        ).scalar_one()
        conn.execute(
            sa.insert(ContactPoint).values(
                account_id=personal,
                kind="email",
                value="dana.personal@gmail.com",
                verified=True,
                source="user",
            )
        )
        conn.execute(
            sa.insert(OrgMembership).values(
                org_id=school, account_id=personal, role="parent", source="manual"
            )
        )
        # The same SIS membership as the SIS account has (a duplicate to fold), inactive.
        conn.execute(
            sa.insert(OrgMembership).values(
                org_id=school, account_id=personal, role="parent", source="sis", active=False
            )
        )
        conn.execute(
            sa.insert(ClassMembership).values(
                class_id=c1, account_id=personal, role="parent", source="manual"
            )
        )
        conn.execute(
            sa.insert(ClassMembership).values(
                class_id=c1, account_id=personal, role="parent", source="sis"
            )
        )
        own = conn.execute(
            sa.insert(Class)
            .values(
                district_id=district,
                school_id=school,
                sis_name="Dana's club",
                name="Dana's club",
                owner_account_id=personal,
            )
            .returning(Class.id)
        ).scalar_one()
        conn.execute(
            sa.insert(Guardianship).values(
                district_id=district, parent_account_id=personal, student_account_id=st1
            )
        )
        conn.execute(
            sa.insert(Guardianship).values(
                district_id=district, parent_account_id=personal, student_account_id=outside_child
            )
        )
    return {
        "dana": dana,
        "personal": personal,
        "own_class": own,
        "st1": st1,
        "outside_child": outside_child,
        "c1": c1,
    }


def _memberships(conn, account_id: int) -> dict[str, set]:
    return {
        "org": set(
            conn.execute(
                sa.select(
                    OrgMembership.org_id,
                    OrgMembership.role,
                    OrgMembership.source,
                    OrgMembership.active,
                ).where(OrgMembership.account_id == account_id)
            ).all()
        ),
        "class": set(
            conn.execute(
                sa.select(
                    ClassMembership.class_id,
                    ClassMembership.role,
                    ClassMembership.source,
                    ClassMembership.active,
                ).where(ClassMembership.account_id == account_id)
            ).all()
        ),
        "wards": set(
            conn.execute(
                sa.select(Guardianship.student_account_id).where(
                    Guardianship.parent_account_id == account_id
                )
            ).scalars()
        ),
    }


def test_merge_keeps_everything_once_and_is_audited(
    settings: Settings, synced, tmp_path: Path
) -> None:
    engine = make_engine(settings.database_url)
    keep, other = synced["dana"], synced["personal"]
    with engine.connect() as conn:
        before_keep, before_other = _memberships(conn, keep), _memberships(conn, other)

    result = merge_accounts_engine(engine, keep, other, actor="pat.admin@merge.k12.us")
    assert not result.already_merged and result.audit_id
    with engine.connect() as conn:
        after = _memberships(conn, keep)

        # Every membership of both, each (org/class, role, source) once, active if either was.
        def keys(rows):
            return {r[:3] for r in rows}

        assert keys(after["org"]) == keys(before_keep["org"]) | keys(before_other["org"])
        assert keys(after["class"]) == keys(before_keep["class"]) | keys(before_other["class"])
        assert all(r[3] for r in after["org"] | after["class"])
        assert _count(conn, OrgMembership, OrgMembership.account_id == keep) == len(after["org"])
        assert after["wards"] == before_keep["wards"] | before_other["wards"]
        assert _count(conn, Guardianship, Guardianship.parent_account_id == keep) == len(
            after["wards"]
        )
        # Nothing is left on the tombstone.
        assert _memberships(conn, other) == {"org": set(), "class": set(), "wards": set()}
        assert (
            conn.execute(
                sa.select(Class.owner_account_id).where(Class.id == synced["own_class"])
            ).scalar_one()
            == keep
        )
        assert set(
            conn.execute(
                sa.select(ContactPoint.value).where(ContactPoint.account_id == keep)
            ).scalars()
        ) == {"dana.diaz@school-mail.org", "dana.personal@gmail.com"}
        assert (
            conn.execute(sa.select(Account.merged_into_id).where(Account.id == other)).scalar_one()
            == keep
        )
        audit = conn.execute(sa.select(MergeAudit)).one()
        assert (audit.keep_account_id, audit.merged_account_id, audit.actor) == (
            keep,
            other,
            "pat.admin@merge.k12.us",
        )
        assert audit.details["moved"]["org_memberships"] == 2

    # Idempotent: the same merge again changes nothing and writes no second audit row.
    again = merge_accounts_engine(engine, keep, other, actor="pat.admin@merge.k12.us")
    assert again.already_merged
    with engine.connect() as conn:
        assert _count(conn, MergeAudit) == 1
        assert _memberships(conn, keep) == after

    # A later sync of the same drop finds nothing to change (no new accounts either).
    later = sync_folder(tmp_path / "d1", district=DISTRICT, settings=settings, drop="d1-later")
    assert later.status == "applied"
    assert later.changes["accounts_created"] == 0
    assert later.changes["memberships_added"] == 0 and later.changes["memberships_removed"] == 0


def test_later_syncs_follow_the_tombstone(settings: Settings, synced, tmp_path: Path) -> None:
    """Keep the personal account this time: the SIS identity moves onto it, and a link
    still pointing at the tombstone is followed."""
    engine = make_engine(settings.database_url)
    keep, other = synced["personal"], synced["dana"]
    merge_accounts_engine(engine, keep, other, actor="dana herself")
    with engine.begin() as conn:
        assert _link(conn, "parent:email:dana.diaz@school-mail.org") == keep
        # A binding written before the merge (e.g. by a run in flight) to the tombstone.
        conn.execute(sa.update(SisLink).where(SisLink.account_id == keep).values(account_id=other))
        from roster_pipelines.lib.contracts import validate
        from roster_pipelines.lib.formats.remind_csv import parse

        district = conn.execute(
            sa.select(Organisation.id).where(Organisation.sis_id == DISTRICT)
        ).scalar_one()
        resolution = resolve_identities(conn, district, validate(parse(tmp_path / "d1")))
        dana = resolution.identities.filter(
            resolution.identities["person_key"] == "parent:email:dana.diaz@school-mail.org"
        )
        assert dana.select("account_id", "decision").row(0) == (keep, "already_linked")
        conn.execute(sa.update(SisLink).where(SisLink.account_id == other).values(account_id=keep))
    accounts = None
    with engine.connect() as conn:
        accounts = _count(conn, Account)
    later = sync_folder(tmp_path / "d1", district=DISTRICT, settings=settings, drop="d1-later")
    assert later.status == "applied"
    assert later.changes["accounts_created"] == 0
    assert later.changes["memberships_added"] == 0 and later.changes["memberships_removed"] == 0
    with engine.connect() as conn:
        assert _count(conn, Account) == accounts
        assert _link(conn, "parent:email:dana.diaz@school-mail.org") == keep


def test_merge_refusals_and_cli(settings: Settings, synced, capsys) -> None:
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        st2 = _link(conn, "student:ST2")
    with pytest.raises(MergeError, match="two different SIS identities"):
        merge_accounts_engine(engine, synced["st1"], st2, actor="admin")
    with pytest.raises(MergeError, match="into itself"):
        merge_accounts_engine(engine, st2, st2, actor="admin")
    with pytest.raises(MergeError, match="does not exist"):
        merge_accounts_engine(engine, st2, 999_999, actor="admin")
    with engine.connect() as conn:  # nothing moved
        assert _link(conn, "student:ST1") == synced["st1"]
        assert _count(conn, MergeAudit) == 0

    common = ["--state-dir", str(settings.state_dir), "--db", settings.database_url]
    code = main(["admin", "merge-accounts", str(synced["st1"]), str(st2), "--by", "admin", *common])
    assert code == 2
    assert "two different SIS identities" in capsys.readouterr().err
    code = main(
        [
            "admin",
            "merge-accounts",
            str(synced["dana"]),
            str(synced["personal"]),
            "--by",
            "admin",
            *common,
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["keep"] == synced["dana"] and out["merged"] == synced["personal"] and out["audit_id"]
    # A merged account cannot be merged again elsewhere, nor kept.
    with pytest.raises(MergeError, match="already merged into"):
        merge_accounts_engine(engine, st2, synced["personal"], actor="admin")
    with pytest.raises(MergeError, match="instead"):
        merge_accounts_engine(engine, synced["personal"], st2, actor="admin")


def test_merge_candidates_listing_resolves_and_closes(settings: Settings, synced, capsys) -> None:
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        district = conn.execute(
            sa.select(Organisation.id).where(Organisation.sis_id == DISTRICT)
        ).scalar_one()
        conn.execute(
            sa.insert(MergeCandidate).values(
                district_id=district,
                account_id=synced["personal"],
                other_person_key="parent:email:dana.diaz@school-mail.org",
                reason="same_name_phone",
                pair_key="test-pair",
                last_drop_id="d1",
            )
        )
    rows = list_candidates(engine, DISTRICT)
    assert [(r["account_id"], r["other_account_id"], r["account_name"]) for r in rows] == [
        (synced["personal"], synced["dana"], "Dana Diaz")
    ]
    common = ["--state-dir", str(settings.state_dir), "--db", settings.database_url]
    assert main(["admin", "merge-candidates", DISTRICT, *common]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    merge_accounts_engine(engine, synced["dana"], synced["personal"], actor="admin")
    assert list_candidates(engine, DISTRICT) == []  # the pair is one account now
