"""Master stage: the day's sub-profiles and model tags -> gold.profile_snapshot and gold.profile.

``run`` joins the published sub-profile and model-tag partitions of D into
one row per user known on D (lib/portrait/master/merge.py) and writes it twice: the dt = D
partition of gold.profile_snapshot (any past day stays readable), and an
upsert into gold.profile by user_id, where a row replaces the stored one only
if its dt is not older - so rerunning an old date never rolls a newer profile
back. Both are staged, gated and published together (lib/portrait/core/pipeline.py).
"""

from __future__ import annotations

from pyspark.sql import functions as F

from portrait.clean.as_of import SilverAsOf
from portrait.core.pipeline import Output, RunContext
from portrait.master.merge import PROFILE, layout, master_profile

SNAPSHOT = "gold.profile_snapshot"


def run(ctx: RunContext) -> list[Output]:
    catalog = ctx.catalog

    def of_day(table: str):
        return catalog.read(ctx.spark, table).where(F.col("dt") == F.lit(ctx.dt))

    sections = layout(catalog)
    df = master_profile(
        SilverAsOf(ctx).users(),
        {table: of_day(table) for table in sections.sections},
        {table: of_day(table) for table, _ in sections.nested.values()},
        ctx.dt,
        sections,
    )
    rows = ctx.materialize(df, "master")  # computed once, written twice
    ctx.notes["users"] = rows.count()
    return [Output(SNAPSHOT, rows, "partition", ctx.dt), Output(PROFILE, rows, "upsert")]
