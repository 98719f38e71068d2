"""Master and monitor stages: the day's sub-profiles -> gold.profile(_snapshot) -> ops.tag_monitoring.

``run`` joins the published sub-profile and model-tag partitions of D into
one row per user known on D (lib/master.py) and writes it twice: the dt = D
partition of gold.profile_snapshot (any past day stays readable), and an
upsert into gold.profile by user_id, where a row replaces the stored one only
if its dt is not older - so rerunning an old date never rolls a newer profile
back. Both are staged, gated and published together (lib/pipeline.py).

``run_monitor`` summarises every tag of the snapshot of D beside the previous
snapshot date (lib/monitoring.py) into ops.tag_monitoring; its gate flags a
tag whose coverage or distribution moved beyond conf/monitoring.yaml.
"""
from __future__ import annotations

from pyspark.sql import functions as F

from portrait.jobs.subprofiles import SilverAsOf
from portrait.lib import monitoring
from portrait.lib.master import PRODUCT_LINES, SECTIONS, master_profile
from portrait.lib.pipeline import Output, RunContext

PROFILE, SNAPSHOT = "gold.profile", "gold.profile_snapshot"


def run(ctx: RunContext) -> list[Output]:
    catalog = ctx.catalog

    def of_day(table: str):
        return catalog.read(ctx.spark, table).where(F.col("dt") == F.lit(ctx.dt))

    df = master_profile(
        SilverAsOf(ctx).users(),
        {table: of_day(table) for table in SECTIONS},
        of_day(PRODUCT_LINES),
        ctx.dt,
        list(catalog.spec(PROFILE).columns),
    )
    rows = ctx.materialize(df, "master")  # computed once, written twice
    ctx.notes["users"] = rows.count()
    return [Output(SNAPSHOT, rows, "partition", ctx.dt), Output(PROFILE, rows, "upsert")]


def run_monitor(ctx: RunContext) -> list[Output]:
    settings = monitoring.load_settings(ctx.conf)
    snapshots = ctx.catalog.read(ctx.spark, SNAPSHOT)
    previous = snapshots.where(F.col("dt") < F.lit(ctx.dt)).agg(F.max("dt")).first()[0]
    days = [ctx.dt] if previous is None else [previous, ctx.dt]
    tags = monitoring.tag_kinds(ctx.catalog.spec(SNAPSHOT).columns, settings)
    summary = monitoring.summarise(snapshots.where(F.col("dt").isin(*days)), tags, settings["top_values"])
    rows = monitoring.compare(summary, ctx.dt, previous, settings)
    ctx.notes["previous_snapshot"] = None if previous is None else str(previous)
    df = ctx.spark.createDataFrame(rows, ctx.catalog.spec(monitoring.TABLE).ddl)
    return [Output(monitoring.TABLE, df, "partition", ctx.dt)]
