"""Who hears what, end to end on SQLite and Postgres, through a local stand-in of
SendGrid's v3 API and the SMS API (the real `sendgrid` client, pointed at it by host).

The walking-skeleton district (see test_walking_skeleton): T1 Ann (email), T2 Bob
(email and phone), students without contacts, parents Dana (her own verified email),
Gus (phone only) and Hana (email).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from roster_pipelines.cli import main, sync_folder
from roster_pipelines.lib import operations as ops
from roster_pipelines.lib.admin import set_admin_contact
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.notify import dispatch_pending, senders_from_env
from roster_pipelines.lib.notify.dispatch import DispatchPolicy
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import Account, ContactPoint, NotificationOutbox, SisLink
from roster_pipelines_tests.conftest import write_drop
from roster_pipelines_tests.e2e.test_walking_skeleton import (
    CLASSES,
    DISTRICT,
    ENROLLMENTS,
    SCHOOLS,
    STUDENTS,
    TEACHERS,
    initial_drop,
    maintenance_drop,
)

ADMIN = "admin@lincoln.k12.us"
ANN, BOB, DANA, HANA, GUS = (
    "ann.lee@lincoln.k12.us",
    "bob.ray@lincoln.k12.us",
    "dana.diaz@gmail.com",
    "hana.park@yahoo.com",
    "+16173332211",
)
FAST = DispatchPolicy(backoff_seconds=0.0)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings.from_env(state_dir=str(tmp_path / "state"), database_url=db_url)


def _setup(settings: Settings) -> sa.Engine:
    engine = make_engine(settings.database_url)
    set_admin_contact(engine, DISTRICT, name="Pat Admin", email=ADMIN)
    with engine.begin() as conn:
        dana = conn.execute(
            sa.insert(Account).values(first_name="Dana", last_name="Diaz").returning(Account.id)
        ).scalar_one()
        conn.execute(
            sa.insert(ContactPoint).values(
                account_id=dana, kind="email", value=DANA, verified=True, source="user"
            )
        )
    return engine


def _send(engine: sa.Engine, standin) -> list[tuple[str, str]]:
    """Dispatch, and return (recipient, template) of what arrived this time."""
    before = len(standin.accepted)
    result = dispatch_pending(engine, senders_from_env(), policy=FAST)
    assert result.failed == 0 and result.unknown == 0, result
    out = []
    for r in standin.accepted[before:]:
        template = r.body["categories"][0] if r.kind == "email" else "sms"
        out.append((r.to, template))
    return sorted(out)


def _account(engine: sa.Engine, person_key: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(SisLink.account_id).where(SisLink.person_key == person_key)
        ).scalar_one()


def test_initial_maintenance_claim_and_manual_send(
    tmp_path: Path, settings: Settings, notify_env
) -> None:
    engine = _setup(settings)

    # Initial sync (R12): only the administrator hears, with the report (R15).
    first = sync_folder(
        initial_drop(tmp_path / "d1"), district=DISTRICT, settings=settings, drop="initial"
    )
    assert first.status == "applied" and first.is_initial
    assert _send(engine, notify_env) == [(ADMIN, "sync_report")]
    (report,) = notify_env.emails()
    assert "applied" in report.body["subject"]
    assert "Lincoln Elementary" in report.content("text/html")
    assert "Riverside YMCA After-School Program" in report.content("text/plain")

    # Maintenance sync (R13): Ann hears about her new class C4; ST1 and Dana, added to
    # the unclaimed C4, wait for the claim.
    second = sync_folder(
        maintenance_drop(tmp_path / "d2"), district=DISTRICT, settings=settings, drop="maint"
    )
    assert second.status == "applied" and not second.is_initial
    assert _send(engine, notify_env) == [(ADMIN, "sync_report"), (ANN, "classes_added")]
    ann_mail = next(m for m in notify_env.emails() if m.to == ANN)
    assert "Science" in ann_mail.content("text/plain")
    assert "Lincoln Elementary" in ann_mail.content("text/html")

    # The same drop again: nothing new for anyone but the administrator.
    sync_folder(tmp_path / "d2", district=DISTRICT, settings=settings, drop="maint-again")
    assert _send(engine, notify_env) == [(ADMIN, "sync_report")]

    # Ann claims C4 (through the app's claim operation): Dana hears by email; ST1 has
    # no contact point. Claiming again changes nothing.
    t1 = _account(engine, "teacher:T1")
    c4 = ops.find_class(engine, DISTRICT, "C4")
    ops.claim_class(engine, c4, by_account_id=t1)
    assert _send(engine, notify_env) == [(DANA, "class_ready")]
    dana_mail = next(m for m in notify_env.emails() if m.to == DANA)
    assert "Your child's class Science" in dana_mail.content("text/plain")
    assert "Ann Lee" in dana_mail.content("text/plain")
    ops.claim_class(engine, c4, by_account_id=t1)
    assert _send(engine, notify_env) == []

    # Claiming C1: its parents hear, each on the channel they were synced by (R14):
    # Gus by text (his phone), Dana and Hana by email.
    ops.claim_class(engine, ops.find_class(engine, DISTRICT, "C1"), by_account_id=t1)
    assert _send(engine, notify_env) == [(GUS, "sms"), (DANA, "class_ready"), (HANA, "class_ready")]
    (text,) = notify_env.texts()
    assert "Grade 3 Homeroom" in text.body["Body"] and text.body["To"] == GUS

    # Manual send (R12), from the CLI: teachers get the fixed welcome, once.
    common = ["--state-dir", str(settings.state_dir), "--db", settings.database_url]
    before = len(notify_env.accepted)
    assert (
        main(["notify", "manual", "--district", DISTRICT, "--audience", "teachers", *common]) == 0
    )
    sent = sorted((r.to, r.body["categories"][0]) for r in notify_env.accepted[before:])
    assert sent == [(ANN, "welcome"), (BOB, "welcome")]
    assert (
        main(["notify", "manual", "--district", DISTRICT, "--audience", "teachers", *common]) == 0
    )
    assert len(notify_env.accepted) == before + 2

    # A rejected drop: the administrator is told too (R15).
    broken = initial_drop(tmp_path / "d3")
    (broken / "classes.csv").unlink()
    rejected = sync_folder(broken, district=DISTRICT, settings=settings, drop="broken")
    assert rejected.status == "rejected"
    assert _send(engine, notify_env) == [(ADMIN, "sync_report")]
    assert "rejected" in notify_env.emails()[-1].body["subject"]

    # Every request carried its row's idempotency key; every row is sent, once.
    keys = [r.idempotency_key for r in notify_env.requests]
    assert len(keys) == len(set(keys)) and None not in keys
    with engine.connect() as conn:
        statuses = conn.execute(
            sa.select(NotificationOutbox.status, sa.func.count()).group_by(
                NotificationOutbox.status
            )
        ).all()
    assert dict(statuses) == {"sent": len(keys)}


def test_names_arrive_escaped_and_students_follow_claimed_classes(
    tmp_path: Path, sqlite_url: str, notify_env, capsys
) -> None:
    settings = Settings.from_env(state_dir=str(tmp_path / "state"), database_url=sqlite_url)
    engine = _setup(settings)
    sync_folder(initial_drop(tmp_path / "d1"), district=DISTRICT, settings=settings, drop="d1")
    ops.claim_class(
        engine, ops.find_class(engine, DISTRICT, "C2"), by_account_id=_account(engine, "teacher:T2")
    )
    _send(engine, notify_env)
    # A maintenance drop: Ann's new class has a hostile name; Hana's child joins the
    # already-claimed C2, so Hana hears at once (the claim has happened).
    evil = "<script>alert('x')</script>"
    write_drop(
        tmp_path / "d2",
        {
            "schools.csv": SCHOOLS,
            "teachers.csv": TEACHERS,
            "students.csv": STUDENTS,
            "classes.csv": [*CLASSES, ["S1", "C5", "T1", evil]],
            "enrollments.csv": [*ENROLLMENTS, ["S1", "C2", "ST3"]],
        },
    )
    sync_folder(tmp_path / "d2", district=DISTRICT, settings=settings, drop="d2")
    got = _send(engine, notify_env)
    assert (ANN, "classes_added") in got and (HANA, "class_ready") in got and (GUS, "sms") in got
    ann_mail = next(m for m in notify_env.emails() if m.to == ANN)
    html = ann_mail.content("text/html")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    # The admin's copy of the report and the report file escape it too.
    report = Path(settings.reports_root / DISTRICT / "d2" / "report.html").read_text()
    assert "<script>" not in report
    capsys.readouterr()
    assert (
        main(["notify", "send-pending", "--state-dir", str(settings.state_dir), "--db", sqlite_url])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["sent"] == 0
