"""Segments as DataFrames: pure transforms from a snapshot of the master profile to audiences.

Every function takes DataFrames and the compiled ``SegmentBook`` and returns
a DataFrame; the segments job (jobs/segments.py) reads and writes around them.
"""

from __future__ import annotations

import warnings
from datetime import date, timedelta
from functools import reduce

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from portrait.segments.bitmaps import serialise
from portrait.segments.rules import RESERVED, SegmentBook

ABSENT, UNKNOWN, IN, OUT = "absent", "unknown", "in", "out"
SEGMENT_STATE = "segment:"  # transitions of segment membership are under tag "segment:<name>"


def office_peers(orders: DataFrame, addresses: DataFrame, dt: date, window_days: int, poi_type: str) -> DataFrame:
    """user_id -> office_peers_same_day: the most distinct customers at the user's office place on one day.

    An office place is an address's place name with POI type ``poi_type``
    (silver keeps the name cut before the house number, so colleagues in one
    building share it). Counted over the orders of ``dt - window_days + 1 .. dt``.
    """
    offices = addresses.where(F.col("poi_type") == poi_type).select("address_id", "place_name")
    recent = orders.where(F.col("dt").between(F.lit(dt - timedelta(days=window_days - 1)), F.lit(dt)))
    placed = recent.join(offices, "address_id").select("user_id", "place_name", "dt")
    per_day = placed.groupBy("place_name", "dt").agg(F.countDistinct("user_id").alias("customers"))
    return placed.join(per_day, ["place_name", "dt"]).groupBy("user_id").agg(F.max("customers").cast("int").alias("office_peers_same_day"))


def tag_snapshot(snapshot: DataFrame, book: SegmentBook, computed: dict[str, DataFrame]) -> DataFrame:
    """The snapshot with the book's computed tags (0 when a user has none), bands and derived tags."""
    tagged = snapshot
    for name, values in computed.items():
        tagged = tagged.join(values, "user_id", "left").withColumn(name, F.coalesce(F.col(name), F.lit(0)))
    for band in book.bands:
        tagged = tagged.withColumn(band.name, F.expr(band.sql))
    for tag in book.derived:
        tagged = tagged.withColumn(tag.name, F.expr(tag.sql))
    return tagged


def memberships(tagged: DataFrame, book: SegmentBook, dt: date) -> DataFrame:
    """(segment, user_id, dt): one row per member of every segment on ``dt``."""
    parts = [tagged.where(F.expr(segment.sql_on(dt))).select(F.lit(segment.name).alias("segment"), "user_id") for segment in book.segments]
    none = tagged.sparkSession.createDataFrame([], "segment string, user_id string")
    return reduce(DataFrame.unionByName, parts, none).withColumn("dt", F.lit(dt))


def new_user_indices(users: DataFrame, index: DataFrame, dt: date) -> DataFrame:
    """(user_id, user_index, first_dt) for users without an index yet: after the largest given, by user id.

    Indices are never reused or changed, so a bitmap stays readable on every date.
    """
    start = index.agg(F.coalesce(F.max("user_index"), F.lit(-1)).alias("start"))
    fresh = users.select("user_id").distinct().join(index.select("user_id"), "user_id", "left_anti")
    # one numbering over all new users: the window has no partition on purpose
    warnings.filterwarnings("ignore", message=".*No Partition Defined for Window", category=UserWarning)
    numbered = fresh.withColumn("n", F.row_number().over(Window.orderBy("user_id")))
    return numbered.crossJoin(start).select(
        "user_id", (F.col("start") + F.col("n")).cast("bigint").alias("user_index"), F.lit(dt).alias("first_dt")
    )


def segment_bitmaps(members: DataFrame, index: DataFrame, book: SegmentBook, dt: date) -> DataFrame:
    """One row per declared segment: its Roaring bitmap of member indices and the counts that must agree.

    members: membership rows; bitmap_members: the bitmap's own cardinality
    (members without an index would be missing from it). The segments gate
    checks they agree.
    """
    spark = members.sparkSession
    blobs = _bitmaps(members, index, ["segment"])
    counted = members.groupBy("segment").agg(F.count("*").alias("members"))
    declared = spark.createDataFrame([(s.name, s.sql_on(dt)) for s in book.segments], "segment string, rule string")
    empty = serialise([])
    return (
        declared.join(counted, "segment", "left")
        .join(blobs, "segment", "left")
        .select(
            "segment",
            F.coalesce("members", F.lit(0)).cast("bigint").alias("members"),
            F.coalesce("bitmap_members", F.lit(0)).cast("bigint").alias("bitmap_members"),
            "rule",
            F.coalesce("bitmap", F.lit(bytearray(empty))).alias("bitmap"),
            F.lit(dt).alias("dt"),
        )
    )


def tag_value_bitmaps(tagged: DataFrame, index: DataFrame, book: SegmentBook, dt: date) -> DataFrame:
    """(tag, value, users, bitmap_members, bitmap, dt) for every value of the bitmap tags, and all_users."""
    everyone = tagged.select("user_id", F.lit(RESERVED).alias("tag"), F.lit("all").alias("value"))
    states = _states(tagged, book.bitmap_tags).unionByName(everyone)
    counted = states.groupBy("tag", "value").agg(F.count("*").alias("users"))
    return counted.join(_bitmaps(states, index, ["tag", "value"]), ["tag", "value"], "left").select(
        "tag",
        "value",
        "users",
        F.coalesce("bitmap_members", F.lit(0)).cast("bigint").alias("bitmap_members"),
        F.coalesce("bitmap", F.lit(bytearray(serialise([])))).alias("bitmap"),
        F.lit(dt).alias("dt"),
    )


def _bitmaps(rows: DataFrame, index: DataFrame, keys: list[str]) -> DataFrame:
    """keys -> the Roaring bitmap of the rows' user indices and its cardinality, built per group on the workers."""
    indexed = rows.join(index.select("user_id", "user_index"), "user_id").select(*keys, "user_index")
    schema = ", ".join(f"{key} string" for key in keys) + ", bitmap binary, bitmap_members bigint"
    return indexed.groupBy(*keys).applyInPandas(_bitmap_row(keys), schema)


def _bitmap_row(keys: list[str]):
    """A function for applyInPandas: one group's user indices -> its keys, serialised bitmap and cardinality."""

    def build(rows):
        import pandas as pd
        from pyroaring import BitMap

        bitmap = BitMap(rows["user_index"].astype("int64").tolist())
        bitmap.run_optimize()
        first = {key: [rows[key].iloc[0]] for key in keys}
        return pd.DataFrame({**first, "bitmap": [bitmap.serialize()], "bitmap_members": [len(bitmap)]})

    return build


def _states(tagged: DataFrame, tags: list[str]) -> DataFrame:
    """(user_id, tag, value): each tag's value as a string, 'unknown' when null."""
    pairs = [F.struct(F.lit(t).alias("tag"), F.coalesce(F.col(t).cast("string"), F.lit(UNKNOWN)).alias("value")) for t in tags]
    return tagged.select("user_id", F.explode(F.array(*pairs)).alias("s")).select("user_id", "s.tag", "s.value")


def distributions(tagged: DataFrame, members: DataFrame, book: SegmentBook, dt: date) -> DataFrame:
    """(segment, tag, value, users, share, dt): the distribution of each analysis tag inside each segment.

    The whole snapshot is the segment ``all_users``, as a baseline.
    """
    everyone = tagged.select(F.lit(RESERVED).alias("segment"), "user_id")
    groups = members.select("segment", "user_id").unionByName(everyone)
    counted = (
        groups.join(_states(tagged, book.distribution_tags), "user_id").groupBy("segment", "tag", "value").agg(F.count("*").alias("users"))
    )
    total = F.sum("users").over(Window.partitionBy("segment", "tag"))
    return counted.select("segment", "tag", "value", "users", (F.col("users") / total).alias("share"), F.lit(dt).alias("dt"))


def transitions(
    previous: DataFrame,
    tagged: DataFrame,
    previous_members: DataFrame,
    members: DataFrame,
    book: SegmentBook,
    dt: date,
    previous_segments: set[str],
) -> DataFrame:
    """(tag, from_value, to_value, users, dt): how users moved between D-1 and D.

    For each transition tag, its value on the previous snapshot and on D
    (both tagged with D's definitions, so a move is the user's, not a changed
    threshold's); for each segment, "in"/"out" as published each day, or
    "unknown" on D-1 for a segment not built that day (``previous_segments``
    are those that were). A user not in one of the snapshots is "absent" there.
    """
    tags = book.transition_tags
    before = _states(previous, tags)
    after = _states(tagged, tags)
    for segment in book.names():
        before = before.unionByName(_segment_state(previous, previous_members, segment, segment in previous_segments))
        after = after.unionByName(_segment_state(tagged, members, segment, True))
    moved = before.withColumnRenamed("value", "from_value").join(after.withColumnRenamed("value", "to_value"), ["user_id", "tag"], "full")
    return (
        moved.select(
            "tag", F.coalesce("from_value", F.lit(ABSENT)).alias("from_value"), F.coalesce("to_value", F.lit(ABSENT)).alias("to_value")
        )
        .groupBy("tag", "from_value", "to_value")
        .agg(F.count("*").alias("users"))
        .withColumn("dt", F.lit(dt))
    )


def _segment_state(tagged: DataFrame, members: DataFrame, segment: str, built: bool) -> DataFrame:
    inside = members.where(F.col("segment") == segment).select("user_id", F.lit(True).alias("member"))
    state = F.when(F.col("member"), F.lit(IN)).otherwise(F.lit(OUT)) if built else F.lit(UNKNOWN)
    return (
        tagged.select("user_id")
        .join(inside, "user_id", "left")
        .select("user_id", F.lit(SEGMENT_STATE + segment).alias("tag"), state.alias("value"))
    )
