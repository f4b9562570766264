"""Maintenance syncs done safely (R5, R6, R8–R11), on SQLite and Postgres.

Uses the small hand-written district of test_walking_skeleton (Lincoln, T1/T2,
ST1–ST4, classes C1–C3).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from roster_pipelines.cli import main, sync_folder
from roster_pipelines.defs.sync.assets import SYNC_ASSETS
from roster_pipelines.defs.sync.inprocess import run_drop
from roster_pipelines.defs.sync.resources import DropStorageIOManager, RosterStore
from roster_pipelines.lib import operations as ops
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.drops import archive_drop
from roster_pipelines.lib.formats import REQUIRED_FILES
from roster_pipelines.lib.holds import HoldError, decide_hold
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import (
    Account,
    Class,
    ClassMembership,
    HeldChange,
    Hold,
    OrgMembership,
    SisLink,
    SyncRun,
)
from roster_pipelines.lib.sync import StalePlan, apply_drop, plan_drop, resolve_drop
from roster_pipelines_tests.conftest import write_drop
from roster_pipelines_tests.e2e.test_walking_skeleton import (
    CLASSES,
    DISTRICT,
    ENROLLMENTS,
    SCHOOLS,
    STUDENTS,
    TEACHERS,
    initial_drop,
)

ALL_TABLES = (Account, SisLink, Class, ClassMembership, OrgMembership, SyncRun)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings.from_env(state_dir=str(tmp_path / "state"), database_url=db_url)


def _drop(folder: Path, **files) -> Path:
    rows = {
        "schools.csv": SCHOOLS,
        "teachers.csv": TEACHERS,
        "students.csv": STUDENTS,
        "classes.csv": CLASSES,
        "enrollments.csv": ENROLLMENTS,
    }
    rows.update({f"{k}.csv": v for k, v in files.items()})
    return write_drop(folder, rows)


def _scalar(engine: sa.Engine, stmt):
    with engine.connect() as conn:
        return conn.execute(stmt).scalar()


def _account(engine: sa.Engine, person_key: str) -> int:
    return _scalar(engine, sa.select(SisLink.account_id).where(SisLink.person_key == person_key))


def _snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every row of the roster tables (active flags included), for before/after."""
    out = {}
    with engine.connect() as conn:
        for model in ALL_TABLES:
            table = model.__table__
            cols = [c for c in table.c if c.name not in ("updated_at",)]
            out[table.name] = sorted(tuple(r) for r in conn.execute(sa.select(*cols)).all())
    return out


def test_owner_edits_survive_three_syncs_and_claim_activates(
    tmp_path: Path, settings: Settings
) -> None:
    engine = make_engine(settings.database_url)
    sync_folder(initial_drop(tmp_path / "d0"), district=DISTRICT, settings=settings, drop="d0")
    c1 = ops.find_class(engine, DISTRICT, "C1")
    t1, t2 = _account(engine, "teacher:T1"), _account(engine, "teacher:T2")

    assert not _scalar(engine, sa.select(Class.claimed).where(Class.id == c1))  # R5
    with pytest.raises(ops.OperationRefused):
        ops.claim_class(engine, c1, by_account_id=t2)  # not a teacher of C1
    ops.claim_class(engine, c1, by_account_id=t1)
    assert _scalar(engine, sa.select(Class.claimed).where(Class.id == c1))

    ops.edit_class(engine, c1, by_account_id=t1, name="Ms Lee's Owls", join_code="owls2026")
    for i in range(1, 4):
        classes = [["S1", "C1", "T1", f"Homeroom 3-{i}"], *CLASSES[1:]]
        out = sync_folder(
            _drop(tmp_path / f"d{i}", classes=classes),
            district=DISTRICT,
            settings=settings,
            drop=f"d{i}",
        )
        assert out.status == "applied"
        row = sa.select(Class.name, Class.sis_name, Class.join_code, Class.claimed).where(
            Class.id == c1
        )
        with engine.connect() as conn:
            assert tuple(conn.execute(row).one()) == (
                "Ms Lee's Owls",
                f"Homeroom 3-{i}",
                "OWLS2026",
                True,
            )
    # An unedited class still follows the SIS.
    c2 = ops.find_class(engine, DISTRICT, "C2")
    assert _scalar(engine, sa.select(Class.name).where(Class.id == c2)) == "Art, Section A"

    c3 = ops.find_class(engine, DISTRICT, "C3")
    with pytest.raises(ops.OperationRefused, match="already used"):
        ops.edit_class(engine, c3, by_account_id=t2, join_code="OWLS2026")


def test_manual_participants_survive_removal_of_all_sis_members(
    tmp_path: Path, settings: Settings
) -> None:
    engine = make_engine(settings.database_url)
    sync_folder(initial_drop(tmp_path / "d0"), district=DISTRICT, settings=settings, drop="d0")
    c2 = ops.find_class(engine, DISTRICT, "C2")
    t2, st4 = _account(engine, "teacher:T2"), _account(engine, "student:ST4")
    ops.add_participant(engine, c2, st4, role="student", by_account_id=t2)

    # C2 keeps its teacher, but every enrolled student and parent leaves it.
    out = sync_folder(
        _drop(tmp_path / "d1", enrollments=[r for r in ENROLLMENTS if r[1] != "C2"]),
        district=DISTRICT,
        settings=settings,
        drop="d1",
    )
    assert out.status == "applied"
    with engine.connect() as conn:
        members = conn.execute(
            sa.select(
                ClassMembership.account_id, ClassMembership.role, ClassMembership.source
            ).where(ClassMembership.class_id == c2, ClassMembership.active)
        ).all()
    assert sorted(members) == sorted([(t2, "teacher", "sis"), (st4, "student", "manual")])


def test_held_drop_applies_removals_only_after_confirm(tmp_path: Path, settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    main(
        [
            "admin",
            "set-threshold",
            DISTRICT,
            "--type",
            "people",
            "--percent",
            "10",
            "--count",
            "2",
            "--state-dir",
            str(settings.state_dir),
            "--db",
            settings.database_url,
        ]
    )
    sync_folder(initial_drop(tmp_path / "d0"), district=DISTRICT, settings=settings, drop="d0")
    gone = ("ST1", "ST2", "ST3")
    students = [r for r in STUDENTS if r[1] not in gone]
    enrollments = [r for r in ENROLLMENTS if r[2] not in gone]
    truncated = _drop(tmp_path / "d1", students=students, enrollments=enrollments)

    manifest = archive_drop(
        truncated,
        settings.landing_root,
        district=DISTRICT,
        drop="d1",
        format="remind-csv-1.0",
        file_names=REQUIRED_FILES["remind-csv-1.0"],
    )
    run = run_drop(manifest, settings)
    held = run.outcome
    assert held.status == "held"
    # The UI shows it: the applied_in_full check fails (WARN) on a held drop.
    [evaluation] = [
        e for e in run.result.get_asset_check_evaluations() if e.check_name == "applied_in_full"
    ]
    assert not evaluation.passed
    assert held.changes["accounts_removed"] == 0
    # ST1-ST3 and their parents Dana, Gus and Hana.
    assert held.planned["accounts_removed"] == 6
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(SisLink.active)).scalar() == 9
        labels = set(
            conn.execute(
                sa.select(HeldChange.label).where(HeldChange.table_name == "sis_links")
            ).scalars()
        )
    assert labels == {
        "student:ST1",
        "student:ST2",
        "student:ST3",
        "parent:email:dana.diaz@gmail.com",
        "parent:phone:+16173332211",
        "parent:email:hana.park@yahoo.com",
    }
    held_csv = settings.reports_root / DISTRICT / "d1" / "held_changes.csv"
    assert "student:ST2" in held_csv.read_text()

    # Confirmed through the Dagster job, as from the UI's Launchpad.
    from roster_pipelines.definitions import defs

    result = defs.resolve_job_def("hold_decision_job").execute_in_process(
        run_config={
            "ops": {
                "decide_held_drop": {
                    "config": {
                        "district": DISTRICT,
                        "drop": "d1",
                        "decision": "confirm",
                        "decided_by": "pat@district",
                    }
                }
            }
        },
        resources={
            "roster_store": RosterStore(
                state_dir=str(settings.state_dir), database_url=settings.database_url
            )
        },
    )
    assert result.success
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(SisLink.active)).scalar() == 3
        hold = conn.execute(sa.select(Hold.status, Hold.decided_by)).one()
        assert tuple(hold) == ("confirmed", "pat@district")
        assert (
            conn.execute(sa.select(SyncRun.status).where(SyncRun.drop_id == "d1")).scalar()
            == "applied"
        )
    with pytest.raises(HoldError, match="already confirmed"):
        decide_hold(engine, DISTRICT, "d1", "discard", actor="pat")


def test_discarded_hold_never_applies_and_a_newer_drop_supersedes(
    tmp_path: Path, settings: Settings
) -> None:
    engine = make_engine(settings.database_url)
    common = ["--state-dir", str(settings.state_dir), "--db", settings.database_url]
    # The default 20 % is kept; the absolute floor is lowered for a three-class district.
    assert (
        main(
            [
                "admin",
                "set-threshold",
                DISTRICT,
                "--type",
                "classes",
                "--percent",
                "20",
                "--count",
                "1",
                *common,
            ]
        )
        == 0
    )
    sync_folder(initial_drop(tmp_path / "d0"), district=DISTRICT, settings=settings, drop="d0")
    # A term rollover: every class id is new, so 100 % of classes would go: held.
    rollover = [
        ["S1", "N1", "T1", "Homeroom"],
        ["S1", "N2", "T2", "Art"],
        ["S2", "N3", "T2", "Club"],
    ]
    new_enrollments = [[s, {"C1": "N1", "C2": "N2", "C3": "N3"}[c], u] for s, c, u in ENROLLMENTS]
    folder = _drop(tmp_path / "d1", classes=rollover, enrollments=new_enrollments)
    held = sync_folder(folder, district=DISTRICT, settings=settings, drop="d1")
    assert held.status == "held" and any("classes" in r for r in held.hold_reasons)
    assert held.changes["classes_created"] == 3 and held.changes["classes_removed"] == 0

    decide_hold(engine, DISTRICT, "d1", "discard", actor="pat")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(Class.active)).scalar() == 6
        assert conn.execute(sa.select(Hold.status)).scalar() == "discarded"

    # With thresholds raised for the rollover, the same drop applies.
    for kind in ("classes", "enrollments"):
        assert (
            main(
                [
                    "admin",
                    "set-threshold",
                    DISTRICT,
                    "--type",
                    kind,
                    "--percent",
                    "100",
                    "--count",
                    "0",
                    "--state-dir",
                    str(settings.state_dir),
                    "--db",
                    settings.database_url,
                ]
            )
            == 0
        )
    applied = sync_folder(folder, district=DISTRICT, settings=settings, drop="d1-again")
    assert applied.status == "applied"
    assert applied.changes["classes_removed"] == 3
    with engine.connect() as conn:
        assert conn.execute(sa.select(Class.sis_class_id).where(Class.active)).scalars().all() == [
            "N1",
            "N2",
            "N3",
        ]


def test_returning_student_reactivates_same_records(tmp_path: Path, settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    sync_folder(initial_drop(tmp_path / "d0"), district=DISTRICT, settings=settings, drop="d0")
    with engine.connect() as conn:
        before = conn.execute(
            sa.select(SisLink.id, SisLink.account_id).where(SisLink.person_key == "student:ST4")
        ).one()
    sync_folder(
        _drop(tmp_path / "d1", students=STUDENTS[:-1], enrollments=ENROLLMENTS[:-1]),
        district=DISTRICT,
        settings=settings,
        drop="d1",
    )
    assert not _scalar(engine, sa.select(SisLink.active).where(SisLink.id == before.id))
    back = sync_folder(
        initial_drop(tmp_path / "d2"), district=DISTRICT, settings=settings, drop="d2"
    )
    assert back.changes["accounts_created"] == 0
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(SisLink.id, SisLink.account_id, SisLink.active, SisLink.removed_at).where(
                SisLink.person_key == "student:ST4"
            )
        ).one()
        assert (row.id, row.account_id, row.active, row.removed_at) == (
            before.id,
            before.account_id,
            True,
            None,
        )
        memberships = conn.execute(
            sa.select(sa.func.count()).where(ClassMembership.account_id == before.account_id)
        ).scalar()
        assert memberships == 1  # the same membership row, reactivated


def test_manual_school_membership_keeps_a_person_who_left_the_sis(
    tmp_path: Path, settings: Settings
) -> None:
    engine = make_engine(settings.database_url)
    sync_folder(initial_drop(tmp_path / "d0"), district=DISTRICT, settings=settings, drop="d0")
    st4 = _account(engine, "student:ST4")
    with engine.begin() as conn:
        school = conn.execute(
            sa.select(OrgMembership.org_id).where(OrgMembership.account_id == st4)
        ).scalar()
        conn.execute(
            sa.insert(OrgMembership).values(
                org_id=school, account_id=st4, role="student", source="manual"
            )
        )
    sync_folder(
        _drop(tmp_path / "d1", students=STUDENTS[:-1], enrollments=ENROLLMENTS[:-1]),
        district=DISTRICT,
        settings=settings,
        drop="d1",
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(OrgMembership.source, OrgMembership.active).where(
                OrgMembership.account_id == st4
            )
        ).all()
    assert sorted(rows) == [("manual", True), ("sis", False)]


def test_rostering_enforcement(tmp_path: Path, settings: Settings, capsys) -> None:
    engine = make_engine(settings.database_url)
    sync_folder(initial_drop(tmp_path / "d0"), district=DISTRICT, settings=settings, drop="d0")
    st4 = _account(engine, "student:ST4")
    common = ["--state-dir", str(settings.state_dir), "--db", settings.database_url]
    assert main(["admin", "set-enforcement", DISTRICT, "on", *common]) == 0
    assert main(["app", "leave-organisation", DISTRICT, str(st4), *common]) == 2
    assert "SIS" in capsys.readouterr().err
    assert (
        _scalar(
            engine,
            sa.select(sa.func.count()).where(OrgMembership.account_id == st4, OrgMembership.active),
        )
        == 1
    )

    # An administrator can still remove them.
    assert main(["admin", "remove-person", DISTRICT, str(st4), "--by", "pat", *common]) == 0
    assert (
        _scalar(
            engine,
            sa.select(sa.func.count()).where(OrgMembership.account_id == st4, OrgMembership.active),
        )
        == 0
    )

    # Without enforcement, a person can leave.
    t1 = _account(engine, "teacher:T1")
    assert main(["admin", "set-enforcement", DISTRICT, "off", *common]) == 0
    assert main(["app", "leave-organisation", DISTRICT, str(t1), *common]) == 0
    assert (
        _scalar(
            engine,
            sa.select(sa.func.count()).where(OrgMembership.account_id == t1, OrgMembership.active),
        )
        == 0
    )


def test_stale_plan_and_out_of_order_drops_are_refused(tmp_path: Path, settings: Settings) -> None:
    from roster_pipelines.lib.contracts import validate
    from roster_pipelines.lib.formats import REQUIRED_FILES, get_adapter
    from roster_pipelines.lib.store.state import utcnow

    engine = make_engine(settings.database_url)
    older = archive_drop(
        initial_drop(tmp_path / "older"),
        settings.landing_root,
        district=DISTRICT,
        drop="older",
        format="remind-csv-1.0",
        file_names=REQUIRED_FILES["remind-csv-1.0"],
    )
    newer_dir = _drop(tmp_path / "newer", students=STUDENTS[:-1], enrollments=ENROLLMENTS[:-1])
    assert (
        sync_folder(newer_dir, district=DISTRICT, settings=settings, drop="newer").status
        == "applied"
    )

    # A plan made before another drop applied is refused at apply time.
    roster = validate(get_adapter("remind-csv-1.0")(older.folder(settings.landing_root)))
    identity = resolve_drop(engine, DISTRICT, roster)
    plan = plan_drop(engine, identity, roster)
    assert (
        sync_folder(
            initial_drop(tmp_path / "third"),
            district=DISTRICT,
            settings=settings,
            drop="third",
            force=True,
        ).status
        == "applied"
    )
    before = _snapshot(engine)
    with pytest.raises(StalePlan):
        apply_drop(engine, older, roster, plan, started_at=utcnow())
    assert _snapshot(engine) == before

    # The older drop (received before "newer" and "third") is rejected unless forced.
    code = main(
        [
            "sync",
            str(older.folder(settings.landing_root)),
            "--district",
            DISTRICT,
            "--drop",
            "older",
            "--json",
            "--state-dir",
            str(settings.state_dir),
            "--db",
            settings.database_url,
        ]
    )
    assert code == 2
    assert _snapshot(engine)["sis_links"] == before["sis_links"]
    forced = sync_folder(
        older.folder(settings.landing_root),
        district=DISTRICT,
        settings=settings,
        drop="older",
        force=True,
    )
    assert forced.status == "applied"


CRASH_SCRIPT = """
import os, signal, sys
from roster_pipelines.lib.store import writer
real = writer._apply_links
def crash_on_class_memberships(conn, model, *args, **kwargs):
    real(conn, model, *args, **kwargs)
    if model.__tablename__ == "class_memberships":
        os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction: accounts and classes written
writer._apply_links = crash_on_class_memberships
from roster_pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.postgres
def test_killed_apply_leaves_the_database_unchanged(tmp_path: Path, pg_url: str) -> None:
    settings = Settings.from_env(state_dir=str(tmp_path / "state"), database_url=pg_url)
    engine = make_engine(pg_url)
    sync_folder(initial_drop(tmp_path / "d0"), district=DISTRICT, settings=settings, drop="d0")
    maintenance = _drop(
        tmp_path / "d1",
        classes=[*CLASSES, ["S1", "C4", "T1", "Science"]],
        enrollments=[*ENROLLMENTS, ["S1", "C4", "ST1"]],
        students=[
            *STUDENTS,
            ["S1", "ST5", "Jo", "Moss", "2016-01-01", "3", "", "", "", "", "", ""],
        ],
    )
    before = _snapshot(engine)
    args = [
        "sync",
        str(maintenance),
        "--district",
        DISTRICT,
        "--drop",
        "d1",
        "--state-dir",
        str(settings.state_dir),
        "--db",
        pg_url,
    ]
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _snapshot(engine) == before  # nothing of the drop, not even its run row

    # Running the drop again applies it fully.
    env = {**os.environ}
    rerun = subprocess.run(
        [sys.executable, "-m", "roster_pipelines.cli", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    out = json.loads(rerun.stdout)
    assert out["changes"]["classes_created"] == 1 and out["changes"]["accounts_created"] == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(SisLink.active)).scalar() == 10


def test_dry_run_writes_plan_and_changes_nothing(tmp_path: Path, settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    sync_folder(initial_drop(tmp_path / "d0"), district=DISTRICT, settings=settings, drop="d0")
    before = _snapshot(engine)
    classes = [["S1", "C1", "T1", "Homeroom 3A"], *CLASSES[1:]]
    out = sync_folder(
        _drop(
            tmp_path / "d1", classes=classes, students=STUDENTS[:-1], enrollments=ENROLLMENTS[:-1]
        ),
        district=DISTRICT,
        settings=settings,
        drop="d1",
        dry_run=True,
    )
    assert out.status == "dry_run"
    assert out.planned["classes_updated"] == 1 and out.planned["accounts_removed"] == 1
    after = _snapshot(engine)
    assert {k: v for k, v in after.items() if k != "sync_runs"} == {
        k: v for k, v in before.items() if k != "sync_runs"
    }
    plan_csv = (settings.reports_root / DISTRICT / "d1" / "plan.csv").read_text()
    assert "classes,update" in plan_csv and "Grade 3 Homeroom,Homeroom 3A" in plan_csv
    assert "student:ST4" in plan_csv


def test_materialize_is_the_same_path(tmp_path: Path, settings: Settings) -> None:
    """The assets run with materialize() directly (as the UI would) apply the drop."""
    manifest = archive_drop(
        initial_drop(tmp_path / "d0"),
        settings.landing_root,
        district=DISTRICT,
        drop="d0",
        format="remind-csv-1.0",
        file_names=[
            "schools.csv",
            "teachers.csv",
            "students.csv",
            "classes.csv",
            "enrollments.csv",
        ],
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("drops", [manifest.partition_key])
        result = dg.materialize(
            SYNC_ASSETS,
            partition_key=manifest.partition_key,
            instance=instance,
            resources={
                "roster_store": RosterStore(
                    state_dir=str(settings.state_dir), database_url=settings.database_url
                ),
                "io_manager": DropStorageIOManager(state_dir=str(settings.state_dir)),
            },
        )
        assert result.success
    assert result.output_for_node("applied_sync").status == "applied"
