"""The three channels against real peers on 127.0.0.1: webhook (HMAC, retries, 4xx), SMTP, file drop."""

from __future__ import annotations

import csv
import os
from datetime import date

import pytest

from campaign_peers import SmtpPeer, WebhookPeer
from portrait.campaigns import channels
from portrait.campaigns.assignment import idempotency_key
from portrait.campaigns.declarations import Channel

SECRET = b"test-secret"
DT = date(2026, 3, 1)


def _deliveries(n: int, campaign: str = "c1") -> list[channels.Delivery]:
    return [
        channels.Delivery(campaign, f"u{i:03d}", "push", idempotency_key(campaign, f"u{i:03d}", DT), f"hello u{i}", DT) for i in range(n)
    ]


def _push(**settings) -> Channel:
    base = {"batch_size": 10, "timeout_seconds": 2.0, "max_attempts": 4, "backoff_seconds": 0.05}
    return Channel("push", "webhook", "push", "TEST_PUSH_URL", "TEST_PUSH_SECRET", **{**base, **settings})


def _run(sender, deliveries, settled=frozenset(), batch_size=10):
    log = []
    counts = channels.deliver(deliveries, set(settled), sender, lambda batch, outcomes: log.extend(outcomes), batch_size)
    return counts, log


def test_webhook_batches_are_signed_and_each_key_arrives_once():
    with WebhookPeer(SECRET) as peer:
        counts, log = _run(channels.WebhookSender(_push(), peer.url, SECRET), _deliveries(25))
    assert counts["delivered"] == 25 and peer.requests == 3  # batches of 10, 10, 5
    assert peer.bad_signatures == 0 and len(peer.received) == 25 and peer.total == 25
    assert {o.status for o in log} == {"delivered"} and {o.response_code for o in log} == {200}


def test_webhook_wrong_secret_is_a_rejection_not_retried():
    with WebhookPeer(SECRET) as peer:
        counts, log = _run(channels.WebhookSender(_push(), peer.url, b"wrong"), _deliveries(3))
    assert counts["rejected"] == 3 and peer.requests == 1 and peer.total == 0
    assert log[0].response_code == 401 and log[0].attempts == 1


def test_webhook_retries_5xx_with_backoff_then_delivers():
    waits = []
    with WebhookPeer(SECRET, fail_first=2) as peer:
        counts, log = _run(channels.WebhookSender(_push(), peer.url, SECRET, sleep=waits.append), _deliveries(4))
    assert counts["delivered"] == 4 and peer.requests == 3
    assert waits == [0.05, 0.1]  # exponential back-off
    assert log[0].attempts == 3 and log[0].response_code == 200


def test_webhook_gives_up_after_max_attempts_and_a_rerun_sends_again():
    with WebhookPeer(SECRET, fail_first=10) as peer:
        counts, log = _run(channels.WebhookSender(_push(max_attempts=3), peer.url, SECRET, sleep=lambda s: None), _deliveries(2))
        assert counts["failed"] == 2 and peer.requests == 3 and log[0].error == "HTTP 503"
        peer.fail_first = 0
        counts, _ = _run(channels.WebhookSender(_push(), peer.url, SECRET), _deliveries(2))  # failed is not settled
    assert counts["delivered"] == 2 and len(peer.received) == 2


def test_webhook_timeout_is_retried_and_the_receiver_deduplicates():
    with WebhookPeer(SECRET, slow_first=1, delay=1.0) as peer:
        counts, log = _run(channels.WebhookSender(_push(timeout_seconds=0.3), peer.url, SECRET, sleep=lambda s: None), _deliveries(5))
        import time

        time.sleep(1.0)  # the slow first request finishes on the peer
    assert counts["delivered"] == 5 and log[0].attempts == 2
    assert len(peer.processed) == 5 and peer.total == 10  # sent twice, acted on once


def test_webhook_4xx_is_rejected_without_retry():
    with WebhookPeer(SECRET, reject=422) as peer:
        counts, log = _run(
            channels.WebhookSender(_push(), peer.url, SECRET, sleep=lambda s: pytest.fail("no retry on 4xx")), _deliveries(3)
        )
    assert counts["rejected"] == 3 and peer.requests == 1
    assert log[0].response_code == 422 and "422" in log[0].error


def test_settled_keys_are_never_sent_again():
    items = _deliveries(6)
    with WebhookPeer(SECRET) as peer:
        counts, _ = _run(channels.WebhookSender(_push(), peer.url, SECRET), items, settled={d.idempotency_key for d in items[:4]})
    assert counts == {"skipped": 4, "delivered": 2, "rejected": 0, "failed": 0}
    assert set(peer.received) == {d.idempotency_key for d in items[4:]}


def test_endpoint_and_secret_come_from_the_environment_only(monkeypatch):
    channel = _push()
    monkeypatch.delenv("TEST_PUSH_URL", raising=False)
    monkeypatch.delenv("TEST_PUSH_SECRET", raising=False)
    with pytest.raises(channels.ChannelConfigError, match="TEST_PUSH_URL"):
        channels.endpoint(channel)
    monkeypatch.setenv("TEST_PUSH_URL", "http://127.0.0.1:1/x")
    monkeypatch.setenv("TEST_PUSH_SECRET", "s3cr3t-value")
    assert channels.endpoint(channel) == "http://127.0.0.1:1/x" and channels.secret(channel) == b"s3cr3t-value"
    monkeypatch.delenv("TEST_PUSH_SECRET")
    with pytest.raises(channels.ChannelConfigError) as error:
        channels.secret(channel)
    assert "s3cr3t" not in str(error.value) and "TEST_PUSH_SECRET" in str(error.value)


def _email(**settings) -> Channel:
    base = {"batch_size": 10, "timeout_seconds": 5.0, "max_attempts": 3, "backoff_seconds": 0.0, "recipient_domain": "relay.test"}
    return Channel("email", "smtp", "email", "TEST_SMTP_URL", **{**base, **settings})


def test_smtp_delivers_one_message_per_user_with_its_key():
    items = _deliveries(7, "mail")
    with SmtpPeer() as peer:
        counts, log = _run(channels.SmtpSender(_email(), peer.url), items)
    assert counts["delivered"] == 7 and len(peer.messages) == 7
    assert {m["X-Idempotency-Key"] for m in peer.messages} == {d.idempotency_key for d in items}
    assert peer.messages[0]["To"] == "u000@relay.test" and "hello u0" in peer.messages[0].get_payload()


def test_smtp_permanent_refusal_is_rejected_and_transient_is_retried():
    items = _deliveries(3, "mail")
    with SmtpPeer(refuse={"u001": 550}, transient_once={"u002"}) as peer:
        counts, log = _run(channels.SmtpSender(_email(), peer.url), items)
    by_user = {d.user_id: o for d, o in zip(items, log)}
    assert by_user["u001"].status == "rejected" and by_user["u001"].response_code == 550
    assert by_user["u002"].status == "delivered" and by_user["u002"].attempts == 2
    assert counts["delivered"] == 2 and len(peer.messages) == 2


def test_file_drop_writes_whole_csv_files_atomically(tmp_path):
    channel = Channel("sms", "file_drop", "sms", "TEST_SMS_DROP")
    items = _deliveries(12, "sms")
    counts, _ = _run(channels.FileDropSender(channel, str(tmp_path / "drop")), items, batch_size=5)
    files = sorted(os.listdir(tmp_path / "drop"))
    assert counts["delivered"] == 12 and len(files) == 3 and all(f.endswith(".csv") for f in files)  # no partial file left
    rows = [row for f in files for row in csv.DictReader(open(tmp_path / "drop" / f, encoding="utf-8"))]
    assert sorted(r["idempotency_key"] for r in rows) == sorted(d.idempotency_key for d in items)
    assert rows[0]["message"].startswith("hello")
