"""Per-product-line sub-profile (产品线画像): usage, intensity and recency per user and line.

Every user gets one row per product line of the landing contract, so a user
who is heavy on content and lapsing on video shows both (seed: 老王在内容标签下
是重度使用者，而在视频标签下是轻度使用者). Usage is events plus non-cancelled
orders on the line; intensity reads the line's share of the user's usage.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from portrait.subprofiles.common import DAYS_AGO, count_in, days_between, first_match, snapshot_date, sum_in, with_days_ago, zero_if_missing
from portrait.subprofiles.daily import line_days

if TYPE_CHECKING:  # imported for annotations only: the dictionary imports this package's DayWindow
    from portrait.tags.dictionary import TagDictionary


def product_line(
    users: DataFrame, events: DataFrame, orders: DataFrame, snapshot_dt: date, tags: TagDictionary, product_lines: list[str]
) -> DataFrame:
    """One row per user of ``users`` and line of ``product_lines`` for snapshot date ``snapshot_dt``, from raw rows.

    users:  user_id - everyone known on D
    events: user_id, dt, product_line - events known on D (attributed)
    orders: user_id, dt, product_line - non-cancelled orders known on D
    """
    return product_line_from_days(users, line_days(events, orders), snapshot_dt, tags, product_lines)


def product_line_from_days(
    users: DataFrame, lines_used: DataFrame, snapshot_dt: date, tags: TagDictionary, product_lines: list[str]
) -> DataFrame:
    """One row per user of ``users`` and line of ``product_lines`` for snapshot date ``snapshot_dt``, from daily aggregates.

    users:      user_id - everyone known on D
    lines_used: user_id, dt, product_line, events, orders - per user, day and line (dws.user_lines_daily)
    """
    per_day = (
        with_days_ago(lines_used, snapshot_dt, tags.window_of("line_last_use_dt"))
        .groupBy("user_id", "product_line", "dt", DAYS_AGO)
        .agg(F.sum(F.col("events") + F.col("orders")).alias("_usage"))
        .where(F.col("_usage") > 0)
    )  # one row per day of use: active days are a plain count, no count_distinct (slow on Sail 0.7.2)
    per_line = per_day.groupBy("user_id", "product_line").agg(
        *[sum_in(window, "_usage").alias(column) for column, window in tags.windowed("line_usage")],
        *[count_in(window).alias(column) for column, window in tags.windowed("line_active_days")],
        F.max("dt").alias("line_last_use_dt"),
    )
    return per_line_rows(users, per_line, snapshot_dt, tags, product_lines)


def per_line_rows(users: DataFrame, per_line: DataFrame, snapshot_dt: date, tags: TagDictionary, product_lines: list[str]) -> DataFrame:
    """A row per user and line from the figures per used line: zeros for unused lines, share, intensity, status."""
    lines = users.sparkSession.createDataFrame([(line,) for line in product_lines], "product_line string")
    intensity_window = tags.window_of("line_intensity")
    rows = (
        users.select("user_id")
        .crossJoin(lines)
        .join(per_line, ["user_id", "product_line"], "left")
        .withColumns(zero_if_missing(*tags.columns("line_usage"), *tags.columns("line_active_days")))
        .withColumns({column: F.col(column).cast("bigint") for column in tags.columns("line_usage")})
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


def share_of_user(usage: Column) -> Column:
    """The line's usage over the user's usage of all lines; 0 when the user used none."""
    total = F.sum(usage).over(Window.partitionBy("user_id"))
    return F.when(total > 0, usage / total).otherwise(F.lit(0.0))


def line_intensity(share: Column, active_days: Column, tags: TagDictionary) -> Column:
    """The first level whose minimum share and active days both hold (inclusive); none when unused."""
    levels = tags.threshold("line_intensity", "levels")
    used = active_days > 0
    rules = [(used & (share >= level["min_share"]) & (active_days >= level["min_active_days"]), level["intensity"]) for level in levels]
    return first_match(rules, default="none")


def line_status(days_since_last_use: Column, tags: TagDictionary) -> Column:
    """active / at_risk / lapsed by days since last use (inclusive); unused when not used in the lookback."""
    return first_match(
        [
            (days_since_last_use <= tags.threshold("line_status", "active_max_days"), "active"),
            (days_since_last_use <= tags.threshold("line_status", "at_risk_max_days"), "at_risk"),
            (days_since_last_use.isNotNull(), "lapsed"),
        ],
        default="unused",
    )
