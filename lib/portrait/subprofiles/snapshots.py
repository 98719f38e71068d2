"""Each sub-profile of D as known on D: the reads of a sub-profile stage, then its pure transform.

The facts come summed per user and day from the daily aggregate layer
(``portrait.subprofiles.daily.DailyAsOf``: the dws tables, with what they
cannot hold summed from silver at read time); users and addresses from silver.

Used by the sub-profile stages (jobs/subprofiles.py) and by the models stage,
which computes the churn model's features for past dates that have no
published snapshot with exactly these functions. Each reads no further back
than the longest window its tags declare.
"""

from __future__ import annotations

from pyspark.sql import DataFrame

from portrait.clean.as_of import SilverAsOf
from portrait.subprofiles.behavior import behavior_from_days
from portrait.subprofiles.consumption import consumption_from_days
from portrait.subprofiles.daily import DailyAsOf
from portrait.subprofiles.interest import interest_from_days
from portrait.subprofiles.product_line import product_line_from_days
from portrait.subprofiles.social import social_from_days
from portrait.tags.dictionary import TagDictionary


def _readers(ctx) -> tuple[SilverAsOf, DailyAsOf, TagDictionary]:
    tags = TagDictionary.load(ctx.conf)
    return SilverAsOf(ctx), DailyAsOf(ctx, tags), tags


def build_consumption(ctx) -> DataFrame:
    silver, daily, tags = _readers(ctx)
    refunds = daily.events(since=tags.first_day(ctx.dt, "refund_count", "refund_amount"))
    return consumption_from_days(silver.users(), daily.orders(), refunds, ctx.dt, tags)


def build_behavior(ctx) -> DataFrame:
    silver, daily, tags = _readers(ctx)
    since = tags.first_day(ctx.dt, "last_active_dt")
    return behavior_from_days(silver.users(), daily.events(since), daily.hours(since), ctx.dt, tags)


def build_interest(ctx) -> DataFrame:
    silver, daily, tags = _readers(ctx)
    return interest_from_days(silver.users(), daily.categories(tags.first_day(ctx.dt, "interest_weights")), ctx.dt, tags)


def build_social(ctx) -> DataFrame:
    silver, daily, tags = _readers(ctx)
    uses = daily.addresses(since=tags.first_day(ctx.dt, "common_addresses"))
    return social_from_days(silver.users(), uses, silver.addresses(), ctx.dt, tags)


def build_product_line(ctx) -> DataFrame:
    silver, daily, tags = _readers(ctx)
    since = tags.first_day(ctx.dt, "line_last_use_dt", "line_usage")
    lines = ctx.conf.landing["sources"]["events"]["fields"]["product_line"]["values"]
    return product_line_from_days(silver.users(), daily.lines(since), ctx.dt, tags, lines)


#: The table each builder's rows are published to.
BUILDERS = {
    "profile.consumption": build_consumption,
    "profile.behavior": build_behavior,
    "profile.interest": build_interest,
    "profile.social": build_social,
    "profile.product_line": build_product_line,
}
