"""Delivery through real protocols: an HTTP webhook, e-mail over SMTP, a CSV file drop.

Exactly once per (campaign, user, date) as the receiver sees it rests on two
things. The sender never resends what a receiver acknowledged: every batch's
outcome is appended to ``ops.campaign_deliveries`` (the outbox) right after
the receiver answers, and a run sends only the keys without a settled outcome
(delivered, or rejected by a 4xx). A batch whose answer was lost (a timeout, a
process killed while waiting) is sent again with the same idempotency keys,
one per (campaign, user, date), which the receiver deduplicates on.

Endpoints and secrets come from environment variables (the channel's
``endpoint_env`` / ``secret_env``) or else its Airflow connection; never from
conf files, and never into logs or errors (only the variable's name is named).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import os
import smtplib
import time
from dataclasses import dataclass
from datetime import date
from email import policy
from email.message import EmailMessage
from urllib.parse import urlparse

from portrait.campaigns.declarations import Channel

log = logging.getLogger(__name__)

DELIVERED, REJECTED, FAILED = "delivered", "rejected", "failed"
SETTLED = (DELIVERED, REJECTED)  # never sent again
SIGNATURE_HEADER = "X-Portrait-Signature"  # "sha256=" + HMAC-SHA256(secret, body) in hex
BATCH_HEADER = "X-Portrait-Batch"
_MAIL_POLICY = policy.SMTP.clone(max_line_length=998)  # a 64-hex idempotency key stays on one header line


class ChannelConfigError(RuntimeError):
    """A channel's endpoint or secret is not configured; names the variable and connection, never a value."""


@dataclass(frozen=True)
class Delivery:
    campaign: str
    user_id: str
    channel: str
    idempotency_key: str
    message: str
    dt: date


@dataclass(frozen=True)
class Outcome:
    idempotency_key: str
    status: str
    attempts: int
    response_code: int | None = None
    error: str | None = None


# --------------------------------------------------------------------------- where to send


def _connection(channel: Channel):
    if not channel.connection:
        return None
    try:
        from airflow.sdk import BaseHook
    except ImportError:
        try:
            from airflow.hooks.base import BaseHook
        except ImportError:
            return None
    try:
        return BaseHook.get_connection(channel.connection)
    except Exception:  # noqa: BLE001 - an unknown connection is "not configured", reported below
        return None


def endpoint(channel: Channel) -> str:
    """The channel's endpoint: ``$endpoint_env``, else its Airflow connection's URI (a file drop: the host/path)."""
    value = os.environ.get(channel.endpoint_env)
    if value:
        return value
    conn = _connection(channel)
    if conn is not None:
        if channel.protocol == "file_drop":
            return conn.extra_dejson.get("path") or conn.host
        return conn.get_uri()
    raise ChannelConfigError(
        f"channel {channel.name}: no endpoint; set the environment variable {channel.endpoint_env}"
        + (f" or the Airflow connection {channel.connection!r}" if channel.connection else "")
    )


def secret(channel: Channel) -> bytes:
    """The webhook's signing secret: ``$secret_env``, else the Airflow connection's password."""
    value = os.environ.get(channel.secret_env) if channel.secret_env else None
    if not value:
        conn = _connection(channel)
        value = conn.password if conn is not None else None
    if not value:
        raise ChannelConfigError(
            f"channel {channel.name}: no signing secret; set the environment variable {channel.secret_env}"
            + (f" or the password of the Airflow connection {channel.connection!r}" if channel.connection else "")
        )
    return value.encode()


def signature(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def batch_id(batch: list[Delivery]) -> str:
    """The same batch of keys gets the same id (a resent batch is recognisable)."""
    return hashlib.sha256("\n".join(d.idempotency_key for d in batch).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- senders


class WebhookSender:
    """POST JSON batches; retry 5xx and timeouts with exponential back-off; a 4xx rejects the batch at once."""

    def __init__(self, channel: Channel, url: str | None = None, key: bytes | None = None, sleep=time.sleep):
        self.channel, self.url, self.key, self.sleep = channel, url or endpoint(channel), key or secret(channel), sleep

    def send(self, batch: list[Delivery]) -> list[Outcome]:
        import httpx

        bid = batch_id(batch)
        body = json.dumps(
            {
                "batch_id": bid,
                "deliveries": [
                    {
                        "idempotency_key": d.idempotency_key,
                        "campaign": d.campaign,
                        "user_id": d.user_id,
                        "message": d.message,
                        "dt": str(d.dt),
                    }
                    for d in batch
                ],
            },
            ensure_ascii=False,
            sort_keys=True,
        ).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(self.key, body), BATCH_HEADER: bid}
        status, code, error, attempt = FAILED, None, None, 0
        with httpx.Client(timeout=self.channel.timeout_seconds) as client:
            for attempt in range(1, self.channel.max_attempts + 1):
                try:
                    response = client.post(self.url, content=body, headers=headers)
                    code = response.status_code
                except httpx.TimeoutException:
                    code, error = None, f"timeout after {self.channel.timeout_seconds}s"
                except httpx.TransportError as exc:
                    code, error = None, f"connection failed: {type(exc).__name__}"
                else:
                    if 200 <= code < 300:
                        status, error = DELIVERED, None
                        break
                    if 400 <= code < 500:
                        status, error = REJECTED, f"HTTP {code}: {response.text[:200]}"
                        break
                    error = f"HTTP {code}"
                if attempt < self.channel.max_attempts:
                    self.sleep(self.channel.backoff_seconds * 2 ** (attempt - 1))
        if status == FAILED:
            log.warning("channel %s: batch %s failed after %d attempts (%s)", self.channel.name, bid, attempt, error)
        return [Outcome(d.idempotency_key, status, attempt, code, error) for d in batch]


class SmtpSender:
    """One message per delivery over SMTP; 4xx replies and lost connections are retried, 5xx are rejections."""

    def __init__(self, channel: Channel, url: str | None = None, sleep=time.sleep):
        parsed = urlparse(url or endpoint(channel))
        self.channel, self.host, self.port, self.sleep = channel, parsed.hostname or "127.0.0.1", parsed.port or 25, sleep

    def _message(self, d: Delivery) -> EmailMessage:
        message = EmailMessage(policy=_MAIL_POLICY)
        message["From"] = self.channel.sender
        message["To"] = f"{d.user_id}@{self.channel.recipient_domain}"
        message["Subject"] = f"[{d.campaign}]"
        message["Message-ID"] = f"<{d.idempotency_key}@portrait>"
        message["X-Idempotency-Key"] = d.idempotency_key
        message.set_content(d.message)
        return message

    def send(self, batch: list[Delivery]) -> list[Outcome]:
        outcomes, pending, attempts, last = {}, list(batch), 0, {}
        while pending and attempts < self.channel.max_attempts:
            attempts += 1
            retry = []
            try:
                with smtplib.SMTP(self.host, self.port, timeout=self.channel.timeout_seconds) as smtp:
                    for d in pending:
                        try:
                            smtp.send_message(self._message(d))
                            outcomes[d.idempotency_key] = Outcome(d.idempotency_key, DELIVERED, attempts, 250)
                            continue
                        except smtplib.SMTPRecipientsRefused as exc:
                            code = next(iter(exc.recipients.values()))[0]
                        except smtplib.SMTPResponseException as exc:
                            code = exc.smtp_code
                        last[d.idempotency_key] = (code, f"SMTP {code}")
                        if 400 <= code < 500:  # transient: try again
                            retry.append(d)
                        else:
                            outcomes[d.idempotency_key] = Outcome(d.idempotency_key, REJECTED, attempts, code, f"SMTP {code}")
            except (OSError, smtplib.SMTPException) as exc:
                retry = [d for d in pending if d.idempotency_key not in outcomes]
                for d in retry:
                    last[d.idempotency_key] = (None, f"connection failed: {type(exc).__name__}")
            pending = retry
            if pending and attempts < self.channel.max_attempts:
                self.sleep(self.channel.backoff_seconds * 2 ** (attempts - 1))
        for d in pending:
            code, error = last.get(d.idempotency_key, (None, "not sent"))
            outcomes[d.idempotency_key] = Outcome(d.idempotency_key, FAILED, attempts, code, error)
        return [outcomes[d.idempotency_key] for d in batch]


class FileDropSender:
    """A CSV per batch for an SMS gateway, written atomically: a temporary name, then renamed into place."""

    COLUMNS = ("idempotency_key", "campaign", "user_id", "dt", "message")

    def __init__(self, channel: Channel, target: str | None = None):
        self.channel, self.target = channel, target or endpoint(channel)

    def send(self, batch: list[Delivery]) -> list[Outcome]:
        from portrait.core import storage

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.COLUMNS)
        for d in batch:
            writer.writerow([d.idempotency_key, d.campaign, d.user_id, str(d.dt), d.message])
        name = f"{batch[0].campaign}-{batch[0].dt}-{batch_id(batch)}.csv"
        data = buffer.getvalue().encode("utf-8")
        try:
            if "://" in self.target:  # an object store's put is atomic: the object appears whole or not at all
                storage.write_bytes(storage.join(self.target, name), data)
            else:
                os.makedirs(self.target, exist_ok=True)
                final = os.path.join(self.target, name)
                partial = os.path.join(self.target, f".{name}.partial")
                with open(partial, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, final)  # the gateway picks up *.csv only, never a half-written file
        except OSError as exc:
            return [Outcome(d.idempotency_key, FAILED, 1, None, f"file drop failed: {type(exc).__name__}") for d in batch]
        return [Outcome(d.idempotency_key, DELIVERED, 1) for d in batch]


SENDERS = {"webhook": WebhookSender, "smtp": SmtpSender, "file_drop": FileDropSender}


def sender_for(channel: Channel):
    return SENDERS[channel.protocol](channel)


# --------------------------------------------------------------------------- the outbox loop


def deliver(deliveries: list[Delivery], settled: set[str], sender, record, batch_size: int) -> dict[str, int]:
    """Send what is not ``settled`` in batches; ``record(batch, outcomes)`` after each answer (the outbox).

    Returns counts per status, and ``skipped`` (already settled by an earlier run).
    """
    pending = [d for d in deliveries if d.idempotency_key not in settled]
    counts = {"skipped": len(deliveries) - len(pending), DELIVERED: 0, REJECTED: 0, FAILED: 0}
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        outcomes = sender.send(batch)
        record(batch, outcomes)
        for outcome in outcomes:
            counts[outcome.status] += 1
    return counts
