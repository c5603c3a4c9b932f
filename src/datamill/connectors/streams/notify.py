"""Notifications (SMNSink): one message per record to a webhook, a chat webhook or by email.

Messages are templates: ``${field}`` is replaced by the record's value (null → empty
text, nested values as JSON; a name the record lacks stays as written). The subject is
``messageSubject``; the body is the channel's own message when the operator sets it —
``emailMessage`` for email, ``httpsMessage`` / ``httpMessage`` for webhooks and chats on
an https / http URL — else ``defaultMessage``. (``smsMessage`` has no channel here.)

* webhook: ``POST url`` with ``{"subject": …, "message": …}``;
* chat: ``POST url`` with ``{"text": …}`` (subject and message on two lines), the shape
  Slack, Mattermost and Rocket.Chat incoming webhooks take;
* email: one mail per record from ``from`` to every ``to`` over SMTP (``smtpSecurity``
  starttls, tls or none); with ``tokenSecret`` its ``username`` and ``password`` log in.

HTTP goes through :class:`~datamill.connectors.outbound.http.OutboundHttp` (outbound guard,
resolved address, no redirects, 3 tries on 5xx/timeouts); SMTP connects to the address
the guard resolved as well. The ``tokenSecret``'s ``token`` is sent as a bearer token.

Rate limit: a token bucket per connection and process holding ``rateLimitPerMinute``
notifications and refilled at that rate; records over the limit are not sent, only
counted (:attr:`NotifySink.dropped`) and logged. A notification that cannot be delivered
is counted (:attr:`NotifySink.failed`) and logged too: notifications are best-effort and
never stop the pipeline; after :data:`GIVE_UP_AFTER` failures in a row the rest of the
batch is counted as failed without trying (a destination that is down would otherwise
hold the pipeline for its retries on every record). They are sent in
:meth:`NotifySink.write`, so after a crash the records of the unfinished checkpoint notify
again (at-least-once).
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa

from datamill.connectors.outbound.errors import OutboundError
from datamill.connectors.outbound.http import OutboundHttp, secret_value
from datamill.connectors.streams.base import StreamContext, register_sink
from datamill.connectors.streams.records import flat, open_spec
from datamill.domain.datasources import NotificationChannel, NotificationSpec
from datamill.domain.values import json_value
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_host

TEMPLATE_FIELD = r"\$\{([^}]*)\}"
GIVE_UP_AFTER = 3
"""Notifications in a row that failed after which the rest of a batch is not tried."""


def render(template: str, record: dict[str, Any]) -> str:
    """``template`` with each ``${field}`` replaced by the record's value (module docstring)."""
    import re

    def value(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name not in record:
            return match.group(0)
        item = json_value(record[name], strict=True)
        if item is None:
            return ""
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, dict | list):
            return json.dumps(item, ensure_ascii=False, separators=(",", ":"))
        return str(item)

    return re.sub(TEMPLATE_FIELD, value, template)


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``capacity`` per ``period`` seconds."""

    def __init__(self, capacity: int, period: float = 60.0) -> None:
        self.capacity = capacity
        self.rate = capacity / period
        self.tokens = float(capacity)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


_BUCKETS: dict[tuple[str, str], TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def bucket_for(project: str, spec: NotificationSpec) -> TokenBucket:
    """The bucket of one connection (same project and spec) shared by its sinks in a process."""
    key = (project, spec.model_dump_json())
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get(key)
        if bucket is None or bucket.capacity != spec.rateLimitPerMinute:
            bucket = _BUCKETS[key] = TokenBucket(spec.rateLimitPerMinute)
        return bucket


class _PinnedSMTP(smtplib.SMTP):
    """SMTP to an address resolved in advance; STARTTLS still verifies the host name."""

    def __init__(self, address: str, timeout: float) -> None:
        self._pinned_address = address
        super().__init__(timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._pinned_address, port), timeout)


class _PinnedSMTPSSL(smtplib.SMTP_SSL):
    def __init__(self, address: str, timeout: float) -> None:
        self._pinned_address = address
        super().__init__(timeout=timeout, context=ssl.create_default_context())

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((self._pinned_address, port), timeout)
        return self.context.wrap_socket(raw, server_hostname=host)


class NotifySink:
    """Sends one notification per record through the connection's channel."""

    def __init__(self, spec: NotificationSpec, basic: dict[str, Any], ctx: StreamContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.subject = str(basic.get("messageSubject") or "")
        default = str(basic.get("defaultMessage") or "")
        if spec.channel == NotificationChannel.email:
            own = basic.get("emailMessage")
        elif (spec.url or "").startswith("https:"):
            own = basic.get("httpsMessage")
        else:
            own = basic.get("httpMessage")
        self.message = str(own or default)
        if not self.message.strip():
            raise DatamillError(
                E.STREAM_SETTINGS_INVALID,
                "basicConfigs.defaultMessage: the message sent is empty",
                field="basicConfigs.defaultMessage",
            )
        self.bucket = bucket_for(ctx.project, spec)
        self.sent = 0
        self.dropped = 0
        """Records not notified because of the rate limit."""
        self.failed = 0
        """Notifications that could not be delivered."""
        self._http: OutboundHttp | None = None
        self._smtp_address: str | None = None
        if spec.channel == NotificationChannel.email:
            self._smtp_address = check_host(
                spec.smtpHost or "", spec.smtpPort or 25, ctx.outbound_allow, "spec.smtpHost"
            )
        else:
            token = secret_value(ctx, spec.tokenSecret, "token")
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            self._http = OutboundHttp(spec.url or "", ctx, "spec.url", spec.timeoutSeconds, headers)

    def write(self, table: pa.Table, epoch: int) -> None:
        notes: list[tuple[str, str]] = []
        dropped = 0
        for batch in table.to_batches(max_chunksize=4096):
            for record in batch.to_pylist():
                if not self.bucket.take():
                    dropped += 1
                    continue
                notes.append((render(self.subject, record), render(self.message, record)))
        self.dropped += dropped
        if dropped:
            self.ctx.log(
                f"notification: rate limit of {self.spec.rateLimitPerMinute}/min reached; "
                f"{dropped} records not notified ({self.dropped} so far)"
            )
        if not notes:
            return
        if self._http is not None:
            self._send_http(notes)
        else:
            self._send_mail(notes)

    def _send_http(self, notes: list[tuple[str, str]]) -> None:
        assert self._http is not None
        params = dict(parse_qsl(urlsplit(self.spec.url or "").query, keep_blank_values=True))
        in_a_row = 0
        for index, (subject, message) in enumerate(notes):
            if in_a_row >= GIVE_UP_AFTER:
                skipped = len(notes) - index
                self.failed += skipped
                self.ctx.log(
                    f"notification: {in_a_row} failures in a row; {skipped} more of this "
                    "batch not sent"
                )
                return
            if self.spec.channel == NotificationChannel.chat:
                body: dict[str, Any] = {"text": f"{subject}\n{message}" if subject else message}
            else:
                body = {"subject": subject, "message": message}
            try:
                self._http.request(
                    "POST", "", content=json.dumps(body).encode(), params=params or None
                )
                self.sent += 1
                in_a_row = 0
            except OutboundError as exc:
                self.failed += 1
                in_a_row += 1
                self.ctx.log(f"notification not delivered: {exc}")

    def _smtp(self) -> smtplib.SMTP:
        spec, address = self.spec, self._smtp_address or ""
        timeout = spec.timeoutSeconds
        client: smtplib.SMTP
        if spec.smtpSecurity == "tls":
            client = _PinnedSMTPSSL(address, timeout)
        else:
            client = _PinnedSMTP(address, timeout)
        try:
            client.connect(spec.smtpHost or "", spec.smtpPort or 25)
            if spec.smtpSecurity == "starttls":
                client.starttls(context=ssl.create_default_context())
            if spec.tokenSecret is not None:
                username = secret_value(self.ctx, spec.tokenSecret, "username") or ""
                password = secret_value(self.ctx, spec.tokenSecret, "password") or ""
                client.login(username, password)
        except BaseException:
            client.close()
            raise
        return client

    def _send_mail(self, notes: list[tuple[str, str]]) -> None:
        try:
            client = self._smtp()
        except (OSError, smtplib.SMTPException) as exc:
            self.failed += len(notes)
            self.ctx.log(
                f"notification: SMTP {self.spec.smtpHost}:{self.spec.smtpPort} failed: {exc}; "
                f"{len(notes)} mails not sent"
            )
            return
        try:
            for subject, message in notes:
                mail = EmailMessage()
                mail["From"] = self.spec.from_ or ""
                mail["To"] = ", ".join(self.spec.to or [])
                mail["Subject"] = " ".join(subject.split())  # no header injection
                mail.set_content(message)
                try:
                    client.send_message(mail)
                    self.sent += 1
                except (OSError, smtplib.SMTPException) as exc:
                    self.failed += 1
                    self.ctx.log(f"notification: mail not sent: {exc}")
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()

    def commit(self, epoch: int) -> None:
        """Nothing is staged: notifications leave in :meth:`write`."""

    def close(self) -> None:
        if self._http is not None:
            self._http.__exit__(None, None, None)


@register_sink("notification")
def notification_sink(
    spec: dict[str, Any], configs: dict[str, Any], ctx: StreamContext
) -> NotifySink:
    return NotifySink(open_spec(NotificationSpec, spec, "notification"), flat(configs), ctx)
