"""The generator's campaign effect: treated users (the pipeline's own hash) churn less from the campaign's start."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from portrait.campaigns.assignment import arm_of
from portrait.devtools.generate import CampaignEffect, generate, read_truth

pytestmark = pytest.mark.slow  # two 6,000-user lakes of 61 days (about 40 s idle, 90 s on a loaded machine)


def test_treated_users_churn_less_by_the_true_reduction(tmp_path):
    effect = CampaignEffect("vip_retention", 0.5, date(2026, 8, 1), 0.6)
    generate(tmp_path / "with", users=6000, days=61, end_date="2026-09-30", campaign_effects=[effect])
    generate(tmp_path / "without", users=6000, days=61, end_date="2026-09-30")
    truth, plain = read_truth(tmp_path / "with"), read_truth(tmp_path / "without")
    assert (truth["treated_vip_retention"] == [arm_of("vip_retention", u, 0.5) == "treatment" for u in truth["user_id"]]).all()
    assert (truth["hazard_reduction_vip_retention"] == 0.6).all()
    start = np.datetime64("2026-08-01")
    churned_before = plain["churn_date"].notna() & (plain["churn_date"].astype("datetime64[ns]") <= start)
    same = truth[churned_before.to_numpy()]
    assert (same["churn_date"].to_numpy() == plain[churned_before]["churn_date"].to_numpy()).all()  # the past is unchanged
    later = ~churned_before.to_numpy() & (truth["churn_hazard"] > 0).to_numpy()
    churned = truth["churn_date"].notna().to_numpy()
    treated = truth["treated_vip_retention"].to_numpy()
    rate_t, rate_h = churned[later & treated].mean(), churned[later & ~treated].mean()
    untreated_unchanged = (truth["churn_date"].fillna(date(1, 1, 1)) == plain["churn_date"].fillna(date(1, 1, 1))).to_numpy()[~treated]
    assert untreated_unchanged.all()  # the holdout keeps its lifetimes
    assert rate_t < 0.75 * rate_h, (rate_t, rate_h)  # a 60 % lower hazard: clearly fewer churn
