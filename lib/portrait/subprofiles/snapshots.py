"""Each sub-profile of D from silver as known on D: the reads of a sub-profile stage, then its pure transform.

Used by the sub-profile stages (jobs/subprofiles.py) and by the models stage,
which computes the churn model's features for past dates that have no
published snapshot with exactly these functions. Each reads no further back
than the longest window its tags declare.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from portrait.clean.as_of import SilverAsOf
from portrait.subprofiles.behavior import behavior
from portrait.subprofiles.consumption import consumption
from portrait.subprofiles.interest import interest
from portrait.subprofiles.product_line import product_line
from portrait.subprofiles.social import social
from portrait.tags.dictionary import TagDictionary


def build_consumption(ctx) -> DataFrame:
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    refunds = silver.events(since=tags.first_day(ctx.dt, "refund_count", "refund_amount")).where(F.col("event_type") == "refund")
    return consumption(silver.users(), silver.orders(), refunds, ctx.dt, tags)


def build_behavior(ctx) -> DataFrame:
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    events = silver.events(since=tags.first_day(ctx.dt, "last_active_dt"))
    return behavior(silver.users(), events, ctx.dt, tags, silver.time_zone)


def build_interest(ctx) -> DataFrame:
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    since = tags.first_day(ctx.dt, "interest_weights")
    return interest(silver.users(), silver.events(since), silver.order_items(since), ctx.dt, tags)


def build_social(ctx) -> DataFrame:
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    orders = silver.orders(since=tags.first_day(ctx.dt, "common_addresses"))
    return social(silver.users(), orders, silver.addresses(), ctx.dt, tags)


def build_product_line(ctx) -> DataFrame:
    silver, tags = SilverAsOf(ctx), TagDictionary.load(ctx.conf)
    since = tags.first_day(ctx.dt, "line_last_use_dt", "line_usage")
    lines = ctx.conf.landing["sources"]["events"]["fields"]["product_line"]["values"]
    return product_line(silver.users(), silver.events(since), silver.orders(since), ctx.dt, tags, lines)


#: The table each builder's rows are published to.
BUILDERS = {
    "profile.consumption": build_consumption,
    "profile.behavior": build_behavior,
    "profile.interest": build_interest,
    "profile.social": build_social,
    "profile.product_line": build_product_line,
}
