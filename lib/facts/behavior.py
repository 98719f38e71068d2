"""Behavior sub-profile (行为画像): activity, app opens, logins, reviews, refunds, waits, hours.

One ``groupBy(user_id)`` over the user's events in the activity lookback: every
figure is a conditional aggregate, the hour-of-day histogram included (24
conditional counts), so preferred hours cost no second shuffle.
"""
from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portrait.lib.facts.common import count_in, days_between, first_match, first_n, snapshot_date, sorted_by, with_days_ago, zero_if_missing
from portrait.lib.facts.dictionary import TagDictionary

HOURS_OF_DAY = range(24)


def behavior(users: DataFrame, events: DataFrame, snapshot_dt: date, tags: TagDictionary, time_zone: str) -> DataFrame:
    """One row per user of ``users`` for snapshot date ``snapshot_dt``.

    users:  user_id - everyone known on D
    events: user_id, dt, ts, event_type, rating, wait_minutes - events known on D,
            anonymous ones attributed where a later login allows (unattributed ones are ignored)
    """
    max_bad_rating = tags.threshold("bad_reviews", "max_rating")
    counted = {
        "app_opens": is_type("app_open"),
        "logins": is_type("login"),
        "reviews": is_type("review"),
        "bad_reviews": is_type("review") & (F.col("rating") <= max_bad_rating),
        "refunds": is_type("refund"),
    }
    count_columns = [(column, window, condition) for tag, condition in counted.items() for column, window in tags.windowed(tag)]
    hours_window = tags.window_of("preferred_hours")
    local_hour = F.hour(F.from_utc_timestamp("ts", time_zone))
    figures = (
        with_days_ago(events.where(F.col("user_id").isNotNull()), snapshot_dt, tags.window_of("last_active_dt"))
        .withColumn("_hour", local_hour)
        .groupBy("user_id")
        .agg(
            F.max("dt").alias("last_active_dt"),
            *[F.count_distinct(F.when(window.holds(), F.col("dt"))).alias(column) for column, window in tags.windowed("active_days")],
            *[count_in(window, condition).alias(column) for column, window, condition in count_columns],
            *[F.avg(F.when(window.holds() & is_type("delivery"), F.col("wait_minutes"))).alias(column) for column, window in tags.windowed("avg_wait_minutes")],
            F.array(*[F.struct(F.lit(hour).alias("hour"), count_in(hours_window, F.col("_hour") == hour).alias("events")) for hour in HOURS_OF_DAY]).alias("_hour_histogram"),
        )
    )
    days_since_active = days_between(snapshot_dt, "last_active_dt")
    return (
        users.select("user_id")
        .join(figures, "user_id", "left")
        .withColumns(zero_if_missing(*tags.columns("active_days"), *[column for column, _, _ in count_columns]))
        .withColumns(
            {
                "days_since_last_active": days_since_active,
                "activity_tag": activity_tag(days_since_active, tags),
                "preferred_hours": preferred_hours(F.col("_hour_histogram"), tags.threshold("preferred_hours", "top_n")),
                "dt": snapshot_date(snapshot_dt),
            }
        )
        .drop("_hour_histogram")
    )


def is_type(event_type: str) -> Column:
    return F.col("event_type") == event_type


def activity_tag(days_since_active: Column, tags: TagDictionary) -> Column:
    """活跃 / 沉默 / 流失 by days since last active, thresholds inclusive; never active in the lookback is lost."""
    return first_match(
        [
            (days_since_active <= tags.threshold("activity_tag", "active_max_days"), "active"),
            (days_since_active <= tags.threshold("activity_tag", "silent_max_days"), "silent"),
        ],
        default="lost",
    )


def preferred_hours(histogram: Column, top_n: int) -> Column:
    """The ``top_n`` hours with most events, ties to the earlier hour; empty for no events."""
    most_events_first = sorted_by(histogram, lambda bucket: [-bucket["events"], bucket["hour"]])
    busiest = F.filter(first_n(most_events_first, top_n), lambda bucket: bucket["events"] > 0)
    hours = F.transform(busiest, lambda bucket: bucket["hour"])
    return F.coalesce(hours, F.array().cast("array<int>"))
