"""Dagster glue of the notifications: provider resources, the outbox dispatcher (a job
started by a sensor when messages are due) and the administrators' manual send.

The logic is in `roster_pipelines.lib.notify`; this module only wires it.
"""

# No `from __future__ import annotations` here: Dagster reads the annotations at runtime.

import dagster as dg
from sqlalchemy import func, or_, select

from roster_pipelines.defs.sync.resources import RosterStore
from roster_pipelines.lib.notify import AUDIENCES, Senders, dispatch_pending, enqueue_manual
from roster_pipelines.lib.notify.config import EmailSettings, SmsSettings
from roster_pipelines.lib.notify.dispatch import DispatchPolicy
from roster_pipelines.lib.store.models import NotificationOutbox as Outbox
from roster_pipelines.lib.store.state import find_district, utcnow


class SendGridResource(dg.ConfigurableResource):
    """Email through the official `sendgrid` client.

    Empty values fall back at execution time to `SENDGRID_API_KEY`, `SENDGRID_HOST`
    (default https://api.sendgrid.com), `ROSTER_EMAIL_FROM` and `ROSTER_EMAIL_FROM_NAME`.
    Without an API key and a sender address, email is not sent (rows wait).
    """

    api_key: str = ""
    host: str = ""
    from_email: str = ""
    from_name: str = ""

    def sender(self):
        return EmailSettings(
            api_key=self.api_key,
            host=self.host,
            from_email=self.from_email,
            from_name=self.from_name,
        ).sender()


class SmsResource(dg.ConfigurableResource):
    """Text messages through a Twilio-style Messages API.

    Empty values fall back at execution time to `ROSTER_SMS_BASE_URL`,
    `ROSTER_SMS_ACCOUNT_SID`, `ROSTER_SMS_AUTH_TOKEN` and `ROSTER_SMS_FROM`; without
    all four, texts are not sent (rows wait).
    """

    base_url: str = ""
    account_sid: str = ""
    auth_token: str = ""
    from_number: str = ""

    def sender(self):
        return SmsSettings(
            base_url=self.base_url,
            account_sid=self.account_sid,
            auth_token=self.auth_token,
            from_number=self.from_number,
        ).sender()


def _dispatch(context, roster_store: RosterStore, sendgrid: SendGridResource, sms: SmsResource):
    senders = Senders(email=sendgrid.sender(), sms=sms.sender())
    result = dispatch_pending(roster_store.engine(), senders, policy=DispatchPolicy())
    summary = result.to_json()
    context.log.info(f"notification dispatch: {summary}")
    return summary


@dg.op(description="Send the outbox's due messages, each at most once.")
def dispatch_notifications(
    context: dg.OpExecutionContext,
    roster_store: RosterStore,
    sendgrid: SendGridResource,
    sms: SmsResource,
) -> dict:
    summary = _dispatch(context, roster_store, sendgrid, sms)
    context.add_output_metadata({k: v for k, v in summary.items() if isinstance(v, int)})
    return summary


@dg.job(description="Send the due messages of the notification outbox (email, SMS).")
def notification_dispatch_job():
    dispatch_notifications()


class ManualSendConfig(dg.Config):
    """An administrator's manual notification (R12): who receives the fixed welcome."""

    district: str
    audience: str  # teachers | students | parents


@dg.op(description="Queue the fixed welcome message for a district's audience, then send.")
def send_manual_notifications(
    context: dg.OpExecutionContext,
    config: ManualSendConfig,
    roster_store: RosterStore,
    sendgrid: SendGridResource,
    sms: SmsResource,
) -> dict:
    if config.audience not in AUDIENCES:
        raise dg.Failure(f"audience must be one of {', '.join(AUDIENCES)}")
    engine = roster_store.engine()
    with engine.begin() as conn:
        district_id = find_district(conn, config.district)
        if district_id is None:
            raise dg.Failure(f"district {config.district!r} is not known")
        queued = enqueue_manual(conn, district_id, config.audience)
    summary = {"queued": queued, **_dispatch(context, roster_store, sendgrid, sms)}
    context.add_output_metadata({k: v for k, v in summary.items() if isinstance(v, int)})
    return summary


@dg.job(description="Manual send (R12): welcome a district's teachers, students or parents.")
def manual_notification_job():
    send_manual_notifications()


def outbox_state(engine, now) -> tuple[int, str]:
    """How many rows are due (pending and due, or stuck sending), and a key of that state."""
    with engine.connect() as conn:
        row = conn.execute(
            select(func.count(), func.max(Outbox.id), func.sum(Outbox.attempts)).where(
                or_(
                    (Outbox.status == "pending")
                    & or_(Outbox.next_attempt_at.is_(None), Outbox.next_attempt_at <= now),
                    (Outbox.status == "sending")
                    & (Outbox.claimed_at < now - DispatchPolicy().lease),
                )
            )
        ).one()
    count, max_id, attempts = row
    return int(count or 0), f"outbox:{max_id}:{count}:{attempts or 0}"


@dg.sensor(
    job=notification_dispatch_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def notification_dispatch_sensor(context: dg.SensorEvaluationContext, roster_store: RosterStore):
    """Starts the dispatcher when the outbox holds due messages. The run key is the
    outbox's state, so messages that cannot go out yet (a channel not configured)
    start no further runs until something changes."""
    due, key = outbox_state(roster_store.engine(), utcnow())
    if not due:
        return dg.SkipReason("no message due")
    return dg.RunRequest(run_key=key, tags={"roster/notifications": "dispatch"})


NOTIFICATION_JOBS = [notification_dispatch_job, manual_notification_job]
NOTIFICATION_SENSORS = [notification_dispatch_sensor]
NOTIFICATION_RESOURCES = {"sendgrid": SendGridResource(), "sms": SmsResource()}
