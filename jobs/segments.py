"""Segments stage: gold.profile_snapshot of D -> audiences, their bitmaps and the group analysis.

Reads the master profile snapshot of D (and of D-1 for the day-over-day
moves), the orders and addresses known on D for the office tag, and the
churn threshold the models stage chose for D; everything else is the pure
transforms of lib/portrait/segments/audiences.py over the rules of conf/segments.yaml. A rule
that names an unknown tag or threshold stops the stage before anything runs.
"""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import functions as F

from portrait.clean.as_of import SilverAsOf
from portrait.core.pipeline import Output, RunContext
from portrait.segments import audiences
from portrait.segments.bitmaps import SEGMENT_BITMAPS, SEGMENT_MEMBERS, TAG_VALUE_BITMAPS, USER_INDEX
from portrait.segments.rules import SegmentBook, SegmentRuleError, chosen_by, load_book

ANALYSIS, TRANSITIONS = "gold.segment_analysis", "gold.tag_transitions"


def chosen_thresholds(ctx: RunContext) -> dict[str, float]:
    """Thresholds chosen for D by another stage (``chosen_by:``), where that stage chose one."""
    chosen = {}
    for name, table in chosen_by(ctx.conf.segments).items():
        if table != "ops.threshold_curve":
            raise SegmentRuleError(f"threshold {name}: chosen_by {table!r} is not supported (only ops.threshold_curve)")
        best = ctx.catalog.read(ctx.spark, table).where((F.col("dt") == F.lit(ctx.dt)) & F.col("best")).select("threshold").collect()
        if best:
            chosen[name] = float(best[0]["threshold"])
    return chosen


#: How each computed tag of conf/segments.yaml is computed: (silver as known on the day, day, its declaration).
COMPUTED_TAGS = {
    "office_peers_same_day": lambda silver, day, spec: audiences.office_peers(
        silver.orders(), silver.addresses(), day, spec["window_days"], spec["poi_type"]
    ),
}


def tagged_snapshot(ctx: RunContext, book: SegmentBook, day: date):
    """The master profile snapshot of ``day`` with the book's computed tags, bands and derived tags."""
    unknown = sorted(set(book.computed) - set(COMPUTED_TAGS))
    if unknown:
        raise SegmentRuleError(f"computed tag {', '.join(unknown)}: no computation is known for it (known: {', '.join(COMPUTED_TAGS)})")
    snapshot = ctx.catalog.read(ctx.spark, ctx.conf.segments.get("snapshot", "gold.profile_snapshot")).where(F.col("dt") == F.lit(day))
    silver = SilverAsOf(RunContext(ctx.spark, ctx.lake, day, ctx.conf))
    computed = {name: COMPUTED_TAGS[name](silver, day, spec) for name, spec in book.computed.items()}
    return audiences.tag_snapshot(snapshot, book, computed)


def run(ctx: RunContext) -> list[Output]:
    """Memberships, bitmaps, distributions and transitions for D."""
    book = load_book(ctx.conf, chosen_thresholds(ctx))
    ctx.notes["thresholds"] = {name: {"value": v, "from": book.threshold_sources[name]} for name, v in book.thresholds.items()}
    tagged = ctx.materialize(tagged_snapshot(ctx, book, ctx.dt), "tagged")
    users = tagged.count()
    if users == 0:
        raise LookupError(f"gold.profile_snapshot has no rows for {ctx.dt}; run the master stage for that date first")
    members = ctx.materialize(audiences.memberships(tagged, book, ctx.dt), "members")
    index = ctx.catalog.read(ctx.spark, USER_INDEX)
    fresh = ctx.materialize(audiences.new_user_indices(tagged, index, ctx.dt), "new_user_index")
    indices = index.unionByName(fresh)
    bitmaps = audiences.segment_bitmaps(members, indices, book, ctx.dt)
    previous_day = ctx.dt - timedelta(days=1)
    previous = tagged_snapshot(ctx, book, previous_day)
    previous_members = ctx.catalog.read(ctx.spark, SEGMENT_MEMBERS).where(F.col("dt") == F.lit(previous_day))
    built = ctx.catalog.read(ctx.spark, SEGMENT_BITMAPS).where(F.col("dt") == F.lit(previous_day)).select("segment").collect()
    ctx.notes["segments"] = {row["segment"]: row["count"] for row in members.groupBy("segment").count().collect()}
    ctx.notes["snapshot_users"] = users
    return [
        Output(USER_INDEX, fresh, "upsert"),
        Output(SEGMENT_MEMBERS, members, "partition", ctx.dt),
        Output(SEGMENT_BITMAPS, bitmaps, "partition", ctx.dt),
        Output(TAG_VALUE_BITMAPS, audiences.tag_value_bitmaps(tagged, indices, book, ctx.dt), "partition", ctx.dt),
        Output(ANALYSIS, audiences.distributions(tagged, members, book, ctx.dt), "partition", ctx.dt),
        Output(
            TRANSITIONS,
            audiences.transitions(previous, tagged, previous_members, members, book, ctx.dt, {r["segment"] for r in built}),
            "partition",
            ctx.dt,
        ),
    ]
