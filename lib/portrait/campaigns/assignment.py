"""Who a campaign contacts on a date, and in which arm: pure DataFrame transforms.

The audience of the day (a segment's published members, or a rule over the
tagged snapshot), its entrants when the campaign contacts only those, minus
users without the campaign's consent and users at the frequency cap, split by
a hash of (campaign, user): the same user is in the same arm on every date of
the campaign and in every rerun. :func:`arm_of` is the same split in Python
(the generator uses it to simulate the effect on the treated).
"""

from __future__ import annotations

import hashlib
import string
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from portrait.campaigns.declarations import Campaign

TREATMENT, HOLDOUT = "treatment", "holdout"
_SCALE = float(16**8)  # the first 8 hex digits of a sha256, as a share of [0, 1)


def hash_share(campaign: str, user_id: str) -> float:
    """The user's place in [0, 1) for ``campaign``: the first 32 bits of sha256("campaign|user")."""
    return int(hashlib.sha256(f"{campaign}|{user_id}".encode()).hexdigest()[:8], 16) / _SCALE


def arm_of(campaign: str, user_id: str, holdout: float) -> str:
    return HOLDOUT if hash_share(campaign, user_id) < holdout else TREATMENT


def idempotency_key(campaign: str, user_id: str, dt: date) -> str:
    """What the receiver deduplicates on: one key per (campaign, user, send date)."""
    return hashlib.sha256(f"{campaign}|{user_id}|{dt}".encode()).hexdigest()


def _hash_share_col(campaign: str) -> F.Column:
    digest = F.sha2(F.concat(F.lit(f"{campaign}|"), F.col("user_id")), 256)
    return F.conv(F.substring(digest, 1, 8), 16, 10).cast("double") / F.lit(_SCALE)


def audience(tagged: DataFrame, members: DataFrame, campaign: Campaign) -> DataFrame:
    """user_id of the campaign's audience: a segment's members as published, or the rule on the tagged snapshot."""
    if campaign.audience.startswith("segment:"):
        return members.where(F.col("segment") == campaign.audience.split(":", 1)[1]).select("user_id").distinct()
    return tagged.where(F.expr(campaign.audience_sql)).select("user_id")


def to_contact(today: DataFrame, yesterday: DataFrame, campaign: Campaign) -> DataFrame:
    """Every member (contact: members) or those not in yesterday's audience (contact: entrants)."""
    return today if campaign.contact == "members" else today.join(yesterday, "user_id", "left_anti")


def consenting(users: DataFrame, consent: DataFrame, channel: str) -> DataFrame:
    """``users`` who have granted ``channel`` (silver.consent: the latest record per user and channel holds)."""
    granted = consent.where((F.col("channel") == channel) & F.col("granted")).select("user_id")
    return users.join(granted, "user_id", "left_semi")


def under_cap(users: DataFrame, earlier: DataFrame, contacts: int, days: int, dt: date) -> DataFrame:
    """``users`` with fewer than ``contacts`` treatment assignments in the ``days`` days up to ``dt`` (any campaign).

    ``earlier`` is gold.campaign_assignments (and the campaigns already assigned on ``dt``
    in this run); holdout rows are not contacts.
    """
    window = (F.col("dt") > F.lit(dt - timedelta(days=days))) & (F.col("dt") <= F.lit(dt)) & (F.col("arm") == TREATMENT)
    capped = earlier.where(window).groupBy("user_id").count().where(F.col("count") >= contacts).select("user_id")
    return users.join(capped, "user_id", "left_anti")


def render_sql(campaign: Campaign, types: dict[str, str]) -> F.Column:
    """The template as a column: literal text and the placeholders' values (empty for a null tag).

    ``types`` are the tags' Spark types: a whole double renders without ".0".
    """
    parts = []
    for text, field, _, _ in string.Formatter().parse(campaign.template):
        if text:
            parts.append(F.lit(text))
        if field == "offer_value":
            parts.append(F.lit(f"{campaign.offer_value:g}"))
        elif field == "campaign":
            parts.append(F.lit(campaign.name))
        elif field is not None:
            value = F.col(f"`{field}`")
            if types.get(field) in ("double", "float"):
                value = F.when(value == F.floor(value), value.cast("bigint").cast("string")).otherwise(value.cast("string"))
            parts.append(F.coalesce(value.cast("string"), F.lit("")))
    return F.concat(*parts) if parts else F.lit("")


def assign(users: DataFrame, tagged: DataFrame, campaign: Campaign, dt: date) -> DataFrame:
    """gold.campaign_assignments rows for ``users`` (already filtered): arm, rendered message, idempotency key."""
    share = _hash_share_col(campaign.name)
    placeholders = [p for p in campaign.placeholders if p not in ("offer_value", "campaign")]
    with_tags = users.join(tagged.select("user_id", *[f"`{p}`" for p in placeholders]), "user_id", "left")
    key = F.sha2(F.concat(F.lit(f"{campaign.name}|"), F.col("user_id"), F.lit(f"|{dt}")), 256)
    return with_tags.select(
        F.lit(campaign.name).alias("campaign"),
        "user_id",
        F.when(share < F.lit(campaign.holdout), F.lit(HOLDOUT)).otherwise(F.lit(TREATMENT)).alias("arm"),
        F.lit(campaign.channel.name).alias("channel"),
        F.lit(campaign.consent).alias("consent"),
        render_sql(campaign, dict(tagged.dtypes)).alias("message"),
        key.alias("idempotency_key"),
        F.lit(dt).cast("date").alias("dt"),
    )


def converted(assignments: DataFrame, orders: DataFrame, horizon_days: int) -> DataFrame:
    """Per assigned user: orders and paid amount in (send date, send date + horizon]; 0 when none.

    ``orders`` are silver.orders (cancelled ones left out by the caller).
    """
    o = orders.select(F.col("user_id"), F.col("dt").alias("order_dt"), "amount")
    joined = assignments.join(o, "user_id", "left").where(
        F.col("order_dt").isNull() | ((F.col("order_dt") > F.col("dt")) & (F.col("order_dt") <= F.date_add(F.col("dt"), horizon_days)))
    )
    counted = F.count("order_dt")
    per_user = joined.groupBy("campaign", "user_id", "arm", "dt").agg(
        counted.alias("orders"), F.coalesce(F.sum(F.when(F.col("order_dt").isNotNull(), F.col("amount"))), F.lit(0.0)).alias("revenue")
    )
    # users whose only order rows fell outside the horizon were filtered out above: put them back with zeros
    everyone = assignments.select("campaign", "user_id", "arm", "dt").distinct()
    return everyone.join(per_user, ["campaign", "user_id", "arm", "dt"], "left").fillna({"orders": 0, "revenue": 0.0})
