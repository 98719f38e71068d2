"""conf/campaigns.yaml at load: every reference checked with "did you mean"; results arithmetic by hand."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from portrait.campaigns import results
from portrait.campaigns.assignment import arm_of, hash_share
from portrait.campaigns.declarations import CampaignError, UnknownCampaign, compile_book, consent_channels, load_campaigns
from portrait.core.config import Conf, ConfError
from portrait.core.tables import Catalog
from portrait.core.validate import validate
from portrait.segments.rules import load_book

REPO = Path(__file__).resolve().parents[1]
CONF = Conf(REPO / "conf")
DECLARED = CONF.load("campaigns")


def _compile(change):
    declarations = copy.deepcopy(DECLARED)
    change(declarations)
    columns = Catalog(".", CONF).spec("gold.profile_snapshot").columns
    return compile_book(declarations, load_book(CONF), set(columns) - {"user_id", "dt"}, consent_channels(CONF))


def test_the_repo_campaigns_compile():
    book = load_campaigns(CONF)
    assert set(book.campaigns) == {"vip_retention", "second_order", "lapsed_email"}
    assert [c.name for c in book.campaigns.values() if c.retention] == ["vip_retention"]
    vip = book.campaign("vip_retention")
    assert vip.placeholders == ("vip_tier", "offer_value") and vip.consent == "push"
    assert vip.render({"vip_tier": "super_vip"}).startswith("Your super_vip benefits miss you: a 20 yuan coupon")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["campaigns"]["vip_retention"].update(audience={"segment": "vip_at_rsk"}), "did you mean 'vip_at_risk'"),
        (
            lambda d: d["campaigns"]["lapsed_email"].update(audience={"rule": "lifecycle_stag == 'old'"}),
            "unknown tag 'lifecycle_stag' (did you mean 'lifecycle_stage'",
        ),
        (
            lambda d: d["campaigns"]["vip_retention"].update(template="hi {vip_teir}"),
            "placeholder {vip_teir} is not a tag (did you mean 'vip_tier'",
        ),
        (lambda d: d["campaigns"]["vip_retention"].update(template="hi {offer_valu}"), "did you mean 'offer_value'"),
        (lambda d: d["campaigns"]["vip_retention"].update(channel="psh"), "channel 'psh' is not declared (did you mean 'push'"),
        (
            lambda d: d["campaigns"]["vip_retention"].update(consent="emial"),
            "consent 'emial' is not a consent channel (did you mean 'email'",
        ),
        (lambda d: d["channels"]["push"].update(consent="pushh"), "did you mean 'push'"),
        (lambda d: d["channels"]["push"].update(batchsize=3), "unknown setting 'batchsize' (did you mean 'batch_size'"),
        (lambda d: d["campaigns"]["vip_retention"].update(end="2025-01-01"), "end 2025-01-01 is before start"),
        (lambda d: d["campaigns"]["vip_retention"].update(offer={"value": 5, "cost": 9}), "cost 9 is above its value 5"),
        (lambda d: d["campaigns"]["second_order"].update(retention=True), "only one campaign may set retention"),
    ],
)
def test_bad_declarations_are_refused_with_the_campaign_and_a_hint(change, message):
    with pytest.raises(CampaignError, match=None) as error:
        _compile(change)
    assert message in str(error.value)


def test_validate_reports_schema_and_reference_problems(tmp_path):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    path = tmp_path / "conf" / "campaigns.yaml"
    declared = yaml.safe_load(path.read_text())
    declared["campaigns"]["vip_retention"]["holdot"] = 0.1
    path.write_text(yaml.safe_dump(declared, sort_keys=False))
    with pytest.raises(ConfError, match=r"campaigns.vip_retention.holdot: unknown setting \(did you mean 'holdout'\?\)"):
        validate(Conf(tmp_path / "conf"))
    del declared["campaigns"]["vip_retention"]["holdot"]
    declared["campaigns"]["vip_retention"]["template"] = "{vip_teir}"
    path.write_text(yaml.safe_dump(declared, sort_keys=False))
    with pytest.raises(ConfError, match="did you mean 'vip_tier'"):
        validate(Conf(tmp_path / "conf"))


def test_unknown_campaign_lists_the_declared():
    with pytest.raises(UnknownCampaign, match="did you mean 'vip_retention'"):
        load_campaigns(CONF).campaign("vip_retension")


def test_arms_are_stable_and_near_the_holdout_share():
    users = [f"U{i:06d}" for i in range(20000)]
    holdout = sum(arm_of("vip_retention", u, 0.2) == "holdout" for u in users) / len(users)
    assert holdout == pytest.approx(0.2, abs=0.01)
    assert [arm_of("vip_retention", u, 0.2) for u in users[:50]] == [arm_of("vip_retention", u, 0.2) for u in users[:50]]
    # another campaign draws independently
    same = sum((hash_share("a", u) < 0.5) == (hash_share("b", u) < 0.5) for u in users) / len(users)
    assert same == pytest.approx(0.5, abs=0.02)


def test_results_by_hand():
    # treated 400, 120 converted (0.30); holdout 100, 20 converted (0.20): uplift 0.10
    # se = sqrt(.3*.7/400 + .2*.8/100) = sqrt(0.000525 + 0.0016) = 0.046098
    r = results.measure(results.ArmFigures(400, 120, 150, 3000.0), results.ArmFigures(100, 20, 25, 400.0), offer_cost=5.0)
    assert r.uplift == pytest.approx(0.10)
    assert (r.uplift_low, r.uplift_high) == pytest.approx((0.10 - 1.959964 * 0.046098, 0.10 + 1.959964 * 0.046098), abs=1e-5)
    assert r.incremental_orders == pytest.approx((150 / 400 - 25 / 100) * 400)  # 50
    assert r.incremental_revenue == pytest.approx((3000 / 400 - 4.0) * 400)  # 1400
    assert r.offer_cost == 600.0 and r.profit == pytest.approx(800.0)
    with pytest.raises(ValueError, match="an arm is empty"):
        results.uplift_interval(10, 1, 0, 0)
