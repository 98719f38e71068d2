"""Monitor stage: every tag of the master snapshot of D beside the previous snapshot date -> ops.tag_monitoring.

Coverage, distribution and day-over-day change per tag (lib/portrait/master/monitoring.py);
its gate flags a tag whose coverage or distribution moved beyond conf/monitoring.yaml.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from portrait.core.pipeline import Output, RunContext
from portrait.master import monitoring

SNAPSHOT = "gold.profile_snapshot"


def run(ctx: RunContext) -> list[Output]:
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
