"""Exactly once per (campaign, user, date) at the webhook: through reruns, retries and a sender killed mid-batch.

The assignments are written to a real Delta table, the sender is the real one
(`portrait campaign send`, in a subprocess for the kill), the outbox is
ops.campaign_deliveries, the receiver a real HTTP server that counts every
delivery it got and the distinct keys.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml

from campaign_peers import WebhookPeer, kill_sender_mid_batch
from portrait.campaigns import delivery
from portrait.campaigns.assignment import arm_of, idempotency_key
from portrait.campaigns.report import read_table
from portrait.cli import main
from portrait.core.config import Conf
from portrait.core.pipeline import RunContext, append_rows
from portrait.core.tables import Catalog

REPO = Path(__file__).resolve().parents[1]
DT = date(2026, 3, 2)
CAMPAIGN, USERS, BATCH = "vip_retention", 200, 20
SECRET = "webhook-test-secret"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf_dir)
    declared = yaml.safe_load((conf_dir / "campaigns.yaml").read_text())
    declared["channels"]["push"].update(batch_size=BATCH, timeout_seconds=30, backoff_seconds=0.05)
    (conf_dir / "campaigns.yaml").write_text(yaml.safe_dump(declared, sort_keys=False))
    lake, conf = str(tmp_path / "lake"), Conf(conf_dir)
    rows = [
        {
            "campaign": CAMPAIGN,
            "user_id": f"U{i:05d}",
            "arm": arm_of(CAMPAIGN, f"U{i:05d}", 0.2),
            "channel": "push",
            "consent": "push",
            "message": f"hello {i}",
            "idempotency_key": idempotency_key(CAMPAIGN, f"U{i:05d}", DT),
            "dt": DT,
        }
        for i in range(USERS)
    ]
    append_rows(lake, conf, "gold.campaign_assignments", rows)
    treated = {r["idempotency_key"] for r in rows if r["arm"] == "treatment"}
    monkeypatch.setenv("PORTRAIT_PUSH_SECRET", SECRET)
    return lake, conf, conf_dir, treated


def _outbox(lake, conf):
    return read_table(Catalog(lake, conf), "ops.campaign_deliveries")


def test_reruns_and_retries_deliver_each_key_once(setup, monkeypatch, capsys):
    lake, conf, conf_dir, treated = setup
    with WebhookPeer(SECRET.encode(), fail_first=2) as peer:
        monkeypatch.setenv("PORTRAIT_PUSH_URL", peer.url)
        assert main(["campaign", "send", CAMPAIGN, "--date", str(DT), "--lake", lake, "--conf", str(conf_dir), "--dry-run"]) == 0
        dry = json.loads(capsys.readouterr().out)
        assert dry["would_send"] == len(treated) and peer.requests == 0
        first = delivery.send(RunContext(None, lake, DT, conf), CAMPAIGN)
        again = delivery.send(RunContext(None, lake, DT, conf), CAMPAIGN)
    assert first["delivered"] == len(treated) and again == {**again, "skipped": len(treated), "delivered": 0}
    assert set(peer.received) == treated and peer.total == len(treated)  # the 503s were not processed, nothing twice
    outbox = _outbox(lake, conf)
    assert len(outbox) == len(treated) and set(outbox["status"]) == {"delivered"}
    assert outbox["attempts"].max() == 3  # the first batch took two 503s


def test_a_sender_killed_mid_batch_resends_only_the_unacknowledged_batch(setup, monkeypatch):
    lake, conf, conf_dir, treated = setup
    with WebhookPeer(SECRET.encode()) as peer:
        env = {**os.environ, "PORTRAIT_PUSH_URL": peer.url, "PORTRAIT_PUSH_SECRET": SECRET}
        send = ["campaign", "send", CAMPAIGN, "--date", str(DT), "--lake", lake, "--conf", str(conf_dir)]
        kill_sender_mid_batch(peer, 3, send, env)  # batch 3 is processed by the receiver, and its answer never comes
        before = _outbox(lake, conf)
        acknowledged = set(before["idempotency_key"])
        assert len(acknowledged) == 2 * BATCH and len(peer.received) == 3 * BATCH  # two batches recorded, the third in flight
        monkeypatch.setenv("PORTRAIT_PUSH_URL", peer.url)
        rerun = delivery.send(RunContext(None, lake, DT, conf), CAMPAIGN)
        third = delivery.send(RunContext(None, lake, DT, conf), CAMPAIGN)
    assert rerun["skipped"] == 2 * BATCH and rerun["delivered"] == len(treated) - 2 * BATCH
    assert third["delivered"] == 0
    assert set(peer.received) == treated and len(peer.processed) == len(treated)  # exactly once as the receiver acts
    assert all(peer.received[key] == 1 for key in acknowledged)  # nothing acknowledged was sent again
    assert peer.total - len(treated) == BATCH  # only the batch whose answer was lost came twice (deduplicated)
    assert set(_outbox(lake, conf).query("status == 'delivered'")["idempotency_key"]) == treated
