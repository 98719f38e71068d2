"""Per-product-line tags on hand-made events and orders; expected values worked out in the comments.

Snapshot D = 2026-07-31. Usage = events + orders on the line in 30d = D-29..D;
share = the line's usage / the user's usage; intensity: heavy (share >= 0.5 and >= 4 active
days), medium (>= 0.2, >= 2 days), light (used), none; status by days since last use in
90d: active <= 7, at_risk <= 30, lapsed later, unused when not used in D-89..D.
"""

from __future__ import annotations

import pytest

from fact_rows import D, ago, by_user, check_declared_schema, tag_dictionary, users
from portrait.subprofiles.product_line import product_line

LINES = ["salad", "content", "video"]
USAGE = "user_id string, dt date, product_line string"


@pytest.fixture(scope="module")
def result(spark):
    events = [
        *[("laowang", ago(n), "salad") for n in range(10)],  # 10 events on 10 days
        ("laowang", ago(3), "content"),
        ("laowang", ago(3), "content"),  # 2 events, 1 day
        ("laowang", ago(40), "video"),  # outside 30d
        ("one_line", ago(8), "content"),  # share 1.0 but 1 active day
        *[("split", ago(n), line) for n in range(4) for line in ("content", "video")],  # 0.5 each on 4 days
        ("status", ago(7), "salad"),
        ("status", ago(30), "content"),
        ("status", ago(31), "video"),
        ("old_news", ago(90), "salad"),  # outside the 90-day lookback
        ("old_news", ago(-1), "video"),  # after D
    ]
    orders = [("laowang", D, "salad"), ("laowang", ago(1), "salad")]
    everyone = users(spark, "laowang", "one_line", "split", "status", "old_news")
    df = product_line(everyone, spark.createDataFrame(events, USAGE), spark.createDataFrame(orders, USAGE), D, tag_dictionary(), LINES)
    check_declared_schema(df, "profile.product_line")
    return by_user(df, key=("user_id", "product_line"))


def test_every_user_has_a_row_for_every_line(result):
    assert set(result) == {(user, line) for user in ("laowang", "one_line", "split", "status", "old_news") for line in LINES}


def test_heavy_on_one_line_light_on_another(result):
    salad, content, video = (result[("laowang", line)] for line in LINES)
    # salad: 10 events + 2 orders = 12 of 14, on 10 days -> heavy; content: 2 of 14 on 1 day -> light
    assert (salad["line_usage_30d"], salad["line_active_days_30d"], salad["line_intensity"]) == (12, 10, "heavy")
    assert salad["line_usage_share_30d"] == pytest.approx(12 / 14)
    assert (content["line_usage_30d"], content["line_usage_share_30d"], content["line_intensity"]) == (2, pytest.approx(2 / 14), "light")
    # video: used 40 days ago only
    assert (video["line_usage_30d"], video["line_intensity"], video["days_since_last_use"], video["line_status"]) == (
        0,
        "none",
        40,
        "lapsed",
    )
    assert (salad["line_status"], salad["days_since_last_use"], content["line_status"]) == ("active", 0, "active")


def test_intensity_thresholds_are_inclusive_and_need_active_days(result):
    one_line = result[("one_line", "content")]
    assert (one_line["line_usage_share_30d"], one_line["line_active_days_30d"], one_line["line_intensity"]) == (1.0, 1, "light")
    for line in ("content", "video"):  # share exactly 0.5 on exactly 4 days
        assert (result[("split", line)]["line_usage_share_30d"], result[("split", line)]["line_intensity"]) == (0.5, "heavy")


def test_status_thresholds_are_inclusive(result):
    assert result[("status", "salad")]["line_status"] == "active"  # 7 days
    assert result[("status", "content")]["line_status"] == "at_risk"  # 30 days
    assert result[("status", "video")]["line_status"] == "lapsed"  # 31 days
    assert result[("one_line", "content")]["line_status"] == "at_risk"  # 8 days


def test_unused_lines_get_zeros(result):
    for line in LINES:
        row = result[("old_news", line)]
        assert (row["line_usage_30d"], row["line_usage_share_30d"], row["line_intensity"], row["line_status"]) == (0, 0.0, "none", "unused")
        assert row["days_since_last_use"] is None and row["dt"] == D
