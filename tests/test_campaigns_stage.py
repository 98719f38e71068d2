"""The campaigns and deliveries stages on a hand-made lake, with the real engine, gates and peers.

400 users over five dates: a segment audience (push webhook, entrants), a rule
audience (e-mail over SMTP, every member every day) and another rule (SMS file
drop, entrants); consent granted, missing and withdrawn; a frequency cap of two
contacts in seven days. Orders after the first send date are drawn with a known
uplift for the e-mail campaign, so its measured interval must hold the truth.
"""

from __future__ import annotations

import csv
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from campaign_peers import SmtpPeer, WebhookPeer
from portrait.campaigns.assignment import arm_of, idempotency_key
from portrait.campaigns.report import latest_results, read_table
from portrait.cli import main
from portrait.core.config import Conf
from portrait.core.pipeline import RunContext, run_stage
from portrait.core.tables import Catalog

pytestmark = pytest.mark.slow  # five runs of the campaigns stage with its gate (about 1-2 minutes)

REPO = Path(__file__).resolve().parents[1]
D0 = date(2026, 3, 1)
DAYS = [D0 + timedelta(days=n) for n in range(5)]  # D0 .. D0+4; horizon 3: D0 is measured on D0+3
USERS = [f"U{i:03d}" for i in range(400)]
VIP = {DAYS[0]: USERS[:100], DAYS[1]: USERS[:150]}  # vip_at_risk members; the rest of the days as on DAYS[1]
LAPSED, NEW = USERS[100:300], USERS[300:]
NO_PUSH, WITHDRAWS_EMAIL = set(USERS[:10]), "U120"
TRUE_UPLIFT, BASE = 0.25, 0.30
SECRET = "stage-secret"


def _conf(root: Path) -> Conf:
    shutil.copytree(REPO / "conf", root / "conf")
    declared = yaml.safe_load((root / "conf" / "campaigns.yaml").read_text())
    for spec in declared["campaigns"].values():
        spec.update(start=str(DAYS[0]), end=str(DAYS[-1]), horizon_days=3)
    declared["campaigns"]["lapsed_email"]["contact"] = "members"
    declared["campaigns"]["second_order"]["audience"] = {"rule": "lifecycle_stage == 'new'"}
    for channel in declared["channels"].values():
        channel.update(batch_size=40, backoff_seconds=0.01)
    (root / "conf" / "campaigns.yaml").write_text(yaml.safe_dump(declared, allow_unicode=True, sort_keys=False))
    return Conf(root / "conf")


def _ts(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _write_lake(spark, catalog: Catalog) -> None:
    spec = catalog.spec("gold.profile_snapshot")
    rows = []
    for day in DAYS:
        for user in USERS:
            row = dict.fromkeys(spec.columns)
            row.update(
                user_id=user,
                dt=day,
                lifecycle_stage="new" if user in NEW else "old",
                vip_tier="super_vip" if user in VIP[DAYS[1]] else "regular",
                days_since_last_order=30 if user in LAPSED else 3,
            )
            rows.append(row)
    catalog.write(spark, spark.createDataFrame(rows, spec.ddl), spec.name, "append")
    members = [("vip_at_risk", u, day) for day in DAYS for u in VIP.get(day, VIP[DAYS[1]])]
    catalog.write(spark, spark.createDataFrame(members, catalog.spec("gold.segment_members").ddl), "gold.segment_members", "append")
    consent = [(u, channel, True, _ts(D0 - timedelta(days=30)), f"c-{u}-{channel}") for u in USERS for channel in ("push", "email", "sms")]
    consent = [c for c in consent if not (c[1] == "push" and c[0] in NO_PUSH)]
    catalog.write(spark, spark.createDataFrame(consent, catalog.spec("silver.consent").ddl), "silver.consent", "upsert")
    rng = np.random.default_rng(11)  # orders in (D0, D0 + 3]: treated lapsed users convert at BASE + TRUE_UPLIFT
    orders = []
    for user in LAPSED:
        rate = BASE + (TRUE_UPLIFT if arm_of("lapsed_email", user, 0.25) == "treatment" else 0.0)
        if rng.random() < rate:
            day = DAYS[1 + rng.integers(0, 3)]
            orders.append((f"o-{user}", user, _ts(day), 40.0, 0.0, 1, None, "salad", "paid", day, day))
    orders.append(("o-late", LAPSED[0], _ts(DAYS[4]), 40.0, 0.0, 1, None, "salad", "paid", DAYS[4], DAYS[4]))  # after the horizon
    catalog.write(spark, spark.createDataFrame(orders, catalog.spec("silver.orders").ddl), "silver.orders", "append")


def _withdraw(spark, catalog: Catalog, day: date) -> None:
    row = [(WITHDRAWS_EMAIL, "email", False, _ts(day, 1), "c-withdrawn")]
    catalog.write(spark, spark.createDataFrame(row, catalog.spec("silver.consent").ddl), "silver.consent", "upsert")


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("campaigns")
    conf = _conf(root)
    catalog = Catalog(str(root / "lake"), conf)
    _write_lake(spark, catalog)
    runs = {}
    for day in DAYS:
        if day == DAYS[1]:
            _withdraw(spark, catalog, day)  # landed on D1: holds from D1's run
        runs[day] = run_stage(RunContext(spark, catalog.lake, day, conf), "campaigns")
    return catalog, conf, runs, root


def _assigned(catalog, day=None, campaign=None) -> list[dict]:
    rows = read_table(catalog, "gold.campaign_assignments").to_dict("records")
    return [r for r in rows if (day is None or r["dt"] == day) and (campaign is None or r["campaign"] == campaign)]


def test_audiences_consent_and_entrants(lake):
    catalog = lake[0]
    vip = {d: {r["user_id"] for r in _assigned(catalog, d, "vip_retention")} for d in DAYS}
    assert vip[DAYS[0]] == set(VIP[DAYS[0]]) - NO_PUSH  # no push consent: never contacted, in neither arm
    assert vip[DAYS[1]] == set(USERS[100:150])  # entrants only
    assert vip[DAYS[2]] == set()
    second = {d: {r["user_id"] for r in _assigned(catalog, d, "second_order")} for d in DAYS}
    assert second[DAYS[0]] == set(NEW) and second[DAYS[1]] == set()
    email = {d: {r["user_id"] for r in _assigned(catalog, d, "lapsed_email")} for d in DAYS}
    assert WITHDRAWS_EMAIL in email[DAYS[0]] and all(WITHDRAWS_EMAIL not in email[d] for d in DAYS[1:])


def test_arms_keys_and_messages_match_the_python_hash(lake):
    for row in _assigned(lake[0]):
        holdout = {"vip_retention": 0.2, "lapsed_email": 0.25, "second_order": 0.3}[row["campaign"]]
        assert row["arm"] == arm_of(row["campaign"], row["user_id"], holdout)
        assert row["idempotency_key"] == idempotency_key(row["campaign"], row["user_id"], row["dt"])
    vip = _assigned(lake[0], DAYS[0], "vip_retention")[0]
    assert vip["message"] == "Your super_vip benefits miss you: a 20 yuan coupon for your next salad."
    email = _assigned(lake[0], DAYS[0], "lapsed_email")[0]
    assert email["message"].startswith("It has been 30 days:")


def test_frequency_cap_across_campaigns(lake):
    rows = _assigned(lake[0])
    for day in DAYS:
        window = [r for r in rows if day - timedelta(days=7) < r["dt"] <= day and r["arm"] == "treatment"]
        per_user = {}
        for r in window:
            per_user[r["user_id"]] = per_user.get(r["user_id"], 0) + 1
        assert max(per_user.values()) <= 2, day
    # a lapsed treated user got e-mails on D0 and D1, then reached the cap
    treated = next(u for u in LAPSED if u != WITHDRAWS_EMAIL and u not in VIP[DAYS[1]] and arm_of("lapsed_email", u, 0.25) == "treatment")
    assert sorted(r["dt"] for r in rows if r["user_id"] == treated and r["campaign"] == "lapsed_email") == DAYS[:2]
    # holdout users are not contacts, so they stay assigned every day (the comparison group keeps its size)
    held = next(u for u in LAPSED if u != WITHDRAWS_EMAIL and u not in VIP[DAYS[1]] and arm_of("lapsed_email", u, 0.25) == "holdout")
    assert sorted(r["dt"] for r in rows if r["user_id"] == held) == DAYS


def test_results_after_the_horizon_hold_the_true_uplift(lake, capsys):
    catalog, conf, runs, root = lake
    assert runs[DAYS[2]].notes["measured"] == 0  # D0 + 3 is the first date whose horizon has passed for D0
    rows = latest_results(catalog, "lapsed_email")
    first = rows[rows["send_dt"] == DAYS[0]].iloc[0]
    assert first["treated"] + first["holdout"] == len(LAPSED)
    assert first["uplift_low"] <= TRUE_UPLIFT <= first["uplift_high"]
    assert first["holdout_conversion"] == pytest.approx(BASE, abs=0.15)
    assert first["profit"] == pytest.approx(first["incremental_revenue"] - 6.0 * first["treated_converted"])
    assert main(["campaign", "report", "lapsed_email", "--lake", catalog.lake, "--conf", str(conf.dir)]) == 0
    out = capsys.readouterr().out
    assert "lapsed_email" in out and "chart written to" in out
    assert os.path.getsize(out.strip().splitlines()[-1].split("chart written to ")[1]) > 1000


def test_rerun_gives_the_same_assignments(lake, spark):
    catalog, conf, runs, root = lake
    before = sorted((r["campaign"], r["user_id"], r["arm"]) for r in _assigned(catalog, DAYS[1]))
    run_stage(RunContext(spark, catalog.lake, DAYS[1], conf), "campaigns")
    assert sorted((r["campaign"], r["user_id"], r["arm"]) for r in _assigned(catalog, DAYS[1])) == before


def test_the_gate_refuses_an_assignment_without_consent(lake, spark):
    from portrait.gates import GateFailed

    catalog, conf, runs, root = lake
    version = catalog.version("gold.campaign_assignments")
    import jobs.campaigns as job  # consent filtering switched off: U120, who withdrew e-mail, is assigned on D4

    original = job.assignment.consenting
    job.assignment.consenting = lambda users, consent, channel: users
    try:
        with pytest.raises(GateFailed, match="assigned_users_consent"):
            run_stage(RunContext(spark, catalog.lake, DAYS[4], conf), "campaigns")
    finally:
        job.assignment.consenting = original
    assert catalog.version("gold.campaign_assignments") == version  # nothing published


def test_deliveries_stage_reaches_the_three_channels(lake, spark, monkeypatch):
    catalog, conf, runs, root = lake
    drop = root / "sms_drop"
    with WebhookPeer(SECRET.encode(), fail_first=1) as push, SmtpPeer() as mail:
        monkeypatch.setenv("PORTRAIT_PUSH_URL", push.url)
        monkeypatch.setenv("PORTRAIT_PUSH_SECRET", SECRET)
        monkeypatch.setenv("PORTRAIT_SMTP_URL", mail.url)
        monkeypatch.setenv("PORTRAIT_SMS_DROP", str(drop))
        first = run_stage(RunContext(spark, catalog.lake, DAYS[0], conf), "deliveries")
        again = run_stage(RunContext(spark, catalog.lake, DAYS[0], conf), "deliveries")
    treated = {
        c: {r["idempotency_key"] for r in _assigned(catalog, DAYS[0], c) if r["arm"] == "treatment"}
        for c in ("vip_retention", "lapsed_email", "second_order")
    }
    assert set(push.received) == treated["vip_retention"] and push.total == len(treated["vip_retention"])
    assert {m["X-Idempotency-Key"] for m in mail.messages} == treated["lapsed_email"] and len(mail.messages) == len(treated["lapsed_email"])
    dropped = [r for f in sorted(os.listdir(drop)) for r in csv.DictReader(open(drop / f, encoding="utf-8"))]
    assert {r["idempotency_key"] for r in dropped} == treated["second_order"] and len(dropped) == len(treated["second_order"])
    assert all(v["skipped"] == 0 for v in first.notes["deliveries"].values())
    assert {name: v["skipped"] for name, v in again.notes["deliveries"].items()} == {c: len(k) for c, k in treated.items()}
    outbox = catalog.read(spark, "ops.campaign_deliveries").groupBy("campaign", "status").count().collect()
    assert {(r["campaign"], r["status"]): r["count"] for r in outbox} == {(c, "delivered"): len(k) for c, k in treated.items()}
