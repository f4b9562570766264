"""The sample district in data/ on both databases: the database ends up holding exactly
the validated snapshot, a repeated drop changes nothing, and a truncated export holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from roster_pipelines.cli import main, sync_folder
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.contracts import validate
from roster_pipelines.lib.formats.remind_csv import parse
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import Class, ClassMembership, Hold, SisLink

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_district"
DISTRICT = "sample-district"


def _expected_class_members(folder: Path) -> set[tuple[str, str, str]]:
    """(class_id, person_key, role) the validated drop asks for, parents included (R7)."""
    roster = validate(parse(folder))
    owners = roster.classes.select(
        "class_id", person_key="owner_person_key", role=pl.lit("teacher")
    )
    students = roster.enrollments.filter(pl.col("role") == "student")
    parents = roster.guardianships.join(
        students.select("class_id", student_person_key="person_key"), on="student_person_key"
    ).select("class_id", person_key="parent_person_key", role=pl.lit("parent"))
    frame = pl.concat(
        [roster.enrollments.select("class_id", "person_key", "role"), owners, parents]
    )
    return set(frame.unique().iter_rows())


def _db_class_members(conn: sa.Connection) -> set[tuple[str, str, str]]:
    rows = conn.execute(
        sa.select(Class.sis_class_id, SisLink.person_key, ClassMembership.role)
        .join(Class, Class.id == ClassMembership.class_id)
        .join(
            SisLink,
            (SisLink.account_id == ClassMembership.account_id)
            & (SisLink.role == ClassMembership.role),
        )
        .where(ClassMembership.active, SisLink.active)
    ).all()
    return {tuple(r) for r in rows}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings.from_env(state_dir=str(tmp_path / "state"), database_url=db_url)


def test_sample_district_database_matches_each_snapshot(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    for name in ("initial", "maintenance"):
        outcome = sync_folder(SAMPLE / name, district=DISTRICT, settings=settings, drop=name)
        assert outcome.status == "applied"
        with engine.connect() as conn:
            active_people = conn.execute(
                sa.select(sa.func.count()).where(SisLink.active)
            ).scalar_one()
            counts = outcome.counts
            assert active_people == counts["teachers"] + counts["students"] + counts["parents"]
            assert (
                conn.execute(sa.select(sa.func.count()).where(Class.active)).scalar_one()
                == counts["classes"]
            )
            assert _db_class_members(conn) == _expected_class_members(SAMPLE / name)

    again = sync_folder(
        SAMPLE / "maintenance", district=DISTRICT, settings=settings, drop="maintenance-again"
    )
    assert again.status == "applied"
    assert set(again.changes.values()) == {0}


def test_truncated_students_file_is_held_not_applied(
    tmp_path: Path, settings: Settings, capsys
) -> None:
    common = ["--state-dir", str(settings.state_dir), "--db", settings.database_url, "--json"]
    assert main(["sync", str(SAMPLE / "initial"), "--district", DISTRICT, *common]) == 0
    capsys.readouterr()

    truncated = tmp_path / "truncated"
    shutil.copytree(SAMPLE / "initial", truncated)
    lines = (truncated / "students.csv").read_text().splitlines(keepends=True)
    (truncated / "students.csv").write_text("".join(lines[: 1 + len(lines) // 10]))

    code = main(["sync", str(truncated), "--district", DISTRICT, *common])
    out = json.loads(capsys.readouterr().out)
    assert code == 3
    assert out["status"] == "held"
    assert out["changes"]["accounts_removed"] == 0
    assert out["planned"]["accounts_removed"] > 100
    assert any(r.startswith("would remove") and " people " in r for r in out["hold_reasons"])
    with make_engine(settings.database_url).connect() as conn:
        inactive = conn.execute(
            sa.select(sa.func.count()).where(SisLink.active.is_(False))
        ).scalar_one()
        assert inactive == 0  # nobody was removed
        hold = conn.execute(sa.select(Hold.status, Hold.held_changes)).one()
        assert hold.status == "pending"
        assert hold.held_changes["accounts_removed"] == out["planned"]["accounts_removed"]


def test_admin_settings_and_raised_thresholds(tmp_path: Path, settings: Settings, capsys) -> None:
    common = ["--state-dir", str(settings.state_dir), "--db", settings.database_url]
    assert main(["admin", "set-contact", DISTRICT, "--email", "not-an-email", *common]) == 2
    assert "not a valid email" in capsys.readouterr().err
    assert (
        main(
            [
                "admin",
                "set-contact",
                DISTRICT,
                "--email",
                " Pat@Sample.K12.us ",
                "--name",
                "Pat",
                *common,
            ]
        )
        == 0
    )
    for kind in ("people", "classes", "enrollments"):
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
                    *common,
                ]
            )
            == 0
        )
    assert main(["admin", "set-enforcement", DISTRICT, "on", *common]) == 0
    capsys.readouterr()
    assert main(["admin", "show", DISTRICT, *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["admin_email"] == "pat@sample.k12.us"
    assert shown["rostering_enforced"] is True
    assert shown["removal_thresholds"]["people"] == {"percent": 100.0, "count": 0}

    # With the thresholds raised, a drop removing 90 % of students applies.
    assert main(["sync", str(SAMPLE / "initial"), "--district", DISTRICT, "--json", *common]) == 0
    capsys.readouterr()
    truncated = tmp_path / "truncated"
    shutil.copytree(SAMPLE / "initial", truncated)
    lines = (truncated / "students.csv").read_text().splitlines(keepends=True)
    (truncated / "students.csv").write_text("".join(lines[: 1 + len(lines) // 10]))
    assert main(["sync", str(truncated), "--district", DISTRICT, "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["changes"]["accounts_removed"] > 100
