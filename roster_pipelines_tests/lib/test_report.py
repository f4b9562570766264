"""The sync report files: per-code CSVs (formula-neutralised), escaped HTML and
Markdown, per-school figures and status, trend over the last drops."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from roster_pipelines.cli import sync_folder
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.issues import issue_row, issues_frame
from roster_pipelines.lib.report import render_html, render_markdown, sparkline, write_report
from roster_pipelines.lib.report_data import attribute_issues, build_report_data, row_schools
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import Class, MergeCandidate, OrgMembership, SisLink
from roster_pipelines.lib.sync import SyncOutcome, zero_changes
from roster_pipelines_tests.conftest import write_drop
from roster_pipelines_tests.e2e.test_walking_skeleton import (
    CLASSES,
    ENROLLMENTS,
    STUDENTS,
    TEACHERS,
)


def _outcome(issues: pl.DataFrame, **kw) -> SyncOutcome:
    return SyncOutcome(
        district="d<1>",
        drop="drop-1",
        status=kw.pop("status", "applied"),
        counts={
            "schools": 1,
            "teachers": 1,
            "students": 0,
            "parents": 0,
            "classes": 0,
            "enrollments": 0,
        },
        changes=zero_changes(),
        issues=issues,
        **kw,
    )


def test_one_csv_per_code_neutralised_and_escaped_html(tmp_path: Path) -> None:
    issues = issues_frame(
        [
            issue_row(
                "EMAIL_INVALID", file="students.csv", row=3, value="=HYPERLINK(1)", message="a"
            ),
            issue_row("EMAIL_INVALID", file="students.csv", row=4, value="x", message="b"),
            issue_row(
                "UNKNOWN_CLASS",
                file="enrollments.csv",
                row=2,
                ids={"class_id": "<script>alert(1)</script>"},
                message="enrollments.csv row 2: <script>alert(1)</script> | is not in classes.csv",
            ),
        ]
    )
    outcome = _outcome(
        issues,
        hold_reasons=["would remove <b>all</b>"],
        status="held",
        planned={"accounts_removed": 3},
    )
    folder = write_report(outcome, tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "issues.csv",
        "issues_EMAIL_INVALID.csv",
        "issues_UNKNOWN_CLASS.csv",
        "report.html",
        "report.md",
        "summary.json",
    ]
    with (folder / "issues_EMAIL_INVALID.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["value"] for r in rows] == ["'=HYPERLINK(1)", "x"]
    html = (folder / "report.html").read_text()
    assert "<script>" not in html and "<b>all</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;all&lt;/b&gt;" in html
    assert 'href="issues_UNKNOWN_CLASS.csv"' in html
    md = render_markdown(outcome)
    assert "<script>" not in md and "\\|" in md and "issues_EMAIL_INVALID.csv" in md
    assert "## On hold" in md


def test_summary_json_holds_the_outcome_and_every_issue(tmp_path: Path) -> None:
    issues = issues_frame(
        [
            issue_row("EMAIL_INVALID", file="students.csv", row=3, value='a"b\\c', message="é ✓"),
            issue_row("UNKNOWN_CLASS", ids={"class_id": "C1"}, message="no file, no row"),
        ]
    )
    outcome = _outcome(issues, planned={"accounts_removed": 3}, hold_reasons=["why"])
    folder = write_report(outcome, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    expected = json.loads(json.dumps(outcome.to_json(), default=str))
    assert list(summary) == [*expected, "report"]
    assert {k: v for k, v in summary.items() if k != "report"} == expected
    assert [i["value"] for i in summary["issues"]] == ['a"b\\c', None]
    assert summary["report"]["drop"] == "drop-1"
    empty = json.loads(
        write_report(_outcome(issues.clear()), tmp_path / "e").joinpath("summary.json").read_text()
    )
    assert empty["issues"] == []


def test_issues_belong_to_the_school_on_their_row() -> None:
    issues = issues_frame(
        [
            issue_row("EMAIL_INVALID", file="students.csv", row=2, message="a"),
            issue_row(
                "UNKNOWN_CLASS", file="enrollments.csv", row=9, ids={"class_id": "C2"}, message="b"
            ),
            issue_row("SCHOOL_SKIPPED", ids={"school_id": "S9"}, message="c"),
            issue_row("EMAIL_INVALID", message="d"),
        ]
    )
    rows = pl.DataFrame(
        {"file": ["students.csv"], "row": [2], "school_id": ["S1"]},
        schema={"file": pl.String, "row": pl.Int64, "school_id": pl.String},
    )
    got = attribute_issues(issues, rows, {"C2": "S2"})["school_id"].to_list()
    assert got == ["S1", "S2", "S9", None]


def test_the_drop_s_rows_are_read_for_the_issues_that_name_them(tmp_path: Path) -> None:
    """`row_schools` with the issues keeps only the rows they name (a million-row drop
    has a few thousand), and places them as all the rows would."""
    (tmp_path / "students.csv").write_text(
        "school_id,student_id\n S1 ,a\nS2,b\nS3,c\nS4,d\n", encoding="utf-8"
    )
    (tmp_path / "teachers.csv").write_text("school_id,teacher_id\nS5,t\nS6,u\n")
    issues = issues_frame(
        [
            issue_row("EMAIL_INVALID", file="students.csv", row=2, message="a"),
            issue_row("DOB_INVALID", file="students.csv", row=4, message="b"),
            issue_row("TEACHER_EMAIL_INVALID", file="teachers.csv", row=3, message="c"),
            issue_row("EMAIL_INVALID", file="students.csv", row=9, message="d"),  # no row 9
            issue_row("SCHOOL_SKIPPED", ids={"school_id": "S9"}, message="e"),
        ]
    )
    named = row_schools(tmp_path, issues)
    assert sorted(named.iter_rows()) == [
        ("students.csv", 2, "S1"),
        ("students.csv", 4, "S3"),
        ("teachers.csv", 3, "S6"),
    ]
    every = row_schools(tmp_path)
    assert every.height == 6
    expected = ["S1", "S3", "S6", None, "S9"]
    assert attribute_issues(issues, named, {})["school_id"].to_list() == expected
    assert attribute_issues(issues, every, {})["school_id"].to_list() == expected


def test_issue_ids_read_column_wise_like_a_person_reads_them() -> None:
    """An issue's school comes from its first school_id (when not empty), else from the
    school of its first class_id; several ids, repeats and odd text are handled."""
    ids = [
        None,
        "",
        "school_id=S1",
        "person=p1; school_id=S2; school_id=S3",
        "school_id=; class_id=C1",
        "class_id=C1; class_id=C2",
        "class_id=C9",
        "class_id=",
        "person=a=b; class_id=C2",
        "school_idx=S4; school_id=S5",
        "note=school_id=S6",
    ]
    issues = pl.DataFrame(
        {"file": [None] * len(ids), "row": [None] * len(ids), "ids": ids},
        schema={"file": pl.String, "row": pl.Int64, "ids": pl.String},
    )
    rows = pl.DataFrame(schema={"file": pl.String, "row": pl.Int64, "school_id": pl.String})
    got = attribute_issues(issues, rows, {"C1": "K1", "C2": "K2"})["school_id"].to_list()
    assert got == [None, None, "S1", "S2", "K1", "K1", None, None, "K2", "S5", None]


def test_per_school_figures_status_and_trend(tmp_path: Path, db_url: str) -> None:
    settings = Settings.from_env(state_dir=str(tmp_path / "state"), database_url=db_url)
    schools = [["S1", "<script>Lincoln</script>"], ["S2", "Riverside YMCA After-School Program"]]
    rows = {
        "schools.csv": schools,
        "teachers.csv": [*TEACHERS, ["S1", "T9", "No", "Mail", "not-an-email", ""]],
        "students.csv": STUDENTS,
        "classes.csv": CLASSES,
        "enrollments.csv": ENROLLMENTS,
    }
    sync_folder(
        write_drop(tmp_path / "d1", rows), district="lincoln-usd", settings=settings, drop="d1"
    )
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.update(Class).where(Class.sis_class_id == "C1").values(claimed=True))

    # The second drop drops S2: it is not connected any more.
    rows2 = {
        **rows,
        "schools.csv": schools[:1],
        "teachers.csv": [r for r in rows["teachers.csv"] if r[0] == "S1"],
        "students.csv": [r for r in STUDENTS if r[0] == "S1"],
        "classes.csv": [c for c in CLASSES if c[0] == "S1"],
        "enrollments.csv": [e for e in ENROLLMENTS if e[0] == "S1"],
    }
    out = sync_folder(
        write_drop(tmp_path / "d2", rows2), district="lincoln-usd", settings=settings, drop="d2"
    )
    with engine.begin() as conn:
        # A manual membership beside a teacher's SIS one (counted once), and one of a
        # student whose SIS membership is inactive (counted: still a member).
        for sis_id, role, drop_sis in (("T1", "teacher", False), ("ST1", "student", True)):
            account, org = conn.execute(
                sa.select(OrgMembership.account_id, OrgMembership.org_id)
                .join(SisLink, SisLink.account_id == OrgMembership.account_id)
                .where(SisLink.sis_id == sis_id, OrgMembership.role == role)
            ).first()
            conn.execute(
                sa.insert(OrgMembership).values(
                    org_id=org, account_id=account, role=role, source="manual"
                )
            )
            if drop_sis:
                conn.execute(
                    sa.update(OrgMembership)
                    .where(OrgMembership.account_id == account, OrgMembership.source == "sis")
                    .values(active=False)
                )
        # Pairs of earlier drops: one still open for review, one dismissed.
        district = conn.execute(sa.select(SisLink.district_id).limit(1)).scalar_one()
        for pair, status in (("a:1|a:2", "open"), ("a:1|a:3", "dismissed")):
            conn.execute(
                sa.insert(MergeCandidate).values(
                    district_id=district,
                    pair_key=pair,
                    reason="same_name_dob",
                    status=status,
                    last_drop_id="d1",
                )
            )
    data = build_report_data(
        engine,
        district="lincoln-usd",
        drop="d2",
        status=out.status,
        is_initial=False,
        sync_run_id=out.sync_run_id,
        counts=out.counts,
        changes=out.changes,
        planned=out.planned,
        hold_reasons=out.hold_reasons,
        issues=out.issues,
        drop_folder=settings.landing_root / "lincoln-usd" / "d2",
    )
    by_id = {s.school_id: s for s in data.schools}
    s1 = by_id["S1"]
    assert (s1.teachers, s1.students, s1.parents) == (2, 3, 3)
    assert (s1.classes_claimed, s1.classes_unclaimed) == (1, 1)
    assert s1.errors >= 1  # T9's invalid email is on an S1 row
    assert s1.status == ("On hold" if out.status == "held" else "Connected")
    assert by_id["S2"].status == "Not connected"
    assert [h["drop"] for h in data.history] == ["d1", "d2"]
    assert data.open_merge_candidates == 1
    folder = settings.reports_root / "lincoln-usd" / "d2"
    html = (folder / "report.html").read_text()
    assert "&lt;script&gt;Lincoln&lt;/script&gt;" in html and "<script>" not in html
    # The issue files are this drop's.
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["drop"] == summary["report"]["drop"] == "d2"
    assert len(summary["issues"]) == out.issues.height >= 1
    assert (
        pl.read_csv(folder / "issues.csv")["message"].to_list() == out.issues["message"].to_list()
    )
    assert (folder / "issues_TEACHER_EMAIL_INVALID.csv").exists()
    assert '<svg width="180"' in html  # the trend charts
    page = render_html(out, data)
    assert '<p id="open-merge-candidates">1 pair open for review' in page
    assert "1 open for review in the district" in render_markdown(out, data=data)


def test_sparkline() -> None:
    assert sparkline([1, 5, 9]) == "▁▅█"
    assert sparkline([3, 3]) == "▁▁"


def test_contacts_in_use_are_listed_with_the_account_that_owns_them(db_url: str) -> None:
    from roster_pipelines.lib.report_data import _merge_candidates
    from roster_pipelines.lib.store.models import Account, ContactPoint

    engine = make_engine(db_url)
    with engine.begin() as conn:
        owner = conn.execute(
            sa.insert(Account).values(first_name="Ann", last_name="Lee").returning(Account.id)
        ).scalar_one()
        for kind, value in (("email", "ann.lee@example.org"), ("phone", "+16175550100")):
            conn.execute(
                sa.insert(ContactPoint).values(
                    account_id=owner, kind=kind, value=value, verified=False, source="user"
                )
            )
    issues = issues_frame(
        [
            issue_row("CONTACT_IN_USE", file="students.csv", row=r, value=v, message="in use")
            for r, v in ((2, "Ann.Lee@example.org "), (3, "+16175550100"), (4, "nobody@x.org"))
        ]
        + [issue_row("EMAIL_INVALID", file="students.csv", row=5, value="+16175550100", message="")]
    )
    with engine.connect() as conn:
        listed = _merge_candidates(conn, 1, "d1", issues)
    assert [(e["contact"], e["existing_account_id"], e["where"]) for e in listed] == [
        ("Ann.Lee@example.org", owner, "students.csv row 2"),
        ("+16175550100", owner, "students.csv row 3"),
        ("nobody@x.org", None, "students.csv row 4"),
    ]
