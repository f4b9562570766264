"""The dispatcher: sends outbox rows, each at most once.

The protocol, per row:

1. **Claim** it in its own committed transaction: ``pending -> sending`` with
   ``claimed_at`` (the lease) and ``attempts + 1``. Only one dispatcher wins a row
   (the update is conditional on ``status = 'pending'``).
2. **Send** it with the row's idempotency key. 429 and 5xx answers (and a refused
   connection) are retried in place with exponential backoff; when they persist the
   row goes back to ``pending`` with ``next_attempt_at`` later, and to ``failed`` after
   `max_attempts`. A refusal (other 4xx) is ``failed`` at once.
3. **Record** the result: ``sent`` with ``sent_at``.

If the dispatcher dies between 2 and 3, the row stays ``sending``. The provider may
have delivered it (SendGrid cannot be asked by key), so such a row is never sent
again automatically: once its lease has expired, the next dispatcher marks it
``unknown`` for a person to check (``last_error`` says why). A timeout or a connection
lost after the request went out is treated the same way. So a message can be lost and
flagged, never sent twice.

Admin report emails are checked at send time: the destination must still be the
district's administrator address, so a report never goes to a former admin or to
another district's admin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, or_, select, update

from roster_pipelines.lib.notify.messages import render
from roster_pipelines.lib.notify.outbox import EMAIL, SMS, admin_contact
from roster_pipelines.lib.notify.senders import (
    AmbiguousSendError,
    EmailMessage,
    EmailSender,
    PermanentSendError,
    SmsMessage,
    SmsSender,
    TransientSendError,
)
from roster_pipelines.lib.store.models import NotificationOutbox as Outbox
from roster_pipelines.lib.store.state import utcnow

log = logging.getLogger(__name__)

PENDING, SENDING, SENT, FAILED, UNKNOWN = "pending", "sending", "sent", "failed", "unknown"
ADMIN_TEMPLATES = ("sync_report", "freshness_warning")


@dataclass
class DispatchPolicy:
    lease: timedelta = timedelta(minutes=10)  # longer than one row's sends and retries
    inline_retries: int = 3  # further tries within one claim, after a 429/5xx
    backoff_seconds: float = 1.0  # 1, 2, 4 ... between inline tries
    max_attempts: int = 8  # claims before a row is failed for good
    retry_later: timedelta = timedelta(minutes=5)  # x attempts, when inline tries ran out
    batch: int = 200


@dataclass
class DispatchResult:
    sent: int = 0
    failed: int = 0
    retry_later: int = 0
    unknown: int = 0
    not_configured: list[str] = field(default_factory=list)  # channels with rows waiting

    def to_json(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "retry_later": self.retry_later,
            "unknown": self.unknown,
            "not_configured": self.not_configured,
        }


@dataclass
class Senders:
    email: EmailSender | None = None
    sms: SmsSender | None = None

    def channels(self) -> list[str]:
        return [c for c, s in ((EMAIL, self.email), (SMS, self.sms)) if s is not None]


def _aware(value: datetime | None, now: datetime) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=now.tzinfo)
    return value


def expire_stale_leases(engine: Engine, *, now: datetime, lease: timedelta) -> int:
    """Rows left `sending` past their lease: the dispatcher stopped mid-send. They may
    have gone out, so they become `unknown` and are never retried automatically."""
    with engine.begin() as conn:
        result = conn.execute(
            update(Outbox)
            .where(Outbox.status == SENDING, Outbox.claimed_at < now - lease)
            .values(
                status=UNKNOWN,
                last_error=(
                    "the dispatcher stopped after claiming this message and before recording "
                    "the result; it may have been delivered, so it is not resent automatically"
                ),
            )
        )
        return int(result.rowcount or 0)


def _claim(engine: Engine, row_id: int, now: datetime) -> bool:
    with engine.begin() as conn:
        result = conn.execute(
            update(Outbox)
            .where(Outbox.id == row_id, Outbox.status == PENDING)
            .values(status=SENDING, claimed_at=now, attempts=Outbox.attempts + 1)
        )
        return result.rowcount == 1


def _finish(engine: Engine, row_id: int, **values: object) -> None:
    """Record a claimed row's result (only while it is still ours: `sending`)."""
    with engine.begin() as conn:
        conn.execute(
            update(Outbox).where(Outbox.id == row_id, Outbox.status == SENDING).values(**values)
        )


def _mark_sent(engine: Engine, row_id: int, now: datetime, attempts: int) -> None:
    _finish(engine, row_id, status=SENT, sent_at=now, attempts=attempts, last_error=None)


def _message(row, senders: Senders):
    rendered = render(row.template, row.payload or {})
    if row.channel == EMAIL:
        name = None
        if row.template not in ADMIN_TEMPLATES:
            name = (row.payload or {}).get("first_name")
        return EmailMessage(
            to=row.destination,
            to_name=name,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            idempotency_key=row.idempotency_key,
            categories=(row.template,),
        )
    return SmsMessage(to=row.destination, body=rendered.sms, idempotency_key=row.idempotency_key)


def dispatch_pending(
    engine: Engine,
    senders: Senders,
    *,
    now: datetime | None = None,
    policy: DispatchPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    district_id: int | None = None,
) -> DispatchResult:
    """Send what is due. Safe to run from several processes at once."""
    policy = policy or DispatchPolicy()
    now = now or utcnow()
    result = DispatchResult()
    result.unknown += expire_stale_leases(engine, now=now, lease=policy.lease)
    channels = senders.channels()
    with engine.connect() as conn:
        due = [
            Outbox.status == PENDING,
            or_(Outbox.next_attempt_at.is_(None), Outbox.next_attempt_at <= now),
        ]
        if district_id is not None:
            due.append(Outbox.district_id == district_id)
        for channel in (EMAIL, SMS):
            if channel not in channels:
                waiting = conn.execute(
                    select(Outbox.id).where(and_(*due), Outbox.channel == channel).limit(1)
                ).first()
                if waiting:
                    result.not_configured.append(channel)
        ids = (
            conn.execute(
                select(Outbox.id)
                .where(and_(*due), Outbox.channel.in_(channels))
                .order_by(Outbox.id)
                .limit(policy.batch)
            )
            .scalars()
            .all()
            if channels
            else []
        )
    for row_id in ids:
        if not _claim(engine, row_id, now):
            continue  # another dispatcher took it
        with engine.connect() as conn:
            row = conn.execute(select(Outbox).where(Outbox.id == row_id)).one()
        outcome = _send_claimed(engine, row, senders, now=now, policy=policy, sleep=sleep)
        setattr(result, outcome, getattr(result, outcome) + 1)
    return result


def _send_claimed(engine, row, senders: Senders, *, now, policy, sleep) -> str:
    if row.template in ADMIN_TEMPLATES:
        with engine.connect() as conn:
            admin_email, _ = admin_contact(conn, row.district_id)
        if not admin_email or admin_email != row.destination:
            _finish(
                engine,
                row.id,
                status=FAILED,
                last_error="not sent: the address is no longer this district's administrator",
            )
            return "failed"
    try:
        message = _message(row, senders)
    except Exception as err:  # a template that cannot render is a bug: flag the row
        _finish(engine, row.id, status=FAILED, last_error=f"could not render: {err}")
        return "failed"
    sender = senders.email if row.channel == EMAIL else senders.sms
    attempts = int(row.attempts)  # already counts this claim's first try
    for inline in range(policy.inline_retries + 1):
        try:
            sender.send(message)  # type: ignore[union-attr]
        except TransientSendError as err:
            log.warning("outbox %s: %s (try %s)", row.id, err, attempts)
            if inline < policy.inline_retries:
                sleep(policy.backoff_seconds * (2**inline))
                attempts += 1
                continue
            if attempts >= policy.max_attempts:
                _finish(engine, row.id, status=FAILED, attempts=attempts, last_error=str(err))
                return "failed"
            _finish(
                engine,
                row.id,
                status=PENDING,
                attempts=attempts,
                last_error=str(err),
                next_attempt_at=now + policy.retry_later * attempts,
            )
            return "retry_later"
        except PermanentSendError as err:
            _finish(engine, row.id, status=FAILED, attempts=attempts, last_error=str(err))
            return "failed"
        except AmbiguousSendError as err:
            _finish(
                engine,
                row.id,
                status=UNKNOWN,
                attempts=attempts,
                last_error=f"{err}; it may have been delivered, so it is not resent",
            )
            return "unknown"
        _mark_sent(engine, row.id, now, attempts)
        return "sent"
    raise AssertionError("unreachable")  # pragma: no cover
