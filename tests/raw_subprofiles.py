"""The sub-profiles as computed before the daily aggregate layer: straight from raw silver rows.

Kept only as the reference of tests/test_daily_aggregates.py, which requires
every tag of every user on every date to equal what the stages now compute
from the dws tables. Each function is the raw-row transform of
lib/portrait/subprofiles/ as of commit d50ef8b (the labels, scores and list
helpers it calls are still the library's own); the builders read silver as
known on D exactly as lib/portrait/subprofiles/snapshots.py did.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from portrait.clean.as_of import SilverAsOf
from portrait.subprofiles.behavior import is_type
from portrait.subprofiles.behavior import labelled as behavior_labelled
from portrait.subprofiles.behavior import user_figures as behavior_figures
from portrait.subprofiles.common import (  # noqa: F401
    DAYS_AGO,
    count_in,
    days_between,
    first_n,
    ratio,
    snapshot_date,
    sorted_by,
    sum_in,
    with_days_ago,
    zero_if_missing,
)
from portrait.subprofiles.consumption import labelled as consumption_labelled
from portrait.subprofiles.daily import ORDER_ITEM
from portrait.subprofiles.interest import ranked as interest_ranked
from portrait.subprofiles.product_line import per_line_rows as product_line_rows
from portrait.subprofiles.social import with_addresses as social_rows
from portrait.tags.dictionary import TagDictionary


def consumption(users, orders, refunds, snapshot_dt, tags: TagDictionary):
    """One row per user of ``users`` for snapshot date ``snapshot_dt``.

    users:   user_id, registered_dt - everyone known on D
    orders:  user_id, dt, amount, coupon_amount - non-cancelled orders known on D (all history:
             the lifecycle and the first order look back to the beginning)
    refunds: user_id, dt, refund_amount - refund events known on D
    """
    spend, counts = tags.windowed("spend"), tags.windowed("orders")
    coupon_orders = {column: f"_coupon_orders_{window.name}" for column, window in tags.windowed("coupon_share")}
    order_figures = (
        with_days_ago(orders, snapshot_dt)
        .groupBy("user_id")
        .agg(
            F.count(F.lit(1)).alias("orders_total"),
            F.min("dt").alias("first_order_dt"),
            F.max("dt").alias("last_order_dt"),
            *[sum_in(window, "amount").alias(column) for column, window in spend],
            *[count_in(window).alias(column) for column, window in counts],
            *[count_in(w, F.col("coupon_amount") > 0).alias(coupon_orders[c]) for c, w in tags.windowed("coupon_share")],
        )
    )
    refund_counts, refund_amounts = tags.windowed("refund_count"), tags.windowed("refund_amount")
    refund_figures = (
        with_days_ago(refunds, snapshot_dt)
        .groupBy("user_id")
        .agg(
            *[count_in(window).alias(column) for column, window in refund_counts],
            *[sum_in(window, "refund_amount").alias(column) for column, window in refund_amounts],
        )
    )
    figures = (
        users.select("user_id", "registered_dt")
        .join(order_figures, "user_id", "left")
        .join(refund_figures, "user_id", "left")
        .withColumns(zero_if_missing("orders_total", *[column for column, _ in spend + counts + refund_counts + refund_amounts]))
        .withColumn("days_since_last_order", days_between(snapshot_dt, "last_order_dt"))
    )

    return consumption_labelled(figures, snapshot_dt, tags, coupon_orders)


def behavior(users, events, snapshot_dt, tags: TagDictionary, time_zone: str):
    """One row per user of ``users`` for snapshot date ``snapshot_dt``.

    users:  user_id - everyone known on D
    events: user_id, dt, ts, event_type, rating, wait_minutes - events known on D,
            anonymous ones attributed where a later login allows (unattributed ones are ignored)
    """
    events = with_days_ago(events.where(F.col("user_id").isNotNull()), snapshot_dt, tags.window_of("last_active_dt"))
    counted = {
        "app_opens": is_type("app_open"),
        "logins": is_type("login"),
        "reviews": is_type("review"),
        "bad_reviews": is_type("review") & (F.col("rating") <= tags.threshold("bad_reviews", "max_rating")),
        "refunds": is_type("refund"),
    }
    delivered = is_type("delivery") & F.col("wait_minutes").isNotNull()
    per_day = events.groupBy("user_id", "dt", DAYS_AGO).agg(
        *[F.count(F.when(condition, F.lit(1))).alias(tag) for tag, condition in counted.items()],
        F.count(F.when(delivered, F.lit(1))).alias("_deliveries"),
        F.sum(F.when(delivered, F.col("wait_minutes"))).alias("_wait_minutes"),
    )
    per_user = behavior_figures(per_day, counted, tags)
    histogram = hour_histogram(events, tags.window_of("preferred_hours"), time_zone)
    return behavior_labelled(users, per_user, histogram, counted, snapshot_dt, tags)


def hour_histogram(events, window, time_zone: str):
    """user_id, _hours: events per hour of day (business time zone) in the window, hours without events left out."""
    in_window = events.where(window.holds()).withColumn("hour", F.hour(F.from_utc_timestamp("ts", time_zone)))
    per_hour = in_window.groupBy("user_id", "hour").agg(F.count(F.lit(1)).alias("events"))
    return per_hour.groupBy("user_id").agg(F.collect_list(F.struct("hour", "events")).alias("_hours"))


def interest(users, events, order_items, snapshot_dt, tags: TagDictionary):
    """One row per user of ``users`` for snapshot date ``snapshot_dt``.

    users:       user_id - everyone known on D
    events:      user_id, dt, event_type, category - events known on D (attributed)
    order_items: user_id, dt, category - line items of non-cancelled orders known on D
    """
    half_life = float(tags.threshold("interest_weights", "half_life_days"))
    decay = F.pow(F.lit(0.5), F.col(DAYS_AGO) / F.lit(half_life))
    weighted = signals(events, order_items, tags.threshold("interest_weights", "signal_weights"))
    per_category = (
        with_days_ago(weighted, snapshot_dt, tags.window_of("interest_weights"))
        .groupBy("user_id", "category")
        .agg(
            F.sum(F.col("weight") * decay).alias("score"),
            *[count_in(window).alias(column) for column, window in tags.windowed("interest_signals")],
        )
    )
    return interest_ranked(users, per_category, snapshot_dt, tags)


def signals(events, order_items, signal_weights: dict):
    """user_id, dt, category, weight: one row per weighted event or order item with a category."""
    event_weights = {kind: float(weight) for kind, weight in signal_weights.items() if kind != ORDER_ITEM}
    weight_of_type = F.create_map(*[F.lit(value) for pair in event_weights.items() for value in pair])
    from_events = events.where(F.col("event_type").isin(*event_weights)).select(
        "user_id", "dt", "category", F.element_at(weight_of_type, F.col("event_type")).alias("weight")
    )
    from_orders = order_items.select("user_id", "dt", "category", F.lit(float(signal_weights[ORDER_ITEM])).alias("weight"))
    both = from_events.unionByName(from_orders)
    return both.where(F.col("user_id").isNotNull() & F.col("category").isNotNull())


def product_line(users, events, orders, snapshot_dt, tags: TagDictionary, product_lines: list[str]):
    """One row per user of ``users`` and line of ``product_lines`` for snapshot date ``snapshot_dt``.

    users:  user_id - everyone known on D
    events: user_id, dt, product_line - events known on D (attributed)
    orders: user_id, dt, product_line - non-cancelled orders known on D
    """
    usage = events.select("user_id", "dt", "product_line").unionByName(orders.select("user_id", "dt", "product_line"))
    per_day = (
        with_days_ago(usage.where(F.col("user_id").isNotNull()), snapshot_dt, tags.window_of("line_last_use_dt"))
        .groupBy("user_id", "product_line", "dt", DAYS_AGO)
        .agg(F.count(F.lit(1)).alias("_usage"))
    )  # one row per day of use: active days are a plain count, no count_distinct (slow on Sail 0.7.2)
    per_line = per_day.groupBy("user_id", "product_line").agg(
        *[sum_in(window, "_usage").alias(column) for column, window in tags.windowed("line_usage")],
        *[count_in(window).alias(column) for column, window in tags.windowed("line_active_days")],
        F.max("dt").alias("line_last_use_dt"),
    )
    return product_line_rows(users, per_line, snapshot_dt, tags, product_lines)


def social(users, orders, addresses, snapshot_dt, tags: TagDictionary):
    """One row per user of ``users`` for snapshot date ``snapshot_dt``.

    users:     user_id, gender, birth_year, city - latest record known on D
    orders:    user_id, dt, address_id - non-cancelled orders known on D
    addresses: address_id, place_name, lat, lon, poi_type - address records known on D
    """
    uses = (
        with_days_ago(orders.where(F.col("address_id").isNotNull()), snapshot_dt, tags.window_of("common_addresses"))
        .groupBy("user_id", "address_id")
        .agg(F.count(F.lit(1)).alias("uses"), F.max("dt").alias("last_used_dt"))
        .where(F.col("uses") >= tags.threshold("common_addresses", "min_uses"))
    )
    return social_rows(users, uses, addresses, snapshot_dt, tags)


def build_consumption(ctx):
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    refunds = silver.events(since=tags.first_day(ctx.dt, "refund_count", "refund_amount")).where(F.col("event_type") == "refund")
    return consumption(silver.users(), silver.orders(), refunds, ctx.dt, tags)


def build_behavior(ctx):
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    events = silver.events(since=tags.first_day(ctx.dt, "last_active_dt"))
    return behavior(silver.users(), events, ctx.dt, tags, silver.time_zone)


def build_interest(ctx):
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    since = tags.first_day(ctx.dt, "interest_weights")
    return interest(silver.users(), silver.events(since), silver.order_items(since), ctx.dt, tags)


def build_social(ctx):
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    orders = silver.orders(since=tags.first_day(ctx.dt, "common_addresses"))
    return social(silver.users(), orders, silver.addresses(), ctx.dt, tags)


def build_product_line(ctx):
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    since = tags.first_day(ctx.dt, "line_last_use_dt", "line_usage")
    lines = ctx.conf.landing["sources"]["events"]["fields"]["product_line"]["values"]
    return product_line(silver.users(), silver.events(since), silver.orders(since), ctx.dt, tags, lines)


BUILDERS = {
    "profile.consumption": build_consumption,
    "profile.behavior": build_behavior,
    "profile.interest": build_interest,
    "profile.social": build_social,
    "profile.product_line": build_product_line,
}
