"""Behavior sub-profile (行为画像): activity, app opens, logins, reviews, refunds, waits, hours.

Two aggregations instead of one with distinct counts: events are first summed
per user and business day (one row per active day), then per user, where an
active-day count is a plain conditional count of day rows and every other
figure a conditional sum. (Five conditional ``count_distinct`` in one
``groupBy`` were 15 times slower on Sail 0.7.2.) Preferred hours come from a
third, small aggregation over the hours window.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portrait.subprofiles.common import (
    DAYS_AGO,
    DayWindow,
    count_in,
    days_between,
    first_match,
    first_n,
    ratio,
    snapshot_date,
    sorted_by,
    sum_in,
    with_days_ago,
    zero_if_missing,
)
from portrait.subprofiles.daily import EVENT_COLUMNS, event_days, hour_days, with_missing

if TYPE_CHECKING:  # imported for annotations only: the dictionary imports this package's DayWindow
    from portrait.tags.dictionary import TagDictionary

HOUR_TYPE = "array<struct<hour:int,events:bigint>>"


def behavior(users: DataFrame, events: DataFrame, snapshot_dt: date, tags: TagDictionary, time_zone: str) -> DataFrame:
    """One row per user of ``users`` for snapshot date ``snapshot_dt``, from raw rows.

    users:  user_id - everyone known on D
    events: user_id, dt, ts, event_type, rating, wait_minutes - events known on D,
            anonymous ones attributed where a later login allows (unattributed ones are ignored)
    """
    lookback = with_days_ago(events, snapshot_dt, tags.window_of("last_active_dt")).drop(DAYS_AGO)
    daily = event_days(with_missing(lookback, EVENT_COLUMNS), int(tags.threshold("bad_reviews", "max_rating")))
    return behavior_from_days(users, daily, hour_days(lookback, time_zone), snapshot_dt, tags)


def behavior_from_days(users: DataFrame, events: DataFrame, hours: DataFrame, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """One row per user of ``users`` for snapshot date ``snapshot_dt``, from daily aggregates.

    users:  user_id - everyone known on D
    events: user_id, dt, events, app_opens, logins, reviews, bad_reviews, refunds, deliveries,
            wait_minutes - per user and day (dws.user_events_daily)
    hours:  user_id, dt, hour, events - per user, day and hour of day (dws.user_hours_daily)
    A user and day may have several rows (one per landing day): they are summed first.
    """
    counted = ("app_opens", "logins", "reviews", "bad_reviews", "refunds")
    per_day = (
        with_days_ago(events, snapshot_dt, tags.window_of("last_active_dt"))
        .groupBy("user_id", "dt", DAYS_AGO)
        .agg(
            *[F.sum(tag).alias(tag) for tag in counted],
            F.sum("deliveries").alias("_deliveries"),
            F.sum("wait_minutes").alias("_wait_minutes"),
        )
    )
    per_user = user_figures(per_day, counted, tags)
    return labelled(users, per_user, hour_histogram(hours, snapshot_dt, tags.window_of("preferred_hours")), counted, snapshot_dt, tags)


def user_figures(per_day: DataFrame, counted, tags: TagDictionary) -> DataFrame:
    """Per user from rows per user and day (``dt``, ``days_ago``, the ``counted`` kinds, _deliveries, _wait_minutes)."""
    return per_day.groupBy("user_id").agg(
        F.max("dt").alias("last_active_dt"),
        *[count_in(window).alias(column) for column, window in tags.windowed("active_days")],
        *[sum_in(window, tag).alias(column) for tag in counted for column, window in tags.windowed(tag)],
        *[
            ratio(sum_in(window, "_wait_minutes"), sum_in(window, "_deliveries")).alias(column)
            for column, window in tags.windowed("avg_wait_minutes")
        ],
    )


def labelled(users: DataFrame, per_user: DataFrame, histogram: DataFrame, counted, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """The behavior row of every user: figures (zeros for no events), days since active, activity tag, preferred hours."""
    count_columns = [column for tag in counted for column in tags.columns(tag)]
    days_since_active = days_between(snapshot_dt, "last_active_dt")
    return (
        users.select("user_id")
        .join(per_user, "user_id", "left")
        .join(histogram, "user_id", "left")
        .withColumns(zero_if_missing(*tags.columns("active_days"), *count_columns))
        .withColumns({column: F.col(column).cast("bigint") for column in count_columns})
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


def hour_histogram(hours: DataFrame, snapshot_dt: date, window: DayWindow) -> DataFrame:
    """user_id, _hours: events per hour of day in the window, hours without events left out."""
    in_window = with_days_ago(hours, snapshot_dt, window)
    per_hour = in_window.groupBy("user_id", "hour").agg(F.sum("events").alias("events"))
    return per_hour.groupBy("user_id").agg(F.collect_list(F.struct("hour", "events")).alias("_hours"))


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
    most_events_first = sorted_by(F.coalesce(histogram, F.array().cast(HOUR_TYPE)), lambda bucket: [-bucket["events"], bucket["hour"]])
    return F.transform(first_n(most_events_first, top_n), lambda bucket: bucket["hour"])
