"""Provider clients: email through the official `sendgrid` client, text messages through a
small client of a Twilio-style REST API. Both take a base URL so tests (and staging)
point them at a local stand-in; nothing here has a default that sends for real unless an
API key is configured.

Every send carries the outbox row's idempotency key (SendGrid: `custom_args` and an
`X-Idempotency-Key` mail header; SMS: the `I-Twilio-Idempotency-Token` request header).

Errors are classified for the dispatcher:
- `TransientSendError`: the provider did not take the message (429, 5xx, connection
  refused); safe to retry with the same key.
- `PermanentSendError`: the provider refused it (other 4xx); never retried.
- `AmbiguousSendError`: the request may have reached the provider (timeout or connection
  lost after sending); never retried automatically, so nothing goes out twice.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Protocol
from urllib.error import URLError

DEFAULT_SENDGRID_HOST = "https://api.sendgrid.com"
IDEMPOTENCY_HEADER = "X-Idempotency-Key"
SMS_IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"

# python_http_client (under the sendgrid client) logs request headers, including the
# API key, at DEBUG. Keep that logger above DEBUG whatever the root level is.
logging.getLogger("python_http_client").setLevel(logging.INFO)
logging.getLogger("python_http_client.client").setLevel(logging.INFO)


class SendError(Exception):
    """Base of the classified provider errors; messages never contain credentials."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientSendError(SendError):
    pass


class PermanentSendError(SendError):
    pass


class AmbiguousSendError(SendError):
    pass


@dataclass(frozen=True)
class EmailMessage:
    to: str
    subject: str
    text: str
    html: str
    idempotency_key: str
    to_name: str | None = None
    categories: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SmsMessage:
    to: str
    body: str
    idempotency_key: str


class EmailSender(Protocol):
    def send(self, message: EmailMessage) -> str | None: ...


class SmsSender(Protocol):
    def send(self, message: SmsMessage) -> str | None: ...


def _classify_status(status: int, what: str) -> SendError:
    if status == 429 or status >= 500:
        return TransientSendError(f"{what} answered HTTP {status}", status=status)
    return PermanentSendError(f"{what} refused the message: HTTP {status}", status=status)


def _refused(reason: object) -> bool:
    return isinstance(reason, ConnectionRefusedError | socket.gaierror)


class SendGridEmailSender:
    """SendGrid v3 mail send through `sendgrid.SendGridAPIClient`."""

    def __init__(
        self,
        *,
        api_key: str,
        from_email: str,
        from_name: str | None = None,
        host: str = DEFAULT_SENDGRID_HOST,
        timeout: float = 15.0,
    ) -> None:
        from sendgrid import SendGridAPIClient

        self._client = SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        self._client.client.timeout = timeout
        self.from_email = from_email
        self.from_name = from_name

    def __repr__(self) -> str:  # never show the key
        return f"SendGridEmailSender(host={self._client.host!r}, from={self.from_email!r})"

    def send(self, message: EmailMessage) -> str | None:
        from python_http_client.exceptions import HTTPError
        from sendgrid.helpers.mail import Category, CustomArg, From, Header, Mail, To

        mail = Mail(
            from_email=From(self.from_email, self.from_name),
            to_emails=To(message.to, message.to_name),
            subject=message.subject,
            plain_text_content=message.text,
            html_content=message.html,
        )
        mail.custom_arg = CustomArg("idempotency_key", message.idempotency_key)
        mail.header = Header(IDEMPOTENCY_HEADER, message.idempotency_key)
        for category in message.categories:
            mail.category = Category(category)
        try:
            response = self._client.send(mail)
        except HTTPError as err:
            raise _classify_status(int(err.status_code), "SendGrid") from None
        except URLError as err:
            if _refused(err.reason):
                raise TransientSendError(f"SendGrid not reachable: {err.reason}") from None
            raise AmbiguousSendError(f"SendGrid connection failed: {err.reason}") from None
        except OSError as err:  # timeouts, resets: the request may have arrived
            raise AmbiguousSendError(f"SendGrid call interrupted: {type(err).__name__}") from None
        headers = getattr(response, "headers", None)
        return headers.get("X-Message-Id") if headers is not None else None


class HttpSmsSender:
    """A Twilio-style Messages API: POST {base}/2010-04-01/Accounts/{sid}/Messages.json
    with form fields To, From, Body and basic auth (sid, token)."""

    def __init__(
        self,
        *,
        base_url: str,
        account_sid: str,
        auth_token: str,
        from_number: str,
        timeout: float = 15.0,
    ) -> None:
        import requests

        self._session = requests.Session()
        self._session.auth = (account_sid, auth_token)
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.from_number = from_number
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"HttpSmsSender(url={self._url!r}, from={self.from_number!r})"

    def send(self, message: SmsMessage) -> str | None:
        import requests
        from urllib3.exceptions import MaxRetryError, NewConnectionError

        try:
            response = self._session.post(
                self._url,
                data={"To": message.to, "From": self.from_number, "Body": message.body},
                headers={SMS_IDEMPOTENCY_HEADER: message.idempotency_key},
                timeout=self._timeout,
            )
        except requests.ConnectTimeout:
            raise TransientSendError("SMS provider: connect timeout") from None
        except requests.ConnectionError as err:
            cause = err.args[0] if err.args else None
            if isinstance(cause, MaxRetryError) and isinstance(cause.reason, NewConnectionError):
                raise TransientSendError("SMS provider not reachable") from None
            raise AmbiguousSendError("SMS provider: connection lost") from None
        except requests.Timeout:
            raise AmbiguousSendError("SMS provider: no answer in time") from None
        if response.status_code >= 300:
            raise _classify_status(response.status_code, "SMS provider")
        try:
            return str(response.json().get("sid") or "") or None
        except ValueError:
            return None
