"""The sub-profiles as computed before the daily aggregate layer: straight from raw silver rows.

Kept only as the reference of tests/test_daily_aggregates.py, which requires
every tag of every user on every date to equal what the stages now compute
from the dws tables. Each function is the raw-row transform of
lib/portrait/subprofiles/ as of commit d50ef8b (the labels, scores and list
helpers it calls are still the library's own); the builders read silver as
known on D exactly as lib/portrait/subprofiles/snapshots.py did.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from portrait.clean.as_of import SilverAsOf
from portrait.subprofiles.behavior import HOUR_TYPE, activity_tag, is_type, preferred_hours  # noqa: F401
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
from portrait.subprofiles.consumption import at_least_score, lifecycle_stage, recency_score, rfm_segment, vip_tier  # noqa: F401
from portrait.subprofiles.daily import ORDER_ITEM
from portrait.subprofiles.interest import ranked_weights
from portrait.subprofiles.product_line import line_intensity, line_status, share_of_user
from portrait.subprofiles.social import ADDRESS_FIELDS, ADDRESS_TYPE, age_band
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
    count_columns = [column for tag in counted for column in tags.columns(tag)]
    per_user = per_day.groupBy("user_id").agg(
        F.max("dt").alias("last_active_dt"),
        *[count_in(window).alias(column) for column, window in tags.windowed("active_days")],
        *[sum_in(window, tag).alias(column) for tag in counted for column, window in tags.windowed(tag)],
        *[
            ratio(sum_in(window, "_wait_minutes"), sum_in(window, "_deliveries")).alias(column)
            for column, window in tags.windowed("avg_wait_minutes")
        ],
    )
    days_since_active = days_between(snapshot_dt, "last_active_dt")
    return (
        users.select("user_id")
        .join(per_user, "user_id", "left")
        .join(hour_histogram(events, tags.window_of("preferred_hours"), time_zone), "user_id", "left")
        .withColumns(zero_if_missing(*tags.columns("active_days"), *count_columns))
        .withColumns(
            {
                "days_since_last_active": days_since_active,
                "activity_tag": activity_tag(days_since_active, tags),
                "preferred_hours": preferred_hours(F.col("_hours"), tags.threshold("preferred_hours", "top_n")),
                "dt": snapshot_date(snapshot_dt),
            }
        )
        .drop("_hours")
    )


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
    per_user = per_category.groupBy("user_id").agg(
        F.max("score").alias("_top_score"),
        F.collect_list(F.struct("category", "score")).alias("_scored"),
        *[F.sum(column).alias(column) for column in tags.columns("interest_signals")],
    )
    top_n = int(tags.threshold("top_interests", "top_n"))
    return (
        users.select("user_id")
        .join(per_user, "user_id", "left")
        .withColumns(zero_if_missing(*tags.columns("interest_signals")))
        .withColumn("interest_weights", ranked_weights(F.col("_scored"), F.col("_top_score")))
        .withColumn("top_interests", F.transform(first_n("interest_weights", top_n), lambda c: c["category"]))
        .withColumn("dt", snapshot_date(snapshot_dt))
        .drop("_top_score", "_scored")
    )


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
    lines = users.sparkSession.createDataFrame([(line,) for line in product_lines], "product_line string")
    intensity_window = tags.window_of("line_intensity")
    rows = (
        users.select("user_id")
        .crossJoin(lines)
        .join(per_line, ["user_id", "product_line"], "left")
        .withColumns(zero_if_missing(*tags.columns("line_usage"), *tags.columns("line_active_days")))
        .withColumns(
            {column: share_of_user(F.col(tags.column("line_usage", window))) for column, window in tags.windowed("line_usage_share")}
        )
        .withColumn("days_since_last_use", days_between(snapshot_dt, "line_last_use_dt"))
    )
    return rows.withColumns(
        {
            "line_intensity": line_intensity(
                F.col(tags.column("line_usage_share", intensity_window)), F.col(tags.column("line_active_days", intensity_window)), tags
            ),
            "line_status": line_status(F.col("days_since_last_use"), tags),
            "dt": snapshot_date(snapshot_dt),
        }
    )


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
    described = uses.join(addresses.select("address_id", "place_name", "lat", "lon", "poi_type"), "address_id", "left")
    per_user = described.groupBy("user_id").agg(F.collect_list(F.struct(*ADDRESS_FIELDS)).alias("_common"))
    most_used = sorted_by("_common", lambda a: [-a["uses"], days_between(snapshot_dt, a["last_used_dt"]), a["address_id"]])
    kept = first_n(most_used, tags.threshold("common_addresses", "max_addresses"))
    return (
        users.select("user_id", F.col("gender").alias("gender_reported"), "city", "birth_year")
        .join(per_user, "user_id", "left")
        .withColumn("common_addresses", F.coalesce(kept, F.array().cast(ADDRESS_TYPE)))
        .withColumn("common_address_count", F.size("common_addresses"))
        .withColumn("age_band", age_band(F.year(snapshot_date(snapshot_dt)) - F.col("birth_year"), tags))
        .withColumn("dt", snapshot_date(snapshot_dt))
        .drop("_common", "birth_year")
    )


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
