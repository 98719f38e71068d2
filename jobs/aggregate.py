"""Aggregate stage: the silver rows of landing date D -> the dws daily aggregates.

Sums the day's silver rows once per user, business date and landing date
(``portrait.subprofiles.daily.landing_days``) and replaces exactly the
``landing_dt = D`` partition of every dws table, then records D in
``dws.landings``: the sub-profile stages read these sums instead of raw
events and orders, for every landing date recorded there.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from portrait.core.pipeline import Output, RunContext
from portrait.subprofiles.daily import LANDINGS, landing_days
from portrait.tags.dictionary import TagDictionary


def run(ctx: RunContext) -> list[Output]:
    tables = landing_days(ctx, TagDictionary.load(ctx.conf))
    built = ctx.spark.createDataFrame([(ctx.dt,)], "landing_dt date").select("landing_dt", F.current_timestamp().alias("built_at"))
    # dws.landings last: a landing date is recorded as built only with its sums
    return [*(Output(table, df, "partition", ctx.dt) for table, df in tables.items()), Output(LANDINGS, built, "partition", ctx.dt)]
