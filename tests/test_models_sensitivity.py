"""Price and discount sensitivity: cheapness within a category, empirical-Bayes shrinkage, the scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from portrait.models import sensitivity
from portrait.models.sensitivity import MAX_STRENGTH, Shrinkage


def test_cheapness_is_the_share_of_dearer_units_with_ties_half():
    items = pd.DataFrame({"category": ["a", "a", "a", "b"], "price": [10.0, 20.0, 30.0, 99.0], "qty": [1, 2, 1, 3]})
    # category a: 4 units; at 10: 3 dearer + half of 1 tie; at 20: 1 dearer + half of 2; at 30: half of 1
    assert sensitivity.cheapness(items).tolist() == [3.5 / 4, 2 / 4, 0.5 / 4, 0.5]


def test_shrinkage_by_hand():
    events = pd.DataFrame({"user_id": list("aaaabbbbcccc"), "x": [1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]})
    totals = sensitivity.user_totals(events, "x")
    fitted = sensitivity.fit_shrinkage(totals)
    # mean 6/12; within-user variance (1 + 0 + 0) / 9; between = var of means (1/6) - within * mean(1/n) = 5/36
    assert fitted.mean == pytest.approx(0.5)
    assert fitted.strength == pytest.approx((1 / 9) / (5 / 36))
    shrunk = sensitivity.shrink(totals, fitted, pd.Series(["b", "new"]))
    assert shrunk.tolist() == pytest.approx([(4 + 0.8 * 0.5) / 4.8, 0.5])


def test_without_repeat_events_users_keep_their_own_rate_and_newcomers_get_the_mean():
    totals = sensitivity.user_totals(pd.DataFrame({"user_id": ["a", "b", "c"], "x": [1, 0, 1]}), "x")
    fitted = sensitivity.fit_shrinkage(totals)  # no user with two events: no within-user noise measurable
    assert sensitivity.shrink(totals, fitted, pd.Series(["a", "b", "new"])).tolist() == pytest.approx([1, 0, 2 / 3], abs=1e-5)


def test_users_who_do_not_differ_all_get_the_mean():
    events = pd.DataFrame({"user_id": np.repeat(["a", "b", "c"], 4), "x": [1, 0, 1, 0] * 3})
    fitted = sensitivity.fit_shrinkage(sensitivity.user_totals(events, "x"))
    assert fitted == Shrinkage(0.5, MAX_STRENGTH)


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(4)
    items, orders = [], []
    for i in range(200):  # a population whose price and coupon habits differ
        cheap, coupon = rng.beta(2, 2), rng.beta(1.5, 3)
        for _ in range(rng.integers(2, 12)):
            price = rng.choice([25.0, 35.0, 45.0, 55.0], p=np.array([cheap, cheap / 2, (1 - cheap) / 2, 1 - cheap]) / 1.5)
            items.append({"user_id": f"u{i}", "category": "fruit", "price": price, "qty": 1})
            orders.append({"user_id": f"u{i}", "coupon_amount": 5.0 if rng.random() < coupon else 0.0})
    special = [("cheap", 25.0, 5.0, 10), ("dear", 55.0, 0.0, 10), ("one_coupon", 35.0, 5.0, 1)]
    for user, price, coupon, n in special:
        items += [{"user_id": user, "category": "fruit", "price": price, "qty": 1}] * n
        orders += [{"user_id": user, "coupon_amount": coupon}] * n
    items, orders = pd.DataFrame(items), pd.DataFrame(orders)
    users = pd.Series(sorted(set(orders["user_id"])) + ["never_bought"])
    result, fitted = sensitivity.score(items, orders, users)
    return result.set_index("user_id"), fitted


def test_scores_rank_habits_and_stay_in_the_unit_interval(scored):
    result, fitted = scored
    assert result.columns.tolist() == ["price_sensitivity", "discount_sensitivity"]
    assert ((result >= 0) & (result <= 1)).all().all() and result.notna().all().all()
    price = result["price_sensitivity"]
    assert price["cheap"] > price.quantile(0.9) and price["dear"] < price.quantile(0.1)
    assert result.loc["cheap", "discount_sensitivity"] > result["discount_sensitivity"].quantile(0.9)
    assert result.loc["never_bought"].tolist() == pytest.approx(
        [fitted["price_sensitivity"]["mean"], fitted["discount_sensitivity"]["mean"]]
    )


def test_one_coupon_order_is_weaker_evidence_than_ten(scored):
    result, fitted = scored
    mean = fitted["discount_sensitivity"]["mean"]
    assert mean < result.loc["one_coupon", "discount_sensitivity"] < result.loc["cheap", "discount_sensitivity"]
