"""Interest sub-profile (兴趣画像): a decayed preference weight per category, and the top-N.

Signals are views and plays (weight 1), add-to-carts (3) and order items (5)
with a category (conf/tags.yaml ``interest_weights``); each counts
``weight x 0.5^(days_ago / half_life_days)``, so last week's salad says more
than last quarter's. Per user the scores are divided by the highest: the
favourite category has weight 1, the others are relative to it (max
normalisation, so weights stay in [0, 1] however many categories a user touches).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portrait.core.columns import rounded
from portrait.subprofiles.common import DAYS_AGO, first_n, snapshot_date, sorted_by, sum_in, with_days_ago, zero_if_missing
from portrait.subprofiles.daily import category_days

if TYPE_CHECKING:  # imported for annotations only: the dictionary imports this package's DayWindow
    from portrait.tags.dictionary import TagDictionary

WEIGHTS_TYPE = "array<struct<category:string,weight:double,score:double>>"


def interest(users: DataFrame, events: DataFrame, order_items: DataFrame, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """One row per user of ``users`` for snapshot date ``snapshot_dt``, from raw rows.

    users:       user_id - everyone known on D
    events:      user_id, dt, event_type, category - events known on D (attributed)
    order_items: user_id, dt, category - line items of non-cancelled orders known on D
    """
    return interest_from_days(users, category_days(events, order_items), snapshot_dt, tags)


def interest_from_days(users: DataFrame, categories: DataFrame, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """One row per user of ``users`` for snapshot date ``snapshot_dt``, from daily aggregates.

    users:      user_id - everyone known on D
    categories: user_id, dt, category, signal, signals - per user, day, category and signal
                (the event type, or ``order_item``; dws.user_categories_daily)
    """
    half_life = float(tags.threshold("interest_weights", "half_life_days"))
    decay = F.pow(F.lit(0.5), F.col(DAYS_AGO) / F.lit(half_life))
    weighted = signals(categories, tags.threshold("interest_weights", "signal_weights"))
    per_category = (
        with_days_ago(weighted, snapshot_dt, tags.window_of("interest_weights"))
        .groupBy("user_id", "category")
        .agg(
            F.sum(F.col("weight") * decay).alias("score"),
            *[sum_in(window, "signals").alias(column) for column, window in tags.windowed("interest_signals")],
        )
    )
    return ranked(users, per_category, snapshot_dt, tags)


def ranked(users: DataFrame, per_category: DataFrame, snapshot_dt: date, tags: TagDictionary) -> DataFrame:
    """The interest row of every user from scores and signal counts per category: weights ranked, top-N (empty when none)."""
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
        .withColumns({column: F.col(column).cast("bigint") for column in tags.columns("interest_signals")})
        .withColumn("interest_weights", ranked_weights(F.col("_scored"), F.col("_top_score")))
        .withColumn("top_interests", F.transform(first_n("interest_weights", top_n), lambda c: c["category"]))
        .withColumn("dt", snapshot_date(snapshot_dt))
        .drop("_top_score", "_scored")
    )


def signals(categories: DataFrame, signal_weights: dict) -> DataFrame:
    """user_id, dt, category, signals, weight: the weighted signals of each day (weight = signals x the signal's weight)."""
    weights = {kind: float(weight) for kind, weight in signal_weights.items()}
    weight_of = F.create_map(*[F.lit(value) for pair in weights.items() for value in pair])
    weighted = categories.where(F.col("signal").isin(*weights))
    return weighted.select(
        "user_id", "dt", "category", "signals", (F.col("signals") * F.element_at(weight_of, F.col("signal"))).alias("weight")
    )


def ranked_weights(scored: Column, top_score: Column) -> Column:
    """Each category's score over the user's top score, highest weight first (ties by category name).

    Weights equal to 12 decimals count as tied: a sum's last bits depend on the
    order the engine adds in, and must not reorder the categories of a rerun.
    """
    weighted = F.transform(
        scored, lambda c: F.struct(c["category"].alias("category"), (c["score"] / top_score).alias("weight"), c["score"].alias("score"))
    )
    return F.coalesce(sorted_by(weighted, lambda c: [-rounded(c["weight"], 12), c["category"]]), F.array().cast(WEIGHTS_TYPE))
