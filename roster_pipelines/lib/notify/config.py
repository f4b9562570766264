"""Provider settings from the environment (documented in the README).

Email is configured when ``SENDGRID_API_KEY`` and ``ROSTER_EMAIL_FROM`` are set; SMS
when ``ROSTER_SMS_BASE_URL``, ``ROSTER_SMS_ACCOUNT_SID``, ``ROSTER_SMS_AUTH_TOKEN`` and
``ROSTER_SMS_FROM`` are. A channel that is not configured is not sent: its rows wait
in the outbox. Nothing here ever logs or returns a secret.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from roster_pipelines.lib.notify.dispatch import Senders
from roster_pipelines.lib.notify.senders import (
    DEFAULT_SENDGRID_HOST,
    HttpSmsSender,
    SendGridEmailSender,
)


@dataclass(frozen=True)
class EmailSettings:
    api_key: str = ""
    host: str = ""
    from_email: str = ""
    from_name: str = ""

    def resolved(self) -> EmailSettings:
        env = os.environ.get
        return EmailSettings(
            api_key=self.api_key or env("SENDGRID_API_KEY", ""),
            host=self.host or env("SENDGRID_HOST", "") or DEFAULT_SENDGRID_HOST,
            from_email=self.from_email or env("ROSTER_EMAIL_FROM", ""),
            from_name=self.from_name or env("ROSTER_EMAIL_FROM_NAME", "") or "Roster sync",
        )

    def sender(self) -> SendGridEmailSender | None:
        s = self.resolved()
        if not (s.api_key and s.from_email):
            return None
        return SendGridEmailSender(
            api_key=s.api_key, host=s.host, from_email=s.from_email, from_name=s.from_name
        )


@dataclass(frozen=True)
class SmsSettings:
    base_url: str = ""
    account_sid: str = ""
    auth_token: str = ""
    from_number: str = ""

    def resolved(self) -> SmsSettings:
        env = os.environ.get
        return SmsSettings(
            base_url=self.base_url or env("ROSTER_SMS_BASE_URL", ""),
            account_sid=self.account_sid or env("ROSTER_SMS_ACCOUNT_SID", ""),
            auth_token=self.auth_token or env("ROSTER_SMS_AUTH_TOKEN", ""),
            from_number=self.from_number or env("ROSTER_SMS_FROM", ""),
        )

    def sender(self) -> HttpSmsSender | None:
        s = self.resolved()
        if not (s.base_url and s.account_sid and s.auth_token and s.from_number):
            return None
        return HttpSmsSender(
            base_url=s.base_url,
            account_sid=s.account_sid,
            auth_token=s.auth_token,
            from_number=s.from_number,
        )


def senders_from_env() -> Senders:
    return Senders(email=EmailSettings().sender(), sms=SmsSettings().sender())
