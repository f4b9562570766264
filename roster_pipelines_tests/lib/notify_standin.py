"""A local HTTP stand-in for SendGrid's v3 mail API and a Twilio-style SMS API.

It records every request, answers with queued status codes (default: 202 for mail,
201 for SMS) and keeps the accepted ones, so tests see exactly what the real client
libraries put on the wire. Nothing here talks to a real provider.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

SMS_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")


@dataclass
class Recorded:
    kind: str  # email | sms
    path: str
    headers: dict[str, str]
    body: Any
    status: int

    @property
    def idempotency_key(self) -> str | None:
        if self.kind == "email":
            return (self.body.get("custom_args") or {}).get("idempotency_key")
        return self.headers.get("I-Twilio-Idempotency-Token")

    # email helpers
    @property
    def to(self) -> str:
        if self.kind == "email":
            return self.body["personalizations"][0]["to"][0]["email"]
        return self.body["To"]

    def content(self, mime: str) -> str:
        return next(c["value"] for c in self.body["content"] if c["type"] == mime)


@dataclass
class StandIn:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    plan: dict[str, deque] = field(default_factory=lambda: {"email": deque(), "sms": deque()})
    delay: float = 0.0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def answer(self, kind: str, *statuses: int) -> None:
        """The next answers for `kind` (then back to success)."""
        self.plan[kind].extend(statuses)

    @property
    def accepted(self) -> list[Recorded]:
        return [r for r in self.requests if r.status < 300]

    def emails(self) -> list[Recorded]:
        return [r for r in self.accepted if r.kind == "email"]

    def texts(self) -> list[Recorded]:
        return [r for r in self.accepted if r.kind == "sms"]

    def start(self) -> StandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                headers = {k: v for k, v in self.headers.items()}
                if self.path == "/v3/mail/send":
                    kind, body = "email", json.loads(raw or b"{}")
                elif SMS_PATH.match(self.path):
                    kind = "sms"
                    body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                queue = standin.plan[kind]
                status = queue.popleft() if queue else (202 if kind == "email" else 201)
                standin.requests.append(Recorded(kind, self.path, headers, body, status))
                if standin.delay:
                    time.sleep(standin.delay)
                payload = b""
                if kind == "sms":
                    payload = json.dumps({"sid": f"SM{len(standin.requests)}"}).encode()
                elif status >= 300:
                    payload = json.dumps({"errors": [{"message": "stand-in error"}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if kind == "email" and status < 300:
                    self.send_header("X-Message-Id", f"msg{len(standin.requests)}")
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def basic_auth(recorded: Recorded) -> tuple[str, str]:
    user, _, password = (
        base64.b64decode(recorded.headers["Authorization"].split(" ", 1)[1]).decode().partition(":")
    )
    return user, password
