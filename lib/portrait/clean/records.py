"""Pure transforms of the clean stage: classify checked records, shape them into silver rows, reconcile.

Every function is ``DataFrame -> DataFrame`` (or plain data): the job in
jobs/clean.py reads the landing zone and writes what these return.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from portrait.clean.contract import add_rule, business_date, end_of_day_utc, json_value, resolve_rules
from portrait.core.columns import rounded

ACCEPTED, QUARANTINED, DUPLICATE = "accepted", "quarantined", "duplicate"
#: silver.addresses' place: the text before the first digit or space (no house number, name or phone).
PLACE_NAME = r"^([^0-9０-９\s]+)"


def classify(checked: DataFrame, key: str, earlier_keys: DataFrame | None = None, keep: str = "first") -> DataFrame:
    """Add ``outcome``: quarantined (a rule fired), duplicate, or accepted.

    Within the day the first copy of a key is kept (``keep="last"`` keeps the
    latest version instead, for records that are re-sent as updates); copies of
    keys already accepted on an earlier landing day are duplicates too.

    One pass, no filter on ``rule``: the rule column is a large expression, and
    the engine's planner spends seconds pushing a filter through it (about 3 s
    a filter on a handful of rows), so valid and rejected rows are ranked in
    partitions of their own rather than split and unioned.
    """
    checked = resolve_rules(checked)
    order = [F.col("source_file"), F.col("line_no")]
    if keep == "last":
        order = [c.desc() for c in order]
    valid = F.col("rule").isNull()
    ranked = checked.withColumn("_copy", F.row_number().over(Window.partitionBy(valid, F.col(key)).orderBy(*order)))
    if earlier_keys is not None:
        seen = earlier_keys.select(F.col(key).alias("_seen_key"), F.lit(True).alias("_seen")).distinct()
        ranked = ranked.join(seen, ranked[key] == seen["_seen_key"], "left").drop("_seen_key")
    else:
        ranked = ranked.withColumn("_seen", F.lit(None).cast("boolean"))
    duplicate = (F.col("_copy") > 1) | F.col("_seen").isNotNull()
    outcome = F.when(~valid, F.lit(QUARANTINED)).when(duplicate, F.lit(DUPLICATE)).otherwise(F.lit(ACCEPTED))
    return ranked.withColumn("outcome", outcome).drop("_copy", "_seen")


def quarantine_rows(classified: DataFrame, source: str, key: str, landing_dt: date) -> DataFrame:
    return classified.where(F.col("outcome") == QUARANTINED).select(
        F.lit(source).alias("source"),
        "source_file",
        "line_no",
        "raw_line",
        "rule",
        "detail",
        json_value(f"$.{key}", "string").alias("record_key"),
        F.lit(landing_dt).cast("date").alias("dt"),
    )


def mark_test_accounts_in_users(checked: DataFrame, channels: list[str], name_prefixes: list[str]) -> DataFrame:
    is_test = F.col("channel").isin(*channels) | F.greatest(*[F.col("name").startswith(p) for p in name_prefixes])
    return add_rule(checked, "test_account", F.when(is_test, F.concat(F.lit("test account "), F.col("user_id"))))


def mark_test_account_activity(checked: DataFrame, test_user_ids: DataFrame) -> DataFrame:
    flagged = test_user_ids.select(F.col("user_id").alias("_test_user")).distinct()
    joined = checked.join(F.broadcast(flagged), checked["user_id"] == flagged["_test_user"], "left")
    detail = F.when(F.col("_test_user").isNotNull(), F.concat(F.lit("user "), F.col("user_id"), F.lit(" is a test account")))
    return add_rule(joined, "test_account", detail).drop("_test_user")


def mark_bot_devices(checked: DataFrame, max_events: int) -> DataFrame:
    per_device = Window.partitionBy("device_id")
    counted = checked.withColumn("_device_events", F.count(F.lit(1)).over(per_device))
    detail = F.when(
        F.col("device_id").isNotNull() & (F.col("_device_events") > max_events),
        F.concat(
            F.lit("device "),
            F.col("device_id"),
            F.lit(" sent "),
            F.col("_device_events").cast("string"),
            F.lit(f" events this day (limit {max_events})"),
        ),
    )
    return add_rule(counted, "bot_device", detail).drop("_device_events")


def shape_users(accepted: DataFrame, landing_dt: date, time_zone: str) -> DataFrame:
    return accepted.select(
        "user_id",
        "name",
        "gender",
        F.col("birth_year").cast("int").alias("birth_year"),
        "registered_at",
        "channel",
        "city",
        F.col("phone").isNotNull().alias("has_phone"),
        end_of_day_utc(landing_dt, time_zone).alias("updated_at"),
        F.lit(landing_dt).cast("date").alias("dt"),
    )


def latest_users(history: DataFrame, time_zone: str) -> DataFrame:
    return history.drop("dt").withColumn("registered_dt", business_date("registered_at", time_zone))


def shape_addresses(accepted: DataFrame, landing_dt: date, time_zone: str, decimals: int) -> DataFrame:
    """Keep the place, not the person: no house number, name or phone, coordinates rounded."""
    return accepted.select(
        "address_id",
        "user_id",
        F.regexp_extract("text", PLACE_NAME, 1).alias("place_name"),
        rounded("lat", decimals).alias("lat"),
        rounded("lon", decimals).alias("lon"),
        "poi_type",
        "city",
        end_of_day_utc(landing_dt, time_zone).alias("updated_at"),
    )


def shape_consent(accepted: DataFrame) -> DataFrame:
    """The latest consent record per user and channel of the day (a later day's record replaces it: newer_by ts)."""
    latest = Window.partitionBy("user_id", "channel").orderBy(F.col("ts").desc(), F.col("consent_id").desc())
    return (
        accepted.withColumn("_n", F.row_number().over(latest))
        .where(F.col("_n") == 1)
        .select("user_id", "channel", (F.col("status") == "granted").alias("granted"), "ts", "consent_id")
    )


def shape_orders(accepted: DataFrame, landing_dt: date, time_zone: str) -> DataFrame:
    return accepted.select(
        "order_id",
        "user_id",
        "ts",
        "amount",
        F.coalesce("coupon_amount", F.lit(0.0)).alias("coupon_amount"),
        F.size("items").cast("bigint").alias("item_count"),
        "address_id",
        "product_line",
        "status",
        business_date("ts", time_zone).alias("dt"),
        F.lit(landing_dt).cast("date").alias("landing_dt"),
    )


def shape_order_items(accepted: DataFrame, landing_dt: date, time_zone: str) -> DataFrame:
    exploded = accepted.select("order_id", "user_id", "ts", F.posexplode("items").alias("pos", "item"))
    return exploded.select(
        "order_id",
        (F.col("pos") + 1).cast("int").alias("line_no"),
        "user_id",
        F.col("item.sku").alias("sku"),
        F.col("item.category").alias("category"),
        F.col("item.qty").cast("int").alias("qty"),
        F.col("item.price").alias("price"),
        business_date("ts", time_zone).alias("dt"),
        F.lit(landing_dt).cast("date").alias("landing_dt"),
    )


def shape_events(accepted: DataFrame, landing_dt: date, time_zone: str) -> DataFrame:
    """Typed event columns, with the props each event type carries pulled out."""
    return accepted.select(
        "event_id",
        "user_id",
        F.col("user_id").isNull().alias("anonymous"),
        "device_id",
        "event_type",
        "ts",
        "product_line",
        F.coalesce(json_value("$.props.category", "string"), json_value("$.props.genre", "string")).alias("category"),
        json_value("$.props.sku", "string").alias("sku"),
        json_value("$.props.item_id", "string").alias("item_id"),
        json_value("$.props.order_id", "string").alias("order_id"),
        json_value("$.props.rating", "int").alias("rating"),
        json_value("$.props.wait_minutes", "double").alias("wait_minutes"),
        json_value("$.props.amount", "double").alias("refund_amount"),
        json_value("$.props.seconds", "double").alias("seconds"),
        business_date("ts", time_zone).alias("dt"),
        F.lit(landing_dt).cast("date").alias("landing_dt"),
    )


def device_logins(events: DataFrame, landing_dt: date) -> DataFrame:
    """One row per device and user that logged in on this landing day."""
    return (
        events.where((F.col("event_type") == "login") & F.col("user_id").isNotNull())
        .groupBy("device_id", "user_id")
        .agg(F.min("ts").alias("first_login_ts"), F.max("ts").alias("last_login_ts"))
        .withColumn("dt", F.lit(landing_dt).cast("date"))
    )


def reconcile(source: str, input_records: int, counts: dict[str, int], policy_filtered: int, landing_dt: date, files: int = 0) -> dict:
    """One ops.reconciliation row; ``policy_filtered`` is the part of the quarantined filtered by policy rules.

    ``files``: every entry of the source's landing folder for the date, read or not
    (the clean gate fails a required source with none: conf/landing.yaml).
    """
    accepted, quarantined, duplicates = (counts.get(s, 0) for s in (ACCEPTED, QUARANTINED, DUPLICATE))
    return {
        "source": source,
        "files": files,
        "input_records": input_records,
        "accepted": accepted,
        "quarantined": quarantined,
        "duplicates": duplicates,
        "policy_filtered": policy_filtered,
        "balanced": input_records == accepted + quarantined + duplicates,
        "dt": landing_dt,
    }


def union_all(frames: list[DataFrame]) -> DataFrame:
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result
