"""The dispatcher against a local stand-in of SendGrid's v3 API and the SMS API, with
the real `sendgrid` client: retries, failures, at most once across a crash, escaping,
no secrets in logs, reports only to the district's own administrator."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from roster_pipelines.lib.notify import dispatch as dispatch_module
from roster_pipelines.lib.notify import senders_from_env
from roster_pipelines.lib.notify.dispatch import DispatchPolicy, dispatch_pending
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import (
    DistrictSettings,
    NotificationOutbox,
    Organisation,
)
from roster_pipelines.lib.store.state import get_or_create_district, utcnow
from roster_pipelines_tests.lib.notify_standin import basic_auth

NO_WAIT = DispatchPolicy(backoff_seconds=0.0, inline_retries=2, max_attempts=6)


class SimulatedCrash(BaseException):
    """The process dies: nothing after this line runs (not an Exception, so no handler
    in the dispatcher can catch it)."""


@pytest.fixture
def engine(sqlite_url: str) -> sa.Engine:
    return make_engine(sqlite_url)


@pytest.fixture
def both_engine(db_url: str) -> sa.Engine:
    """The claim/lease/record protocol runs on SQLite and Postgres."""
    return make_engine(db_url)


@pytest.fixture
def district(request: pytest.FixtureRequest) -> int:
    engine = request.getfixturevalue(
        "both_engine" if "both_engine" in request.fixturenames else "engine"
    )
    with engine.begin() as conn:
        district_id = get_or_create_district(conn, "lincoln-usd")
        conn.execute(
            sa.update(DistrictSettings)
            .where(DistrictSettings.district_id == district_id)
            .values(admin_email="admin@lincoln.k12.us", admin_name="Pat")
        )
    return district_id


def _queue(engine: sa.Engine, district_id: int, key: str, **values) -> int:
    row = {
        "district_id": district_id,
        "account_id": None,
        "channel": "email",
        "destination": "ann@lincoln.k12.us",
        "template": "classes_added",
        "payload": {
            "first_name": "Ann",
            "district_name": "lincoln-usd",
            "classes": [{"id": 1, "name": "Grade 3", "school": "Lincoln Elementary"}],
        },
        "idempotency_key": key,
        "status": "pending",
        "attempts": 0,
    } | values
    with engine.begin() as conn:
        return conn.execute(
            sa.insert(NotificationOutbox).values(**row).returning(NotificationOutbox.id)
        ).scalar_one()


def _row(engine: sa.Engine, row_id: int):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(NotificationOutbox).where(NotificationOutbox.id == row_id)
        ).one()


def test_a_500_then_200_sends_once(both_engine, district, notify_env) -> None:
    row_id = _queue(both_engine, district, "k-500")
    notify_env.answer("email", 500)
    result = dispatch_pending(both_engine, senders_from_env(), policy=NO_WAIT)
    assert result.sent == 1
    assert [r.status for r in notify_env.requests] == [500, 202]
    assert {r.idempotency_key for r in notify_env.requests} == {"k-500"}
    assert len(notify_env.emails()) == 1
    row = _row(both_engine, row_id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert row.sent_at is not None and row.last_error is None
    # Sent rows are never picked again.
    assert dispatch_pending(both_engine, senders_from_env(), policy=NO_WAIT).sent == 0
    assert len(notify_env.requests) == 2


def test_rate_limits_back_off_then_fail_and_record(engine, district, notify_env) -> None:
    row_id = _queue(engine, district, "k-429")
    notify_env.answer("email", *[429] * 20)
    now = utcnow()
    sleeps: list[float] = []
    policy = DispatchPolicy(backoff_seconds=0.5, inline_retries=2, max_attempts=6)
    result = dispatch_pending(
        engine, senders_from_env(), now=now, policy=policy, sleep=sleeps.append
    )
    assert result.retry_later == 1 and sleeps == [0.5, 1.0]  # exponential backoff
    row = _row(engine, row_id)
    assert (row.status, row.attempts) == ("pending", 3)
    assert "429" in row.last_error
    # Not due yet: nothing is sent.
    assert (
        dispatch_pending(
            engine, senders_from_env(), now=now, policy=policy, sleep=sleeps.append
        ).retry_later
        == 0
    )
    assert len(notify_env.requests) == 3
    later = now + timedelta(days=1)
    result = dispatch_pending(
        engine, senders_from_env(), now=later, policy=policy, sleep=sleeps.append
    )
    assert result.failed == 1
    row = _row(engine, row_id)
    assert (row.status, row.attempts) == ("failed", 6)
    assert len(notify_env.accepted) == 0


def test_a_refusal_fails_at_once(engine, district, notify_env) -> None:
    row_id = _queue(engine, district, "k-400")
    notify_env.answer("email", 400)
    assert dispatch_pending(engine, senders_from_env(), policy=NO_WAIT).failed == 1
    row = _row(engine, row_id)
    assert row.status == "failed" and "400" in row.last_error
    assert len(notify_env.requests) == 1


def test_a_crash_between_the_call_and_the_record_never_sends_twice(
    both_engine, district, notify_env, monkeypatch
) -> None:
    row_id = _queue(both_engine, district, "k-crash")

    def crash(*args, **kwargs):
        raise SimulatedCrash

    monkeypatch.setattr(dispatch_module, "_mark_sent", crash)
    now = utcnow()
    with pytest.raises(SimulatedCrash):
        dispatch_pending(both_engine, senders_from_env(), now=now, policy=NO_WAIT)
    assert len(notify_env.emails()) == 1  # it went out...
    assert _row(both_engine, row_id).status == "sending"  # ...but was not recorded
    monkeypatch.undo()

    # A restarted dispatcher, within the lease and after it: never a second send.
    dispatch_pending(
        both_engine, senders_from_env(), now=now + timedelta(minutes=1), policy=NO_WAIT
    )
    assert _row(both_engine, row_id).status == "sending"
    result = dispatch_pending(
        both_engine,
        senders_from_env(),
        now=now + NO_WAIT.lease + timedelta(seconds=1),
        policy=NO_WAIT,
    )
    assert result.unknown == 1
    row = _row(both_engine, row_id)
    assert row.status == "unknown" and "not resent" in row.last_error
    assert dispatch_pending(both_engine, senders_from_env(), now=now + timedelta(days=2)).sent == 0
    assert len(notify_env.requests) == 1


def test_two_dispatchers_do_not_both_send(both_engine, district, notify_env) -> None:
    """Claims are conditional updates: a second dispatcher does not get the row."""
    row_id = _queue(both_engine, district, "k-race")
    assert dispatch_module._claim(both_engine, row_id, utcnow())
    assert not dispatch_module._claim(both_engine, row_id, utcnow())


def test_a_timeout_is_unknown_not_retried(engine, district, notify_env, monkeypatch) -> None:
    row_id = _queue(engine, district, "k-slow")
    notify_env.delay = 1.5
    sender = senders_from_env()
    sender.email._client.client.timeout = 0.3
    result = dispatch_pending(engine, sender, policy=NO_WAIT)
    assert result.unknown == 1
    assert _row(engine, row_id).status == "unknown"
    assert len(notify_env.requests) == 1


def test_unreachable_provider_is_retried_later(engine, district, monkeypatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.x")
    monkeypatch.setenv("SENDGRID_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ROSTER_EMAIL_FROM", "sync@roster.example")
    row_id = _queue(engine, district, "k-down")
    assert dispatch_pending(engine, senders_from_env(), policy=NO_WAIT).retry_later == 1
    assert _row(engine, row_id).status == "pending"


def test_sms_carries_key_auth_and_plain_text(engine, district, notify_env) -> None:
    _queue(
        engine,
        district,
        "k-sms",
        channel="sms",
        destination="+16173332211",
        template="class_ready",
        payload={
            "first_name": "Gus",
            "role": "parent",
            "class_id": 4,
            "class_name": "Science & <Art>",
            "school": "Lincoln Elementary",
            "teacher": "Ann Lee",
            "district_name": "lincoln-usd",
        },
    )
    assert dispatch_pending(engine, senders_from_env(), policy=NO_WAIT).sent == 1
    (text,) = notify_env.texts()
    assert text.idempotency_key == "k-sms"
    assert basic_auth(text) == ("AC123", "sms-secret-token-do-not-log")
    assert text.body["To"] == "+16173332211" and text.body["From"] == "+15005550006"
    assert "Science & <Art>" in text.body["Body"]  # a text message is not HTML
    assert "Your child's class" in text.body["Body"]


def test_names_are_escaped_in_email_html(engine, district, notify_env) -> None:
    _queue(
        engine,
        district,
        "k-xss",
        payload={
            "first_name": "<script>alert(1)</script>",
            "district_name": "lincoln-usd",
            "classes": [{"id": 1, "name": "<img src=x onerror=alert(2)>", "school": "S&P"}],
        },
    )
    assert dispatch_pending(engine, senders_from_env(), policy=NO_WAIT).sent == 1
    (mail,) = notify_env.emails()
    html = mail.content("text/html")
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html and "S&amp;P" in html
    assert "<script>alert(1)</script>" in mail.content("text/plain")
    assert mail.body["custom_args"] == {"idempotency_key": "k-xss"}
    assert mail.body["headers"]["X-Idempotency-Key"] == "k-xss"


def test_no_secret_in_logs_or_errors(engine, district, notify_env, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    _queue(engine, district, "k-log-1")
    _queue(engine, district, "k-log-2", channel="sms", destination="+16173332211")
    notify_env.answer("email", 500, 500, 500)
    notify_env.answer("sms", 401)
    dispatch_pending(engine, senders_from_env(), policy=NO_WAIT)
    with engine.connect() as conn:
        errors = " ".join(
            e or "" for e in conn.execute(sa.select(NotificationOutbox.last_error)).scalars()
        )
    assert "401" in errors and "500" in errors
    for secret in ("SG.test-secret-key-do-not-log", "sms-secret-token-do-not-log"):
        assert secret not in caplog.text
        assert secret not in errors
        assert secret not in repr(senders_from_env().email) + repr(senders_from_env().sms)


def test_reports_go_only_to_the_districts_own_admin(engine, district, notify_env) -> None:
    with engine.begin() as conn:
        other = get_or_create_district(conn, "other-usd")
        conn.execute(
            sa.update(DistrictSettings)
            .where(DistrictSettings.district_id == other)
            .values(admin_email="admin@other.k12.us")
        )
    payload = {
        "district": "lincoln-usd",
        "district_name": "lincoln-usd",
        "drop": "d1",
        "status": "applied",
        "status_label": "applied",
        "is_initial": True,
        "changes": {},
        "hold_reasons": [],
        "issue_totals": {},
        "schools": [],
        "issue_codes": [],
        "admin_name": None,
        "report_location": "",
    }
    good = _queue(
        engine,
        district,
        "k-report-ok",
        template="sync_report",
        destination="admin@lincoln.k12.us",
        payload=payload,
    )
    # A row addressed to another district's admin (or a former admin) is refused.
    wrong = _queue(
        engine,
        district,
        "k-report-wrong",
        template="sync_report",
        destination="admin@other.k12.us",
        payload=payload,
    )
    dispatch_pending(engine, senders_from_env(), policy=NO_WAIT)
    assert [m.to for m in notify_env.emails()] == ["admin@lincoln.k12.us"]
    assert _row(engine, good).status == "sent"
    assert _row(engine, wrong).status == "failed"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Organisation)).scalar() == 2


def test_unconfigured_channels_wait(engine, district, monkeypatch) -> None:
    for var in ("SENDGRID_API_KEY", "ROSTER_SMS_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    row_id = _queue(engine, district, "k-wait")
    result = dispatch_pending(engine, senders_from_env(), policy=NO_WAIT)
    assert result.not_configured == ["email"] and result.sent == 0
    assert _row(engine, row_id).status == "pending"


def test_a_killed_dispatcher_process_never_sends_twice(engine, district, notify_env) -> None:
    """The same, with a real process that dies (os._exit) right after the provider's
    answer, before it can record anything."""
    import os
    import subprocess
    import sys

    row_id = _queue(engine, district, "k-killed")
    code = (
        "import os, sys\n"
        "from roster_pipelines.lib.notify import dispatch, senders_from_env\n"
        "from roster_pipelines.lib.store.engine import make_engine\n"
        "dispatch._mark_sent = lambda *a, **k: os._exit(9)\n"
        "dispatch.dispatch_pending(make_engine(sys.argv[1]), senders_from_env())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(engine.url)], env=dict(os.environ), timeout=120
    )
    assert proc.returncode == 9
    assert len(notify_env.emails()) == 1 and _row(engine, row_id).status == "sending"
    later = utcnow() + NO_WAIT.lease + timedelta(minutes=1)
    assert dispatch_pending(engine, senders_from_env(), now=later, policy=NO_WAIT).unknown == 1
    assert _row(engine, row_id).status == "unknown"
    assert len(notify_env.requests) == 1


def test_freshness_warning_from_the_daily_check_reaches_the_admin(
    engine, district, notify_env
) -> None:
    """lib/freshness.py queues these rows (its payload); the dispatcher renders and sends."""
    _queue(
        engine,
        district,
        "freshness:lincoln-usd:2026-08-01:75",
        destination="admin@lincoln.k12.us",
        template="freshness_warning",
        payload={
            "district": "lincoln-usd",
            "days_since_last_drop": 75,
            "last_drop_date": "2026-08-01",
            "threshold_days": 75,
            "limit_days": 90,
            "removals_held_from": "2026-10-30T00:00:00+00:00",
        },
    )
    assert dispatch_pending(engine, senders_from_env(), policy=NO_WAIT).sent == 1
    (mail,) = notify_env.emails()
    assert mail.to == "admin@lincoln.k12.us"
    assert "75 days" in mail.body["subject"] and "2026-10-30" in mail.content("text/plain")
