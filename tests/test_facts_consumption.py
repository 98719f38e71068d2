"""Consumption tags on hand-made orders; expected values worked out in the comments.

Snapshot D = 2026-07-31. Windows (conf/tags.yaml, both ends inclusive):
30d = D-29..D, slices 30_20d = D-29..D-20, 20_10d = D-19..D-10, 10d = D-9..D, 90d = D-89..D.
"""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from fact_rows import D, ago, by_user, check_declared_schema, tag_dictionary, users
from portrait.subprofiles.consumption import at_least_score, consumption, recency_score

ORDERS = "user_id string, dt date, amount double, coupon_amount double"
REFUNDS = "user_id string, dt date, refund_amount double"


@pytest.fixture(scope="module")
def tags():
    return tag_dictionary()


@pytest.fixture(scope="module")
def result(spark, tags):
    orders = [
        # window edges: one order on each side of every boundary
        ("edges", ago(30), 1000.0, 0.0),  # 90d only (D-30 is the first day outside 30d)
        ("edges", ago(29), 10.0, 5.0),  # first day of 30d and of 30_20d
        ("edges", ago(20), 20.0, 0.0),  # last day of 30_20d
        ("edges", ago(19), 30.0, 5.0),  # first day of 20_10d
        ("edges", ago(10), 40.0, 0.0),  # last day of 20_10d
        ("edges", ago(9), 50.0, 0.0),  # first day of 10d
        ("edges", ago(-1), 5000.0, 0.0),  # D+1: after the snapshot, ignored
        # exactly one order, of exactly 200 yuan, on D
        ("one_order_200", D, 200.0, 0.0),
        ("one_order_below", ago(5), 199.99, 0.0),
        ("super", ago(1), 300.0, 0.0),
        ("super", ago(2), 300.0, 0.0),
        # eight orders of 100 in the last 8 days: R 5, F 4 (>= 8), M 4 (>= 600)
        *[("champion", ago(n), 100.0, 0.0) for n in range(8)],
        ("lapsed", ago(61), 80.0, 0.0),
    ]
    refunds = [("edges", ago(29), 5.0), ("edges", ago(30), 7.0)]
    everyone = users(spark, "potential", "edges", "one_order_200", "one_order_below", "super", "champion", "lapsed")
    df = consumption(everyone, spark.createDataFrame(orders, ORDERS), spark.createDataFrame(refunds, REFUNDS), D, tags)
    check_declared_schema(df, "profile.consumption")
    return by_user(df)


def test_every_user_has_a_row(result):
    assert set(result) == {"potential", "edges", "one_order_200", "one_order_below", "super", "champion", "lapsed"}


def test_potential_user_gets_zeros_and_nulls_not_a_missing_row(result):
    row = result["potential"]
    assert row["lifecycle_stage"] == "potential"
    assert (row["orders_total"], row["orders_30d"], row["spend_30d"], row["spend_90d"], row["refund_count_30d"]) == (0, 0, 0.0, 0.0, 0)
    assert row["first_order_dt"] is None and row["days_since_last_order"] is None
    assert row["vip_tier"] == "regular"
    assert (row["rfm_r"], row["rfm_f"], row["rfm_m"], row["rfm_segment"]) == (None, None, None, None)
    assert row["avg_order_value_90d"] is None and row["coupon_share_90d"] is None
    assert row["dt"] == D


def test_sliced_windows_start_and_end_on_the_declared_days(result):
    row = result["edges"]
    # 30_20d: D-29 (10) + D-20 (20); 20_10d: D-19 (30) + D-10 (40); 10d: D-9 (50); D-30 only in 90d
    assert (row["spend_30_20d"], row["spend_20_10d"], row["spend_10d"]) == (30.0, 70.0, 50.0)
    assert (row["orders_30_20d"], row["orders_20_10d"], row["orders_10d"]) == (2, 2, 1)
    assert (row["spend_30d"], row["orders_30d"]) == (150.0, 5)
    assert (row["spend_90d"], row["orders_90d"]) == (1150.0, 6)
    # the order on D+1 is not seen: 6 orders, the last on D-9
    assert row["orders_total"] == 6 and row["lifecycle_stage"] == "old"
    assert (row["first_order_dt"], row["last_order_dt"], row["days_since_last_order"]) == (ago(30), ago(9), 9)
    assert row["avg_order_value_90d"] == pytest.approx(1150.0 / 6)
    assert row["coupon_share_90d"] == pytest.approx(2 / 6)  # D-29 and D-19 had a coupon
    # refunds: D-29 counts, D-30 does not
    assert (row["refund_count_30d"], row["refund_amount_30d"]) == (1, 5.0)


def test_exactly_one_order_is_new_and_exactly_200_yuan_is_vip(result):
    row = result["one_order_200"]
    assert (row["lifecycle_stage"], row["orders_total"]) == ("new", 1)
    assert (row["spend_30d"], row["vip_tier"]) == (200.0, "vip")
    assert row["days_since_last_order"] == 0
    # R 5 (0 days), F 1 (1 order < 2), M 2 (200 >= 100, < 300): a new customer
    assert (row["rfm_r"], row["rfm_f"], row["rfm_m"], row["rfm_segment"]) == (5, 1, 2, "new_customers")
    assert result["one_order_below"]["vip_tier"] == "regular"  # 199.99


def test_super_vip_from_600_and_segments(result):
    assert (result["super"]["spend_30d"], result["super"]["vip_tier"], result["super"]["lifecycle_stage"]) == (600.0, "super_vip", "old")
    champion = result["champion"]
    assert (champion["rfm_r"], champion["rfm_f"], champion["rfm_m"], champion["rfm_segment"]) == (5, 4, 4, "champions")
    assert champion["vip_tier"] == "super_vip"  # 800 in 30 days
    # edges: R 4 (9 days), F 3 (6 orders), M 5 (1150): loyal (r 3-5, f 3-5), not champions (f 3)
    assert result["edges"]["rfm_segment"] == "loyal"
    # lapsed: one order 61 days ago -> R 1, F 1: lost
    assert (result["lapsed"]["rfm_r"], result["lapsed"]["rfm_segment"]) == (1, "lost")


def test_thresholds_come_from_the_dictionary(spark):
    cheap_vip = tag_dictionary(vip_tier={"vip_min_spend_30d": 100})
    orders = spark.createDataFrame([("u", D, 150.0, 0.0)], ORDERS)
    row = by_user(consumption(users(spark, "u"), orders, spark.createDataFrame([], REFUNDS), D, cheap_vip))["u"]
    assert row["vip_tier"] == "vip"


def test_rfm_scores_use_fixed_bins_at_their_edges(spark, tags):
    # R: 5 if <= 7 days, 4 if <= 14, 3 if <= 30, 2 if <= 60, else 1
    days = [0, 7, 8, 14, 15, 30, 31, 60, 61]
    df = spark.createDataFrame([(d,) for d in days], "days int").select("days", recency_score(F.col("days"), tags).alias("r"))
    assert [r["r"] for r in df.orderBy("days").collect()] == [5, 5, 4, 4, 3, 3, 2, 2, 1]
    # F: 5 if >= 13 orders, 4 if >= 8, 3 if >= 4, 2 if >= 2, else 1; M likewise with 1000/600/300/100 yuan
    orders = [1, 2, 3, 4, 7, 8, 12, 13]
    df = spark.createDataFrame([(o,) for o in orders], "n bigint").select(
        "n", at_least_score(F.col("n"), tags.threshold("rfm_f", "min_orders_for_score")).alias("f")
    )
    assert [r["f"] for r in df.orderBy("n").collect()] == [1, 2, 2, 3, 3, 4, 4, 5]
    spend = [99.99, 100.0, 299.0, 300.0, 599.0, 600.0, 999.0, 1000.0]
    df = spark.createDataFrame([(s,) for s in spend], "spend double").select(
        "spend", at_least_score(F.col("spend"), tags.threshold("rfm_m", "min_spend_for_score")).alias("m")
    )
    assert [r["m"] for r in df.orderBy("spend").collect()] == [1, 2, 2, 3, 3, 4, 4, 5]
