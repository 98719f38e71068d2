"""A campaign end to end on a generated lake: the real daily run measures the generator's true effect.

5,000 users generated over the send date and the horizon's five days, with a
campaign effect on vip_retention (push): after the send date a user in its
treatment arm (the pipeline's own hash) never churns. The run of the send date
assigns every registered user with push consent (holdout 50 %), and two small
audiences by e-mail and SMS; a `portrait campaign send` killed while the
webhook holds its third batch, then the deliveries stage, reach the three real
peers; the run five days later measures the send date. The truth is the
generator's: each treated user's conversion (a converting order within the
horizon) with the campaign, and in the world without it (their sessions and
orders drawn again with the lifetime they had before the effect).
"""

from __future__ import annotations

import csv
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from campaign_peers import SmtpPeer, WebhookPeer, kill_sender_mid_batch
from portrait.campaigns.assignment import arm_of
from portrait.campaigns.report import latest_results, read_table
from portrait.cli import main
from portrait.core.config import Conf
from portrait.core.tables import Catalog
from portrait.devtools.generate import CampaignEffect, generate, read_truth

pytestmark = pytest.mark.slow  # a generated lake, two full daily runs and four to aggregate (about 1-3 minutes)

REPO = Path(__file__).resolve().parents[1]
USERS, SEED, HORIZON, HOLDOUT, BATCH = 5000, 7, 5, 0.5, 100
SEND = date(2026, 9, 24)  # the first landing date: the campaign is active on it alone
MEASURED = SEND + timedelta(days=HORIZON)
SECRET = "generated-lake-secret"
EVERYONE = "lifecycle_stage in ('potential', 'new', 'old')"


def _conf(root: Path) -> Path:
    """The repo's conf with the three campaigns active on SEND only, a short horizon and audiences a one-day lake has."""
    shutil.copytree(REPO / "conf", root / "conf")
    declared = yaml.safe_load((root / "conf" / "campaigns.yaml").read_text())
    audiences = {"vip_retention": EVERYONE, "second_order": "lifecycle_stage == 'new'", "lapsed_email": "lifecycle_stage == 'new'"}
    for name, spec in declared["campaigns"].items():
        spec.update(audience={"rule": audiences[name]}, start=str(SEND), end=str(SEND), horizon_days=HORIZON)
    declared["campaigns"]["vip_retention"]["holdout"] = HOLDOUT
    for channel in declared["channels"].values():
        channel.update(batch_size=BATCH, backoff_seconds=0.01)
    (root / "conf" / "campaigns.yaml").write_text(yaml.safe_dump(declared, allow_unicode=True, sort_keys=False))
    return root / "conf"


def _run(lake: str, conf: Path, *args: str) -> None:
    assert main(["run", *args, "--lake", lake, "--conf", str(conf)]) == 0


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign_generated")
    conf, lake = _conf(root), str(root / "lake")
    effect = CampaignEffect("vip_retention", HOLDOUT, SEND, hazard_reduction=1.0)
    generate(lake, users=USERS, days=HORIZON + 1, end_date=MEASURED, seed=SEED, campaign_effects=[effect])
    _run(lake, conf, "--date", str(SEND), "--to", "campaigns")
    drop = root / "sms_drop"
    with WebhookPeer(SECRET.encode()) as push, SmtpPeer() as mail, pytest.MonkeyPatch.context() as env:
        channels = {
            "PORTRAIT_PUSH_URL": push.url,
            "PORTRAIT_PUSH_SECRET": SECRET,
            "PORTRAIT_SMTP_URL": mail.url,
            "PORTRAIT_SMS_DROP": str(drop),
        }
        send = ["campaign", "send", "vip_retention", "--date", str(SEND), "--lake", lake, "--conf", str(conf)]
        kill_sender_mid_batch(push, 3, send, {**os.environ, **channels})
        killed = read_table(Catalog(lake, Conf(conf)), "ops.campaign_deliveries")
        for name, value in channels.items():
            env.setenv(name, value)
        _run(lake, conf, "--date", str(SEND), "--from", "deliveries")
    _run(lake, conf, "--date", str(SEND + timedelta(days=1)), "--until", str(MEASURED - timedelta(days=1)), "--to", "aggregate")
    _run(lake, conf, "--date", str(MEASURED), "--to", "campaigns")
    return {"catalog": Catalog(lake, Conf(conf)), "conf": conf, "push": push, "mail": mail, "drop": drop, "killed": killed}


def _assigned(catalog: Catalog, campaign: str):
    rows = read_table(catalog, "gold.campaign_assignments", [("campaign", "=", campaign)])
    assert set(rows["dt"]) == {SEND}
    return rows


def _treated_keys(catalog: Catalog, campaign: str) -> set[str]:
    rows = _assigned(catalog, campaign)
    return set(rows.loc[rows["arm"] == "treatment", "idempotency_key"])


def _converted(first_order, users) -> float:
    """The share of ``users`` whose first converting order after SEND falls within the horizon."""
    dates = first_order.loc[users]
    return float((dates.notna() & (dates <= MEASURED)).mean())


def test_every_consenting_user_is_assigned_in_the_generators_arm(lake):
    catalog = lake["catalog"]
    rows = _assigned(catalog, "vip_retention")
    history = read_table(catalog, "silver.consent_history")
    known = history[(history["landing_dt"] <= SEND) & (history["channel"] == "push")]  # what SEND's run knew
    latest = known.sort_values("ts").groupby("user_id")["status"].last()
    profiled = set(read_table(catalog, "gold.profile_snapshot", [("dt", "=", SEND)])["user_id"])
    pushable = set(latest.index[latest == "granted"]) & profiled
    assert set(rows["user_id"]) == pushable  # every profiled user with push consent, and no one else
    truth = read_truth(catalog.lake).set_index("user_id")
    assert (rows["arm"] == [arm_of("vip_retention", u, HOLDOUT) for u in rows["user_id"]]).all()
    assert ((rows["arm"] == "treatment") == truth.loc[rows["user_id"], "treated_vip_retention"].to_numpy()).all()
    for name in ("second_order", "lapsed_email"):
        assert (_assigned(catalog, name)["arm"] == "treatment").sum() > 20  # enough treated to reach their channel


def test_the_three_channels_receive_each_treated_user_once_through_a_kill(lake):
    catalog, push = lake["catalog"], lake["push"]
    treated = {name: _treated_keys(catalog, name) for name in ("vip_retention", "lapsed_email", "second_order")}
    acknowledged = set(lake["killed"]["idempotency_key"])
    assert len(acknowledged) == 2 * BATCH  # the killed sender recorded two batches; the receiver had processed a third
    assert set(push.received) == treated["vip_retention"] and len(push.processed) == len(treated["vip_retention"])
    assert all(push.received[key] == 1 for key in acknowledged)  # nothing acknowledged was sent again
    assert push.total - len(treated["vip_retention"]) == BATCH  # only the batch whose answer was lost came twice
    assert push.bad_signatures == 0
    mail = [m["X-Idempotency-Key"] for m in lake["mail"].messages]
    assert set(mail) == treated["lapsed_email"] and len(mail) == len(treated["lapsed_email"])
    drop = lake["drop"]
    dropped = [row["idempotency_key"] for f in sorted(os.listdir(drop)) for row in csv.DictReader(open(drop / f, encoding="utf-8"))]
    assert set(dropped) == treated["second_order"] and len(dropped) == len(treated["second_order"])
    outbox = read_table(catalog, "ops.campaign_deliveries")
    delivered = outbox[outbox["status"] == "delivered"].groupby("campaign")["idempotency_key"].apply(set).to_dict()
    assert delivered == treated


def test_the_measured_uplift_holds_the_true_uplift(lake, capsys):
    catalog = lake["catalog"]
    rows = latest_results(catalog, "vip_retention")
    assert list(rows["send_dt"]) == [SEND] and list(rows["measured_dt"]) == [MEASURED]
    result = rows.iloc[0]
    assigned = _assigned(catalog, "vip_retention")
    treated = list(assigned.loc[assigned["arm"] == "treatment", "user_id"])
    assert (result["treated"], result["holdout"]) == (len(treated), len(assigned) - len(treated))
    truth = read_truth(catalog.lake).set_index("user_id")
    with_campaign = _converted(truth["first_order_after_vip_retention"], treated)
    true_uplift = with_campaign - _converted(truth["first_order_untreated_vip_retention"], treated)
    # the lake measures the conversions the generator made (a few landed after the horizon or spoiled by the dirt)
    assert result["treated_conversion"] == pytest.approx(with_campaign, abs=0.01)
    assert result["uplift_low"] <= true_uplift <= result["uplift_high"]
    assert result["uplift_low"] > 0  # the effect is large enough to be seen: a pipeline that lost it fails here
    assert main(["campaign", "report", "vip_retention", "--lake", catalog.lake, "--conf", str(lake["conf"])]) == 0
    report = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{report}true uplift on the treated {true_uplift:+.3f} (treated conversion {with_campaign:.3f} with the campaign)")
