"""Clean one landing date into the silver tables (seed: 原始数据 -> 事实标签).

For landing date ``D`` every raw line of every source ends in exactly one place:
a silver table (accepted), ``quarantine.records`` (with the rule that rejected
it), or the duplicate count; ``ops.reconciliation`` proves the sum per source.

The run owns the rows that *landed* on ``D``: silver fact tables are
partitioned by business date ``dt`` and ``landing_dt``, and a rerun replaces
``landing_dt = D`` only. So late events are filed under their own business
date without rebuilding it, and rerunning ``D`` never changes another date's
rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from portrait.clean.contract import check_contract
from portrait.clean.identity import attribute_anonymous
from portrait.clean.landing import Landing, read_landing
from portrait.clean.records import (
    ACCEPTED,
    QUARANTINED,
    classify,
    device_logins,
    latest_users,
    mark_bot_devices,
    mark_test_account_activity,
    mark_test_accounts_in_users,
    quarantine_rows,
    reconcile,
    shape_addresses,
    shape_consent,
    shape_events,
    shape_order_items,
    shape_orders,
    shape_users,
    union_all,
)
from portrait.core.pipeline import Output, RunContext
from portrait.privacy import erasure, masking

CONSENT_COLUMNS = ("consent_id", "user_id", "channel", "status", "ts")

log = logging.getLogger(__name__)

#: Sources in processing order: users first, since test accounts are users.
SOURCES = ("users", "consent", "addresses", "orders", "events")


def run(ctx: RunContext) -> list[Output]:
    """Read landing date ``ctx.dt``, check, classify, and return the silver writes."""
    spark, dt, catalog = ctx.spark, ctx.dt, ctx.catalog
    ctx.notes["erasure_requests"] = erasure.process_requests(ctx.lake, ctx.conf, dt)  # erasure requests landed on D, first
    salt, erased = erasure.checked_salt(catalog)  # the suppression list: erased people never come back
    contract = ctx.conf.landing
    settings = ctx.conf.pipeline["clean"]
    tz = ctx.conf.pipeline["time_zone"]

    def checked(source: str) -> tuple[Landing, DataFrame]:
        landing = read_landing(spark, ctx.lake, source, dt)
        for problem in landing.problems:
            log.warning("clean %s: %s", dt, problem)
        ctx.notes.setdefault("landing_problems", []).extend(landing.problems)
        return landing, check_contract(
            landing.lines,
            contract["sources"][source],
            dt,
            tz,
            settings["future_tolerance_minutes"],
            contract.get("earliest_timestamp"),
            settings["max_line_bytes"],
        )

    def key(source: str) -> str:
        return contract["sources"][source]["key"]

    def earlier_keys(source: str, table: str) -> DataFrame | None:
        """Keys that landed on the lookback days before, for a source deduplicated across days (conf: dedupe_across_days)."""
        if not contract["sources"][source].get("dedupe_across_days", False):
            return None
        since = dt - timedelta(days=settings["dedup_lookback_days"])
        landed = (F.col("landing_dt") < F.lit(dt)) & (F.col("landing_dt") >= F.lit(since))
        return catalog.read(spark, table).where(landed).select(key(source))

    outputs: list[Output] = []
    quarantined: list[DataFrame] = []
    reconciliation: list[dict] = []
    settled: dict[str, DataFrame] = {}  # source -> its classified rows, as staged

    def settle(source: str, raw: Landing, classified: DataFrame, key: str) -> DataFrame:
        private = masking.for_staging(masking.suppressed(classified.drop("_v"), spark, salt, erased, QUARANTINED), source, ctx.conf)
        classified = ctx.materialize(private, source).withColumn("_v", F.expr("try_parse_json(raw_line)"))
        by_policy = F.col("rule").isin(*settings["policy_rules"])
        tally = classified.groupBy("outcome", by_policy.alias("by_policy")).count().collect()
        counts = Counter()
        for row in tally:
            counts[row["outcome"]] += row["count"]
        policy_filtered = sum(r["count"] for r in tally if r["outcome"] == QUARANTINED and r["by_policy"])
        reconciliation.append(reconcile(source, raw.lines.count(), counts, policy_filtered, dt, len(raw.files)))
        quarantined.append(quarantine_rows(classified, source, key, dt))
        settled[source] = classified
        return classified.where(F.col("outcome") == ACCEPTED)

    # users: test accounts are found here and remembered through quarantine
    raw, users = checked("users")
    users = mark_test_accounts_in_users(users, settings["test_account_channels"], settings["test_account_name_prefixes"])
    users_accepted = settle(
        "users", raw, classify(users, key("users"), earlier_keys("users", "silver.users_history"), keep="last"), key("users")
    )
    history = shape_users(users_accepted, dt, tz)
    outputs += [Output("silver.users_history", history, "partition", dt), Output("silver.users", latest_users(history, tz), "upsert")]

    known_tests = catalog.read(spark, "quarantine.records").where(
        (F.col("source") == "users") & (F.col("rule") == "test_account") & (F.col("dt") < F.lit(dt))
    )
    # from the staged copy: a filter on the unstaged rule expression costs the planner seconds (see classify)
    today_tests = settled["users"].where(F.col("rule") == "test_account").select("user_id")
    test_user_ids = known_tests.select(F.col("record_key").alias("user_id")).unionByName(today_tests)

    raw, consent = checked("consent")  # a withdrawal lands like any record and holds from the next campaigns run
    consent = mark_test_account_activity(consent, test_user_ids)
    accepted = settle("consent", raw, classify(consent, key("consent"), earlier_keys("consent", "silver.consent_history")), key("consent"))
    outputs += [
        Output("silver.consent_history", accepted.select(*CONSENT_COLUMNS, F.lit(dt).alias("landing_dt")), "partition", dt),
        Output("silver.consent", shape_consent(accepted), "upsert"),
    ]

    raw, addresses = checked("addresses")
    addresses = mark_test_account_activity(addresses, test_user_ids)
    accepted = settle(
        "addresses",
        raw,
        classify(addresses, key("addresses"), earlier_keys("addresses", "silver.addresses"), keep="last"),
        key("addresses"),
    )
    outputs.append(Output("silver.addresses", shape_addresses(accepted, dt, tz, settings["coordinate_decimals"]), "upsert"))

    raw, orders = checked("orders")
    orders = mark_test_account_activity(orders, test_user_ids)
    accepted = settle("orders", raw, classify(orders, key("orders"), earlier_keys("orders", "silver.orders")), key("orders"))
    outputs += [
        Output("silver.orders", shape_orders(accepted, dt, tz), "partition", dt),
        Output("silver.order_items", shape_order_items(accepted, dt, tz), "partition", dt),
    ]

    raw, events = checked("events")
    events = mark_bot_devices(mark_test_account_activity(events, test_user_ids), settings["bot_events_per_device_per_day"])
    accepted = settle("events", raw, classify(events, key("events"), earlier_keys("events", "silver.events")), key("events"))
    shaped = shape_events(accepted, dt, tz)
    logins_today = device_logins(shaped, dt)
    lookback_since = dt - timedelta(days=settings["stitch_lookback_hours"] // 24 + 1)
    earlier_logins = catalog.read(spark, "silver.device_map").where((F.col("dt") >= F.lit(lookback_since)) & (F.col("dt") < F.lit(dt)))
    stitched = attribute_anonymous(shaped, logins_today.unionByName(earlier_logins), settings["stitch_lookback_hours"])
    outputs += [
        Output("silver.events", stitched, "partition", dt),
        Output("silver.device_map", logins_today, "partition", dt),
    ]

    outputs.append(Output("quarantine.records", union_all(quarantined), "partition", dt))
    outputs.append(
        Output("ops.reconciliation", spark.createDataFrame(reconciliation, ctx.catalog.spec("ops.reconciliation").ddl), "partition", dt)
    )
    ctx.notes["reconciliation"] = reconciliation
    return outputs
