"""Consumption sub-profile (消费画像): lifecycle, spend by window, VIP tier, RFM.

One ``groupBy(user_id)`` over the user's non-cancelled orders computes every
count and sum as a conditional aggregate; the labels (lifecycle, VIP, RFM) are
then plain column rules over those figures, with thresholds from the dictionary.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portrait.subprofiles.common import days_between, first_match, ratio, snapshot_date, sum_in, with_days_ago, zero_if_missing
from portrait.subprofiles.daily import EVENT_COLUMNS, event_days, order_days, with_missing

if TYPE_CHECKING:  # imported for annotations only: the dictionary imports this package's DayWindow
    from portrait.tags.dictionary import TagDictionary


def consumption(users: DataFrame, orders: DataFrame, refunds: DataFrame, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """One row per user of ``users`` for snapshot date ``snapshot_dt``, from raw rows.

    users:   user_id, registered_dt - everyone known on D
    orders:  user_id, dt, amount, coupon_amount - non-cancelled orders known on D (all history:
             the lifecycle and the first order look back to the beginning)
    refunds: user_id, dt, refund_amount - refund events known on D
    """
    refund_events = with_missing(refunds.withColumn("event_type", F.lit("refund")), EVENT_COLUMNS)
    return consumption_from_days(users, order_days(orders), event_days(refund_events, 0), snapshot_dt, tags)


def consumption_from_days(users: DataFrame, orders: DataFrame, events: DataFrame, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """One row per user of ``users`` for snapshot date ``snapshot_dt``, from daily aggregates.

    users:  user_id, registered_dt - everyone known on D
    orders: user_id, dt, orders, amount, coupon_orders - per user and day (dws.user_orders_daily), all history
    events: user_id, dt, refunds, refund_amount - per user and day (dws.user_events_daily)
    A user and day may have several rows (one per landing day): every figure is a sum over them.
    """
    spend, counts = tags.windowed("spend"), tags.windowed("orders")
    coupon_orders = {column: f"_coupon_orders_{window.name}" for column, window in tags.windowed("coupon_share")}
    order_figures = (
        with_days_ago(orders, snapshot_dt)
        .groupBy("user_id")
        .agg(
            F.sum("orders").alias("orders_total"),
            F.min("dt").alias("first_order_dt"),
            F.max("dt").alias("last_order_dt"),
            *[sum_in(window, "amount").alias(column) for column, window in spend],
            *[sum_in(window, "orders").alias(column) for column, window in counts],
            *[sum_in(w, "coupon_orders").alias(coupon_orders[c]) for c, w in tags.windowed("coupon_share")],
        )
    )
    refund_counts, refund_amounts = tags.windowed("refund_count"), tags.windowed("refund_amount")
    refund_figures = (
        with_days_ago(events.where(F.col("refunds") > 0), snapshot_dt)
        .groupBy("user_id")
        .agg(
            *[sum_in(window, "refunds").alias(column) for column, window in refund_counts],
            *[sum_in(window, "refund_amount").alias(column) for column, window in refund_amounts],
        )
    )
    figures = (
        users.select("user_id", "registered_dt")
        .join(order_figures, "user_id", "left")
        .join(refund_figures, "user_id", "left")
        .withColumns(zero_if_missing("orders_total", *[column for column, _ in spend + counts + refund_counts + refund_amounts]))
        .withColumns({name: F.col(name).cast("bigint") for name in ["orders_total", *[c for c, _ in counts + refund_counts]]})
        .withColumns({name: F.coalesce(F.col(name), F.lit(0)).cast("bigint") for name in coupon_orders.values()})
        .withColumn("days_since_last_order", days_between(snapshot_dt, "last_order_dt"))
    )

    return labelled(figures, snapshot_dt, tags, coupon_orders)


def labelled(figures: DataFrame, snapshot_dt: date, tags: TagDictionary, coupon_orders: dict[str, str]) -> DataFrame:
    """The consumption row from its figures: lifecycle, averages, coupon share, VIP tier, RFM scores and segment.

    ``coupon_orders`` names the column of orders with a coupon per coupon_share column (dropped here).
    """

    def spend_in(window_tag: str) -> Column:
        return F.col(tags.column("spend", tags.window_of(window_tag)))

    def orders_in(window_tag: str) -> Column:
        return F.col(tags.column("orders", tags.window_of(window_tag)))

    has_ordered = F.col("orders_total") > 0
    labelled = figures.select(
        "*",
        lifecycle_stage(F.col("orders_total")).alias("lifecycle_stage"),
        *[ratio(tags.column("spend", w), tags.column("orders", w)).alias(c) for c, w in tags.windowed("avg_order_value")],
        *[ratio(coupon_orders[c], tags.column("orders", w)).alias(c) for c, w in tags.windowed("coupon_share")],
        vip_tier(spend_in("vip_tier"), tags).alias("vip_tier"),
        F.when(has_ordered, recency_score(F.col("days_since_last_order"), tags)).alias("rfm_r"),
        F.when(has_ordered, at_least_score(orders_in("rfm_f"), tags.threshold("rfm_f", "min_orders_for_score"))).alias("rfm_f"),
        F.when(has_ordered, at_least_score(spend_in("rfm_m"), tags.threshold("rfm_m", "min_spend_for_score"))).alias("rfm_m"),
        snapshot_date(snapshot_dt).alias("dt"),
    )
    return labelled.withColumn("rfm_segment", rfm_segment(tags)).drop(*coupon_orders.values())


def lifecycle_stage(orders_total: Column) -> Column:
    """潜在用户 / 新用户 / 老用户 by non-cancelled orders up to D (seed: 老王的运营流程)."""
    return first_match([(orders_total == 0, "potential"), (orders_total == 1, "new")], default="old")


def vip_tier(spend: Column, tags: TagDictionary) -> Column:
    """Thresholds inclusive: exactly 200 yuan in 30 days is VIP."""
    return first_match(
        [
            (spend >= tags.threshold("vip_tier", "super_vip_min_spend_30d"), "super_vip"),
            (spend >= tags.threshold("vip_tier", "vip_min_spend_30d"), "vip"),
        ],
        default="regular",
    )


def recency_score(days: Column, tags: TagDictionary) -> Column:
    """The highest score whose day limit ``days`` does not exceed; 1 beyond all of them."""
    bins = sorted(tags.threshold("rfm_r", "max_days_for_score").items(), reverse=True)
    return _score([(days <= limit, score) for score, limit in bins])


def at_least_score(value: Column, minimums: dict) -> Column:
    """The highest score whose minimum ``value`` reaches; 1 below all of them."""
    return _score([(value >= minimum, score) for score, minimum in sorted(minimums.items(), reverse=True)])


def _score(rules: list[tuple[Column, int]]) -> Column:
    chain = F
    for condition, score in rules:
        chain = chain.when(condition, F.lit(int(score)))
    return chain.otherwise(F.lit(1)).cast("int")


def rfm_segment(tags: TagDictionary) -> Column:
    """The first rule of ``rfm_segment.thresholds.rules`` whose score bounds all hold."""

    def holds(rule: dict) -> Column:
        bounds = [F.col(f"rfm_{score}").between(*rule[score]) for score in ("r", "f", "m") if score in rule]
        condition = F.lit(True)
        for bound in bounds:
            condition = condition & bound
        return condition

    rules = tags.threshold("rfm_segment", "rules")
    return F.when(F.col("rfm_r").isNotNull(), first_match([(holds(rule), rule["segment"]) for rule in rules]))
