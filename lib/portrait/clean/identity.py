"""Identity stitching: anonymous events belong to whoever next logs in on the device.

Kept as one pure function so the clean job (for the events it is filing) and
readers of history (for anonymous events filed on days before the login) give
the same answer. Logins come from ``silver.device_map`` rows (one per device,
user and landing day, with the first and last login of that day).
"""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def attribute_anonymous(events: DataFrame, logins: DataFrame, lookback_hours: int) -> DataFrame:
    """Fill ``user_id`` of anonymous events from a later login on the same device.

    An anonymous event at ``ts`` on a device goes to the user of the earliest
    login on that device between ``ts`` and ``ts + lookback_hours``; events with
    no such login stay anonymous (``user_id`` null). Columns are unchanged.
    """
    columns = events.columns
    known = events.where(F.col("user_id").isNotNull())
    anonymous = events.where(F.col("user_id").isNull())
    candidates = logins.select(
        "device_id",
        F.col("user_id").alias("_login_user"),
        F.col("first_login_ts").alias("_first_login"),
        F.col("last_login_ts").alias("_last_login"),
    )
    window_end = F.col("ts") + F.expr(f"INTERVAL {int(lookback_hours)} HOURS")
    matched = anonymous.join(candidates, "device_id", "left").where(
        F.col("_login_user").isNull() | ((F.col("_last_login") >= F.col("ts")) & (F.col("_first_login") <= window_end))
    )
    earliest = Window.partitionBy("event_id").orderBy(F.col("_first_login").asc_nulls_last(), "_login_user")
    # Events whose device has logins, none in the window, fall out of the join filter: keep them anonymous.
    attributed = (
        matched.withColumn("_rank", F.row_number().over(earliest))
        .where("_rank = 1")
        .withColumn("user_id", F.col("_login_user"))
        .select(*columns)
    )
    unmatched = anonymous.join(attributed.select("event_id"), "event_id", "left_anti").select(*columns)
    return known.unionByName(attributed).unionByName(unmatched)


def read_attributed_events(spark, catalog, lookback_hours: int, until=None, since=None, anonymous_only: bool = False) -> DataFrame:
    """silver.events with anonymous events of earlier days attributed by later logins.

    The clean job can only stitch logins it has seen; an anonymous visit on
    day D whose login comes on day D+1 is stitched here, at read time, so that
    filing D+1 never rewrites D's rows.

    ``since`` (a business date) keeps the events of days >= since, and prunes
    the logins before stitching, so a 30-day reader does not join the whole
    login history: an event of day >= since can only be claimed by a login at
    or after it, and such a login landed on day >= since - 1 (a landing day
    holds timestamps up to the future tolerance into the next day). The
    events themselves are filtered after stitching: filtering them before made
    Sail 0.7.2 fail the product-line plan ("No field named #42").
    ``anonymous_only`` keeps only the events silver holds without a user (the
    daily aggregates hold the others): attributed, or still anonymous.
    """
    events = catalog.read(spark, "silver.events")
    if anonymous_only:
        events = events.where(F.col("user_id").isNull())
    logins = catalog.read(spark, "silver.device_map")
    if until is not None:
        # as known on `until`: nothing that happened or landed after it
        events = events.where((F.col("dt") <= F.lit(until)) & (F.col("landing_dt") <= F.lit(until)))
        logins = logins.where(F.col("dt") <= F.lit(until))
    if since is None:
        return attribute_anonymous(events, logins, lookback_hours)
    logins = logins.where(F.col("dt") >= F.lit(since - timedelta(days=1)))
    return attribute_anonymous(events, logins, lookback_hours).where(F.col("dt") >= F.lit(since))
