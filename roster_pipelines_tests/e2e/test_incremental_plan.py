"""The incremental maintenance plan (lib/incremental.py) on Postgres: taken only when
exact, and the same plan as the full one.

The suite runs with ROSTER_VERIFY_INCREMENTAL set (conftest.py): every incremental plan
is also planned in full and any difference fails the run. These tests make sure the
incremental path is taken where it should be (so that check has something to check)
and not where it must not be, and that the check itself can fail.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa
from alembic import command

from roster_pipelines.cli import sync_folder
from roster_pipelines.defs.sync import resources
from roster_pipelines.defs.sync.inprocess import SyncCrashed
from roster_pipelines.defs.sync.resources import DropStorageIOManager
from roster_pipelines.lib import admin, contracts, incremental, stage_files
from roster_pipelines.lib import operations as ops
from roster_pipelines.lib import sync as sync_lib
from roster_pipelines.lib.canonical import Roster
from roster_pipelines.lib.config import DEFAULT_FORMAT, Settings
from roster_pipelines.lib.drops import partition_key
from roster_pipelines.lib.formats import get_adapter
from roster_pipelines.lib.generator import generate_district
from roster_pipelines.lib.identity import LinksFolder, drop_candidates
from roster_pipelines.lib.plan import REMOVAL_TABLES
from roster_pipelines.lib.store import state
from roster_pipelines.lib.store.engine import alembic_config, make_engine
from roster_pipelines.lib.store.models import Account, ContactPoint, OrgMembership, SisLink
from roster_pipelines.lib.store.state import find_district
from roster_pipelines.lib.sync import IncrementalMismatch, StalePlan, plan_drop, resolve_drop

pytestmark = pytest.mark.postgres

DISTRICT = "incremental-usd"


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A generated district, a 1 % churn maintenance drop of it, and a 0.5 % one after
    it (at 1,500 people a 1 % drop touches a quarter of the district, where a plan
    goes in full)."""
    root = tmp_path_factory.mktemp("incremental-drops")
    initial, second, third = root / "initial", root / "second", root / "third"
    generate_district(initial, people=1500, seed=11)
    generate_district(second, people=1500, seed=12, maintenance_of=initial, churn=0.01)
    generate_district(third, people=1500, seed=13, maintenance_of=second, churn=0.005)
    return initial, second, third


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings.from_env(state_dir=str(tmp_path / "state"), database_url=url)


def _plan_scope(settings: Settings, drop: str) -> dict[str, int] | None:
    storage = DropStorageIOManager(state_dir=str(settings.state_dir))
    return storage.stored("sync_plan", partition_key(DISTRICT, drop)).scope


def _sync(folder: Path, settings: Settings, drop: str) -> str:
    return sync_folder(folder, district=DISTRICT, settings=settings, drop=drop).status


def _students_cut(drop: Path, to: Path) -> Path:
    """A copy of `drop` at `to` without the last 8 % of its students' rows."""
    shutil.copytree(drop, to)
    students = to / "students.csv"
    header, *rows = students.read_text().splitlines()
    students.write_text("\n".join([header, *rows[: len(rows) * 92 // 100]]) + "\n")
    return to


def test_maintenance_drops_are_planned_incrementally_and_equal_the_full_plan(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> None:
    initial, second, third = drops
    settings = _settings(tmp_path, pg_url)
    assert _sync(initial, settings, "d1") == "applied"
    assert _plan_scope(settings, "d1") is None  # the initial drop: in full

    # Verified against the full plan inside the run (ROSTER_VERIFY_INCREMENTAL).
    assert _sync(second, settings, "d2") == "applied"
    scope = _plan_scope(settings, "d2")
    assert scope is not None
    with make_engine(pg_url).connect() as conn:
        people = conn.execute(sa.select(sa.func.count()).select_from(SisLink)).scalar()
    assert 0 < scope["scope_people"] < people / 4
    assert scope["changed_people"] > 0 and scope["changed_enrollments"] > 0

    assert _sync(third, settings, "d3") == "applied"
    assert _plan_scope(settings, "d3") is not None
    # The same drop again: nothing changed, an empty scope, an empty plan.
    assert _sync(third, settings, "d4") == "applied"
    assert _plan_scope(settings, "d4")["scope_people"] == 0


# The roster tables by the plan's name for their changes.
_PLANNED_TABLES = {**REMOVAL_TABLES, "accounts": "accounts", "contacts": "contact_points"}


def test_the_apply_writes_the_rows_its_plan_changes_and_no_other(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> None:
    """The database's work follows the change, not the district (issue 5): per table, a
    drop's apply touches (`updated_at`) exactly the rows its plan adds, updates, removes
    or reactivates, and the same drop again touches none."""
    initial, second, third = drops
    settings = _settings(tmp_path, pg_url)
    engine = make_engine(pg_url)
    assert _sync(initial, settings, "d1") == "applied"
    storage = DropStorageIOManager(state_dir=str(settings.state_dir))
    for folder, drop in ((second, "d2"), (third, "d3"), (third, "d4")):
        with engine.connect() as conn:
            started = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
        assert _sync(folder, settings, drop) == "applied"
        plan = storage.stored("sync_plan", partition_key(DISTRICT, drop))
        planned, touched = {}, {}
        with engine.connect() as conn:
            for name, table in _PLANNED_TABLES.items():
                changes = getattr(plan, name)
                changed_ids = pl.concat(
                    [changes.updates["id"], changes.removals["id"], changes.reactivations["id"]]
                ).n_unique()
                planned[name] = changes.adds.height + changed_ids
                touched[name] = conn.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE updated_at >= :t"),
                    {"t": started},
                ).scalar_one()
        assert touched == planned, drop
        if drop == "d4":  # the same drop again
            assert sum(touched.values()) == 0
        else:
            assert touched["class_memberships"] > 0 and touched["accounts"] > 0


def test_writes_outside_the_sync_join_the_scope_or_force_a_full_plan(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> None:
    initial, second, third = drops
    settings = _settings(tmp_path, pg_url)
    engine = make_engine(pg_url)
    _sync(initial, settings, "d1")
    # Between drops the app writes: a teacher claims a class and adds a manual member,
    # an administrator removes a person, a user renames themselves. The next plan is
    # incremental with those accounts in scope, and equal to the full plan (verified
    # in the run: the removed person comes back if the drop still lists them).
    with engine.connect() as conn:
        class_id, owner = conn.execute(
            sa.text("SELECT id, owner_account_id FROM classes WHERE owner_account_id IS NOT NULL")
        ).first()
        removed, renamed = conn.execute(
            sa.text("SELECT account_id FROM sis_links WHERE role = 'student' LIMIT 2")
        ).scalars()
    ops.claim_class(engine, class_id, by_account_id=owner)
    ops.add_participant(engine, class_id, renamed, role="student", by_account_id=owner)
    ops.remove_person(engine, DISTRICT, removed, by="an administrator")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE accounts SET first_name = 'X' WHERE id = :a"), {"a": renamed})
    assert _sync(second, settings, "d2") == "applied"
    scope = _plan_scope(settings, "d2")
    assert scope is not None and scope["scope_accounts"] >= 2

    # A change to the district's settings: the next plan is a full one.
    admin.set_threshold(engine, DISTRICT, kind="people", percent=50, count=10)
    assert _sync(third, settings, "d2b") == "applied"
    assert _plan_scope(settings, "d2b") is None

    # The stored fingerprint of the previous drop is not that of the roster its run
    # applied (its validation was run again): a full plan.
    stored = settings.state_dir / "stage_outputs" / "validated_roster"
    rerun = stage_files.load(stored / partition_key(DISTRICT, "d2b"))
    tables = rerun.fingerprint.tables
    other = incremental.RosterFingerprint(tables | {"people": tables["people"].slice(1)})
    other.digest()  # stored with it, as the roster storage does
    rerun = dataclasses.replace(rerun, fingerprint=other)
    stage_files.save(rerun, stored / partition_key(DISTRICT, "d2b"))
    assert _sync(third, settings, "d3") == "applied"
    assert _plan_scope(settings, "d3") is None

    # With everything in place: incremental (the same drop again, nothing to change).
    assert _sync(third, settings, "d4") == "applied"
    assert _plan_scope(settings, "d4")["scope_people"] == 0

    # The previous drop's roster is gone from storage: a full plan.
    shutil.rmtree(stored / partition_key(DISTRICT, "d4"))
    assert _sync(third, settings, "d5") == "applied"
    assert _plan_scope(settings, "d5") is None


def test_a_new_plan_version_means_a_full_plan(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    initial, second, _ = drops
    settings = _settings(tmp_path, pg_url)
    _sync(initial, settings, "d1")
    monkeypatch.setattr(sync_lib, "PLAN_VERSION", incremental.PLAN_VERSION + "-next")
    assert _sync(second, settings, "d2") == "applied"
    assert _plan_scope(settings, "d2") is None


def _second_drop_after_the_first(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> tuple[sa.Engine, Roster, Callable[[str], incremental.RosterFingerprint]]:
    """The first drop synced; the second validated, with the first's stored fingerprint
    (as the identity and plan steps are given it)."""
    initial, second, _ = drops
    settings = _settings(tmp_path, pg_url)
    _sync(initial, settings, "d1")
    storage = DropStorageIOManager(state_dir=str(settings.state_dir))
    stored = storage.stored("validated_roster", partition_key(DISTRICT, "d1"))

    def previous(drop: str) -> incremental.RosterFingerprint:
        return incremental.fingerprint(stored)

    roster = contracts.validate(get_adapter(DEFAULT_FORMAT)(second))
    return make_engine(pg_url), roster, previous


@pytest.mark.parametrize("scope_by", ["identity", "plan"])
@pytest.mark.parametrize("missed", ["changed people", "people with changes of their own"])
def test_the_verification_fails_a_plan_whose_scope_misses_a_change(
    tmp_path: Path,
    pg_url: str,
    drops: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    scope_by: str,
    missed: str,
) -> None:
    """The scope is worked out by identity (the pipeline) or, for an identity result
    that did not, by the plan: a scope that misses a change fails either way, whether
    it forgets changed people or only some whose own rows (not only their classes')
    changed, whose accounts, contact points, school memberships and guardianships it
    then leaves out."""
    engine, roster, previous = _second_drop_after_the_first(tmp_path, pg_url, drops)

    def too_small(changed, counts, identities, more_accounts, described=None, own=None):
        assert own is not None and own.len() > 1
        if missed == "changed people":
            # Forget half of the changed people: their changes fall outside the scope.
            changed = changed.head(changed.len() // 2)
            own = own.filter(own.is_in(changed.implode()))
            more_accounts = more_accounts.head(0)
        else:
            own = own.head(own.len() // 2)
        return incremental.scope_for(changed, counts, identities, more_accounts, described, own)

    monkeypatch.setattr(sync_lib, "scope_for", too_small)
    by_identity = scope_by == "identity"
    identity = resolve_drop(
        engine, DISTRICT, roster, drop="d2", previous=previous if by_identity else None
    )
    assert identity.scope_decided == by_identity
    assert (identity.scope is not None) == by_identity
    with pytest.raises(IncrementalMismatch, match="differs from the full plan"):
        plan_drop(engine, identity, roster, previous=previous)


def test_a_plan_made_again_from_the_stored_identity_result_keeps_its_scope(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> None:
    """The plan step re-executed from the UI reads identity's result from disk, which
    keeps the scope identity worked out but not the contact points and owners it read:
    the plan reads its scope's contact points and looks up the owners again, and still
    equals the full plan (the test suite's verification mode)."""
    engine, roster, previous = _second_drop_after_the_first(tmp_path, pg_url, drops)
    identity = resolve_drop(
        engine, DISTRICT, roster, drop="d2", candidates_in_background=True, previous=previous
    )
    assert identity.scope is not None and identity.district_contacts is not None
    folder = tmp_path / "identity"
    stage_files.save(resources._on_disk(dg.AssetKey("identity_resolution"), identity), folder)
    reloaded = stage_files.load(folder)
    assert reloaded.scope_decided and reloaded.district_contacts is None
    assert reloaded.contact_owners is None
    assert reloaded.scope.people.equals(identity.scope.people)
    plan = plan_drop(engine, reloaded, roster)
    assert plan.scope == identity.scope.stats()
    assert plan.counts() == plan_drop(engine, identity, roster).counts()


@pytest.mark.parametrize("seed", [21, 31])
def test_heavier_churn_planned_incrementally_still_equals_the_full_plan(
    tmp_path: Path, pg_url: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5 % churn (people, enrollments, guardians, classes and their teachers) three
    drops in a row, each forced down the incremental path and verified in the run."""
    monkeypatch.setattr(sync_lib, "MAX_SCOPE_SHARE", 1.0)
    settings = _settings(tmp_path, pg_url)
    before = tmp_path / "drop0"
    generate_district(before, people=800, seed=seed)
    assert _sync(before, settings, "d0") == "applied"
    for n in range(1, 4):
        folder = tmp_path / f"drop{n}"
        generate_district(folder, people=800, seed=seed + n, maintenance_of=before, churn=0.05)
        assert _sync(folder, settings, f"d{n}") in ("applied", "held")
        scope = _plan_scope(settings, f"d{n}")
        assert scope is not None and scope["scope_people"] > 0
        before = folder


def test_a_newcomer_linked_to_another_district_s_account_is_planned_incrementally(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> None:
    """A new teacher whose email is an account of another district: identity links
    them to it, and the incremental plan reads that account (not yet linked here)."""
    from roster_pipelines_tests.e2e.test_walking_skeleton import DISTRICT as OTHER
    from roster_pipelines_tests.e2e.test_walking_skeleton import initial_drop

    initial, _, _ = drops
    settings = _settings(tmp_path, pg_url)
    assert sync_folder(initial_drop(tmp_path / "other"), district=OTHER, settings=settings)
    assert _sync(initial, settings, "d1") == "applied"
    newcomer = tmp_path / "newcomer"
    shutil.copytree(initial, newcomer)
    teachers = newcomer / "teachers.csv"
    header = teachers.read_text().splitlines()[0].split(",")
    school = (newcomer / "schools.csv").read_text().splitlines()[1].split(",")[0]
    values = {"school_id": school, "teacher_id": "T-NEW", "teacher_first_name": "Annie"}
    values |= {"teacher_last_name": "Lee", "teacher_email": "ann.lee@lincoln.k12.us"}
    with teachers.open("a") as handle:
        handle.write(",".join(values.get(column, "") for column in header) + "\n")
    assert _sync(newcomer, settings, "d2") == "applied"
    assert _plan_scope(settings, "d2")["scope_people"] >= 1
    with make_engine(pg_url).connect() as conn:
        accounts = conn.execute(
            sa.select(SisLink.account_id).where(
                SisLink.person_key.in_(("teacher:T1", "teacher:T-NEW"))
            )
        ).scalars()
        assert len(set(accounts)) == 1  # the newcomer has the other district's account


def _untouched_student_with_phone(drops: tuple[Path, ...]) -> str:
    """The id of a student whose rows (with a phone of their own) are the same in
    every drop: no churn puts them in a scope."""
    rows: list[dict[str, set[str]]] = []
    for folder in drops:
        lines = (folder / "students.csv").read_text().splitlines()
        by_id: dict[str, set[str]] = {}
        for line in lines[1:]:
            by_id.setdefault(line.split(",")[1], set()).add(line)
        rows.append(by_id)
    header = lines[0].split(",")
    phone = header.index("student_phone")
    for student, first in rows[0].items():
        if all(r.get(student) == first for r in rows[1:]) and all(
            line.split(",")[phone] for line in first
        ):
            return student
    raise AssertionError("no untouched student with a phone in the generated drops")


def test_contact_points_written_in_the_app_are_planned_incrementally(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> None:
    """Migration 0008 and the refused contacts: an untouched student's SIS phone is
    taken from their account and given to an account outside the district; the next
    drop plans the student (the trigger recorded their account) and cannot give the
    phone back (CONTACT_IN_USE). The owner then lets the phone go, which no district
    hears of: the drop after plans the student again because of that alert, and gives
    it back. Each plan is checked against the full plan (ROSTER_VERIFY_INCREMENTAL)."""
    initial, second, third = drops
    settings = _settings(tmp_path, pg_url)
    engine = make_engine(pg_url)
    assert _sync(initial, settings, "d1") == "applied"
    student = f"student:{_untouched_student_with_phone(drops)}"
    with engine.begin() as conn:
        account = conn.execute(
            sa.select(SisLink.account_id).where(SisLink.person_key == student)
        ).scalar_one()
        phone = conn.execute(
            sa.delete(ContactPoint)
            .where(ContactPoint.account_id == account, ContactPoint.kind == "phone")
            .returning(ContactPoint.value)
        ).scalar_one()
        owner = conn.execute(
            sa.insert(Account).values(first_name="Someone", last_name="Else").returning(Account.id)
        ).scalar_one()
        conn.execute(
            sa.insert(ContactPoint).values(
                account_id=owner, kind="phone", value=phone, source="user"
            )
        )

    def phone_owner() -> int:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(ContactPoint.account_id).where(ContactPoint.value == phone)
            ).scalar_one()

    assert _sync(second, settings, "d2") == "applied"
    assert _plan_scope(settings, "d2") is not None
    assert phone_owner() == owner
    with engine.connect() as conn:
        alerts = conn.execute(
            sa.text(
                "SELECT count(*) FROM sync_issues i JOIN sync_runs r ON r.id = i.sync_run_id "
                "WHERE r.drop_id = 'd2' AND i.code = 'CONTACT_IN_USE' AND i.ids = :ids"
            ),
            {"ids": f"person={student}"},
        ).scalar_one()
    assert alerts == 1

    with engine.begin() as conn:
        conn.execute(sa.delete(ContactPoint).where(ContactPoint.account_id == owner))
    assert _sync(third, settings, "d3") == "applied"
    assert _plan_scope(settings, "d3") is not None
    assert phone_owner() == account


def test_a_drop_applied_between_identity_and_plan_makes_the_plan_stale(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> None:
    """Identity matched the drop's people against the district before another drop
    applied (which may have made the accounts it was about to create): no plan."""
    initial, second, third = drops
    settings = _settings(tmp_path, pg_url)
    _sync(initial, settings, "d1")
    engine = make_engine(pg_url)
    roster = contracts.validate(get_adapter(DEFAULT_FORMAT)(third))
    identity = resolve_drop(engine, DISTRICT, roster, drop="d3")
    assert _sync(second, settings, "d2") == "applied"
    with pytest.raises(StalePlan, match="applied after this drop's people were matched"):
        plan_drop(engine, identity, roster)
    # Matched again, it plans.
    assert plan_drop(engine, resolve_drop(engine, DISTRICT, roster, drop="d3"), roster)


def _identity(settings: Settings, drop: str) -> sync_lib.IdentityResult:
    storage = DropStorageIOManager(state_dir=str(settings.state_dir))
    return storage.stored("identity_resolution", partition_key(DISTRICT, drop))


def _pairs(engine: sa.Engine, drop: str) -> set[tuple[frozenset[int], str]]:
    with engine.connect() as conn:
        district = find_district(conn, DISTRICT)
        found = drop_candidates(conn, district, drop)
    return {
        (frozenset((r["account_id"], r["other_account_id"])), r["reason"])
        for r in found.iter_rows(named=True)
    }


@pytest.mark.parametrize("marks", ["0009", "0008"])
def test_the_similar_people_scan_works_out_again_only_what_changed(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path], marks: str
) -> None:
    """After an incremental drop the next drop's scan starts from its keys and works out
    only the accounts written since. A member an administrator added by hand (no SIS
    link) under a student's name gets that student's date of birth in the app: the
    next drop finds the pair; renamed, the drop after loses it. The run checks each
    scan against a full one (ROSTER_VERIFY_INCREMENTAL). With the change marks of
    migration 0008 (the hand-added member's writes not recorded), that check fails."""
    initial, second, third = drops
    settings = _settings(tmp_path, pg_url)
    engine = make_engine(pg_url)
    _sync(initial, settings, "d1")
    if marks == "0008":
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0008")
    with engine.begin() as conn:
        student, first, last, dob, school = conn.execute(
            sa.text(
                "SELECT a.id, a.first_name, a.last_name, a.dob, om.org_id FROM accounts a "
                "JOIN sis_links l ON l.account_id = a.id AND l.role = 'student' "
                "JOIN org_memberships om ON om.account_id = a.id "
                "WHERE a.dob IS NOT NULL ORDER BY a.id LIMIT 1"
            )
        ).one()
        member = conn.execute(
            sa.insert(Account).values(first_name=first, last_name=last).returning(Account.id)
        ).scalar_one()
        conn.execute(
            sa.insert(OrgMembership).values(
                org_id=school, account_id=member, role="parent", source="manual"
            )
        )
    with engine.connect() as conn:
        people = conn.execute(sa.select(sa.func.count()).select_from(SisLink)).scalar()
    # The first drop made every account: its apply scanned the district as it left it
    # (`sync.keep_similar_keys`), and d2's scan starts from those keys.
    outcome = sync_folder(second, district=DISTRICT, settings=settings, drop="d2")
    assert outcome.status == "applied"
    rescanned = outcome.rescanned
    assert rescanned is not None and 0 < rescanned < people / 2
    # From d2's keys: its scope (the member's membership among them) and d3's.
    outcome = sync_folder(third, district=DISTRICT, settings=settings, drop="d3")
    assert outcome.status == "applied"
    rescanned = outcome.rescanned
    # (At 1,500 people a 1 % drop's scope is a fifth of the district.)
    assert rescanned is not None and 0 < rescanned < people / 2
    pair = (frozenset((student, member)), "same_name_dob")
    assert pair not in _pairs(engine, "d3")

    with engine.begin() as conn:
        conn.execute(sa.update(Account).where(Account.id == member).values(dob=dob))
    if marks == "0008":
        with pytest.raises(
            SyncCrashed, match=r"IncrementalMismatch.*merge candidates: only scoped \[\], only full"
        ):
            _sync(third, settings, "d4")
        return
    outcome = sync_folder(third, district=DISTRICT, settings=settings, drop="d4")
    assert outcome.status == "applied" and outcome.rescanned is not None
    assert pair in _pairs(engine, "d4")

    with engine.begin() as conn:
        conn.execute(sa.update(Account).where(Account.id == member).values(first_name="Someone"))
    outcome = sync_folder(third, district=DISTRICT, settings=settings, drop="d5")
    assert outcome.status == "applied" and outcome.rescanned is not None
    assert pair not in _pairs(engine, "d5")


def test_identity_reads_the_links_the_last_drop_kept_and_those_written_since(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> None:
    """An applied drop keeps the district's SIS links (`sync.keep_links`); the next
    drop's identity reads from the database only the links of the accounts written
    outside the sync since. A link moved to another account between drops binds its
    person there, as the full read (the run's verification) does."""
    initial, second, third = drops
    settings = _settings(tmp_path, pg_url)
    engine = make_engine(pg_url)
    folder = LinksFolder(settings.district_links_folder(DISTRICT))
    assert _sync(initial, settings, "d1") == "applied"
    assert not _identity(settings, "d1").links_kept
    kept = folder.load("d1")
    with engine.connect() as conn:
        links = conn.execute(sa.select(sa.func.count()).select_from(SisLink)).scalar()
    assert kept is not None and kept.links.height == links

    # Outside the sync: a student of the next drop has their link moved to a new account.
    students = pl.read_csv(second / "students.csv", infer_schema=False)["student_id"]
    with engine.begin() as conn:
        person = conn.execute(
            sa.text(
                "SELECT person_key FROM sis_links WHERE role = 'student' "
                "AND person_key = ANY(CAST(:keys AS text[])) ORDER BY id LIMIT 1"
            ),
            {"keys": [f"student:{s}" for s in students.to_list()]},
        ).scalar_one()
        moved = conn.execute(
            sa.insert(Account).values(first_name="Moved", last_name="Here").returning(Account.id)
        ).scalar_one()
        conn.execute(
            sa.update(SisLink).where(SisLink.person_key == person).values(account_id=moved)
        )
    assert _sync(second, settings, "d2") == "applied"  # verified against the full plan
    identity = _identity(settings, "d2")
    assert identity.links_kept
    assert identity.identities.filter(pl.col("person_key") == person)["account_id"].item() == moved
    assert folder.load("d2") is not None and folder.load("d1") is None

    # Links kept for another run than the base's are not used.
    stale = folder.load("d2")
    folder.save("d2", dataclasses.replace(stale, run_id=stale.run_id - 1))
    assert _sync(third, settings, "d3") == "applied"
    assert not _identity(settings, "d3").links_kept
    assert _sync(third, settings, "d4") == "applied"
    assert _identity(settings, "d4").links_kept


def test_an_incremental_drop_under_a_removal_threshold_is_decided_without_counting_the_district(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scope of a drop that removes 8 % of the students is mostly those students,
    so its own rows cannot tell whether their enrollments are under a 30 % threshold;
    with the drop's rows outside the scope (unchanged people, whose rows the last drop
    left active) they can, and the district's rows are not counted (0.4 s at a million
    people). The full plan (the run's verification) applies the drop too."""
    initial, second, _ = drops
    settings = _settings(tmp_path, pg_url)
    engine = make_engine(pg_url)
    _sync(initial, settings, "d1")
    for kind in ("people", "enrollments"):
        admin.set_threshold(engine, DISTRICT, kind=kind, percent=30, count=5)
    assert _sync(second, settings, "d2") == "applied"  # the settings changed: in full
    truncated = _students_cut(second, tmp_path / "truncated")
    counted: list[str] = []
    count_total = state._count_total

    def counting(conn: sa.Connection, district_id: int, kind: str) -> int:
        counted.append(kind)
        return count_total(conn, district_id, kind)

    monkeypatch.setattr(state, "_count_total", counting)
    assert _sync(truncated, settings, "d3") == "applied"
    assert _plan_scope(settings, "d3") is not None
    storage = DropStorageIOManager(state_dir=str(settings.state_dir))
    plan = storage.stored("sync_plan", partition_key(DISTRICT, "d3"))
    removed = plan.class_memberships.removals.height
    assert removed >= 5 and plan.links.removals.height >= 5
    # (Checked to fail without the drop's rows outside the scope: both counted.)
    assert counted == []


def test_an_incremental_drop_past_a_removal_threshold_is_held_on_the_district_s_count(
    tmp_path: Path, pg_url: str, drops: tuple[Path, Path, Path]
) -> None:
    """An incremental plan reads its scope's people only; its hold thresholds count the
    district's active people when the scope's cannot decide. A drop that removes 8 % of
    the students, under a 2 % threshold, is held with the district's total in its
    reason, as the full plan (the run's verification) holds it."""
    initial, second, _ = drops
    settings = _settings(tmp_path, pg_url)
    engine = make_engine(pg_url)
    _sync(initial, settings, "d1")
    admin.set_threshold(engine, DISTRICT, kind="people", percent=2, count=5)
    assert _sync(second, settings, "d2") == "applied"  # the settings changed: in full
    # The same drop, some students short: the change is the removals alone.
    truncated = _students_cut(second, tmp_path / "truncated")
    assert _sync(truncated, settings, "d3") == "held"
    assert _plan_scope(settings, "d3") is not None
    storage = DropStorageIOManager(state_dir=str(settings.state_dir))
    reasons = storage.stored("sync_plan", partition_key(DISTRICT, "d3")).hold_reasons
    with engine.connect() as conn:
        active = conn.execute(
            sa.select(sa.func.count()).select_from(SisLink).where(SisLink.active)
        ).scalar()
    assert any(f" of {active} people" in r for r in reasons), reasons
