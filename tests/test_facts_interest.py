"""Interest weights on hand-made signals; expected values worked out in the comments.

Snapshot D = 2026-07-31. Signal weights view 1, play 1, add_cart 3, order item 5,
decayed by 0.5^(days_ago / 14); window 90d = D-89..D; weight = score / the user's top score.
"""

from __future__ import annotations

import pytest

from fact_rows import D, ago, by_user, check_declared_schema, tag_dictionary, users
from portrait.subprofiles.interest import interest

EVENTS = "user_id string, dt date, event_type string, category string"
ITEMS = "user_id string, dt date, category string"


@pytest.fixture(scope="module")
def result(spark):
    events = [
        ("mixed", D, "view", "fruit"),  # 1
        ("mixed", ago(14), "add_cart", "fruit"),  # 3 x 0.5 = 1.5 -> fruit 2.5
        ("mixed", ago(89), "view", "vegetable"),  # first day of the window: 0.5^(89/14)
        ("mixed", ago(90), "view", "seafood"),  # outside the window
        ("mixed", D, "click", "seafood"),  # not a signal
        ("mixed", D, "app_open", None),  # no category
        ("mixed", ago(-1), "add_cart", "seafood"),  # after D
        ("tied", D, "play", "drama"),
        ("tied", D, "play", "comedy"),
        (None, D, "view", "fruit"),  # anonymous
    ]
    items = [("mixed", ago(28), "chicken")]  # 5 x 0.25 = 1.25
    everyone = users(spark, "mixed", "tied", "quiet")
    df = interest(everyone, spark.createDataFrame(events, EVENTS), spark.createDataFrame(items, ITEMS), D, tag_dictionary())
    check_declared_schema(df, "profile.interest")
    return by_user(df)


def test_decayed_scores_normalised_to_the_favourite(result):
    row = result["mixed"]
    weights = {w["category"]: w for w in row["interest_weights"]}
    assert set(weights) == {"fruit", "chicken", "vegetable"}
    assert weights["fruit"]["score"] == pytest.approx(2.5)
    assert weights["chicken"]["score"] == pytest.approx(1.25)
    assert weights["vegetable"]["score"] == pytest.approx(0.5 ** (89 / 14))
    assert [w["weight"] for w in row["interest_weights"]] == pytest.approx([1.0, 0.5, 0.5 ** (89 / 14) / 2.5])
    assert row["top_interests"] == ["fruit", "chicken", "vegetable"]
    assert row["interest_signals_90d"] == 4  # view + add_cart of fruit, the order item, the D-89 view


def test_ties_are_ordered_by_category_name(result):
    assert result["tied"]["top_interests"] == ["comedy", "drama"]
    assert [w["weight"] for w in result["tied"]["interest_weights"]] == [1.0, 1.0]


def test_top_n_comes_from_the_dictionary(spark):
    events = spark.createDataFrame([("u", D, "view", c) for c in ("a", "b", "c", "d")], EVENTS)
    df = interest(users(spark, "u"), events, spark.createDataFrame([], ITEMS), D, tag_dictionary(top_interests={"top_n": 2}))
    row = by_user(df)["u"]
    assert row["top_interests"] == ["a", "b"] and len(row["interest_weights"]) == 4


def test_user_without_signals_gets_empty_lists(result):
    assert (result["quiet"]["interest_weights"], result["quiet"]["top_interests"], result["quiet"]["interest_signals_90d"]) == ([], [], 0)
