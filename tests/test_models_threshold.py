"""The profit-optimal churn threshold, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.models import threshold


def test_profit_curve_by_hand():
    # contact costs 10; a kept churner is worth 100 and a contact keeps half of them:
    # expected gain per user = p * 50 - 10 -> 35 for 0.9, 15 for 0.5, 0 for 0.2 (break-even at 0.2)
    curve = threshold.profit_curve([0.9, 0.5, 0.2], retention_cost=10, success_rate=0.5, value=100, step=0.1, churned=[1, 0, 1]).set_index(
        "threshold"
    )
    assert curve.loc[0.0, ["targeted", "expected_revenue", "cost", "expected_profit"]].tolist() == pytest.approx([3, 80, 30, 50])
    assert curve.loc[0.3, "expected_profit"] == pytest.approx(50)  # dropping the break-even user changes nothing
    assert curve.loc[0.5, "targeted"] == 2  # p >= t: 0.5 is still targeted at 0.5
    assert curve.loc[0.6, ["targeted", "expected_saved", "expected_profit"]].tolist() == pytest.approx([1, 0.45, 35])
    assert curve.loc[1.0, ["targeted", "expected_profit"]].tolist() == [0, 0]
    # realised: the 0.9 and the 0.2 user churned; each saved churner brings 50
    assert curve.loc[0.0, "realised_profit"] == pytest.approx(2 * 50 - 30)
    assert curve.loc[0.6, "realised_profit"] == pytest.approx(50 - 10)
    assert threshold.best_threshold(curve.reset_index()) == pytest.approx(0.5)  # the highest of the equally good


def test_value_per_user_favours_valuable_users():
    curve = threshold.profit_curve([0.6, 0.6, 0.3], retention_cost=10, success_rate=0.5, value=[200, 20, 200], step=0.05)
    row = curve.set_index("threshold").loc[0.3]
    assert row["expected_revenue"] == pytest.approx(0.6 * 0.5 * 200 + 0.6 * 0.5 * 20 + 0.3 * 0.5 * 200)


def test_best_threshold_of_calibrated_probabilities_is_the_break_even_point():
    p = np.random.default_rng(0).uniform(0, 1, 20_000)
    curve = threshold.profit_curve(p, retention_cost=8, success_rate=0.25, value=120)
    assert threshold.best_threshold(curve) == pytest.approx(8 / (0.25 * 120), abs=0.011)


def test_probabilities_outside_the_unit_interval_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        threshold.profit_curve([0.5, 1.2], retention_cost=1, success_rate=0.5, value=10)


def test_bins_with_each_users_value_match_the_per_user_curve():
    import pandas as pd

    p, values = [0.91, 0.55, 0.55, 0.2], [300.0, 50.0, 10.0, 80.0]
    per_user = threshold.profit_curve(p, retention_cost=5, success_rate=0.4, value=values, step=0.1)
    bins = pd.DataFrame({"bin": [9, 5, 5, 2], "users": [1, 1, 1, 1], "p_sum": p, "pv_sum": [a * b for a, b in zip(p, values)]})
    binned = threshold.profit_curve_from_bins(bins, retention_cost=5, success_rate=0.4, value=999.0, step=0.1)  # value unused
    assert binned["expected_profit"].to_numpy() == pytest.approx(per_user["expected_profit"].to_numpy())


def test_success_rate_from_a_measured_uplift():
    # holdout: 40 % order within the horizon, so 60 % would churn; a +0.15 uplift keeps 0.15 / 0.6 = 25 % of them
    assert threshold.success_rate_from_uplift(0.15, 0.4) == pytest.approx(0.25)
    assert threshold.success_rate_from_uplift(-0.05, 0.4) == 0.0 and threshold.success_rate_from_uplift(0.1, 1.0) == 0.0
