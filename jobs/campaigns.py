"""Campaigns (conf/campaigns.yaml): assign each active campaign's audience of D, deliver, and measure.

Stage ``campaigns`` (after segments) writes, behind its gate,
``gold.campaign_assignments`` for D (treatment / holdout by a hash of campaign
and user, among consenting users under the frequency cap) and
``ops.campaign_results`` for every send date whose horizon has passed by D.
Stage ``deliveries`` (after campaigns) sends D's published treatment rows
through each campaign's channel, with ``ops.campaign_deliveries`` as the outbox
(lib/portrait/campaigns/channels.py), and publishes nothing itself.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from portrait.campaigns import assignment, channels, delivery, results
from portrait.campaigns.declarations import CampaignBook, load_campaigns
from portrait.core.pipeline import Output, RunContext
from portrait.segments import audiences
from portrait.segments.rules import load_book

log = logging.getLogger(__name__)

ASSIGNMENTS, DELIVERIES, RESULTS = "gold.campaign_assignments", "ops.campaign_deliveries", "ops.campaign_results"
SNAPSHOT, MEMBERS, CONSENT, ORDERS = "gold.profile_snapshot", "gold.segment_members", "silver.consent", "silver.orders"


def _tagged(ctx: RunContext, day) -> DataFrame:
    """The snapshot of ``day`` with the segment book's bands and derived tags (what a rule audience reads)."""
    snapshot = ctx.catalog.read(ctx.spark, SNAPSHOT).where(F.col("dt") == F.lit(day))
    return audiences.tag_snapshot(snapshot, load_book(ctx.conf), {})


def assignments(ctx: RunContext, book: CampaignBook) -> DataFrame:
    """gold.campaign_assignments for ``ctx.dt``: every active campaign in declaration order (the cap counts earlier ones)."""
    dt, previous = ctx.dt, ctx.dt - timedelta(days=1)
    today, yesterday = ctx.materialize(_tagged(ctx, dt), "tagged"), _tagged(ctx, previous)
    members = ctx.catalog.read(ctx.spark, MEMBERS).where(F.col("dt").isin(dt, previous))
    consent = ctx.catalog.read(ctx.spark, CONSENT)
    window_start = dt - timedelta(days=book.cap_days)
    earlier = ctx.catalog.read(ctx.spark, ASSIGNMENTS).where((F.col("dt") > F.lit(window_start)) & (F.col("dt") < F.lit(dt)))
    earlier = earlier.select("user_id", "arm", "dt")
    assigned = ctx.spark.createDataFrame([], ctx.catalog.spec(ASSIGNMENTS).ddl)
    sizes = {}
    for campaign in book.active(dt):
        now = assignment.audience(today, members.where(F.col("dt") == F.lit(dt)), campaign)
        before = assignment.audience(yesterday, members.where(F.col("dt") == F.lit(previous)), campaign)
        users = assignment.to_contact(now, before, campaign)
        users = assignment.consenting(users, consent, campaign.consent)
        users = assignment.under_cap(
            users, earlier.unionByName(assigned.select("user_id", "arm", "dt")), book.cap_contacts, book.cap_days, dt
        )
        rows = ctx.materialize(assignment.assign(users, today, campaign, dt), f"assigned_{campaign.name}")
        sizes[campaign.name] = {r["arm"]: r["count"] for r in rows.groupBy("arm").count().collect()}
        assigned = assigned.unionByName(rows)
    ctx.notes["assigned"] = sizes
    return assigned


def measured(ctx: RunContext, book: CampaignBook) -> DataFrame:
    """ops.campaign_results on ``ctx.dt``: every campaign's send dates with send date + horizon <= D."""
    spec = ctx.catalog.spec(RESULTS)
    rows = []
    stored = ctx.catalog.read(ctx.spark, ASSIGNMENTS)
    orders = ctx.catalog.read(ctx.spark, ORDERS).where(F.col("status").isin(*results.CONVERTING_STATUS))
    for campaign in book.campaigns.values():
        matured = stored.where(
            (F.col("campaign") == campaign.name) & (F.col("dt") <= F.lit(ctx.dt - timedelta(days=campaign.horizon_days)))
        )
        figures = (
            assignment.converted(matured, orders, campaign.horizon_days)
            .groupBy("dt", "arm")
            .agg(
                F.count("*").alias("users"),
                F.sum(F.when(F.col("orders") > 0, 1).otherwise(0)).alias("converted"),
                F.sum("orders").alias("orders"),
                F.sum("revenue").alias("revenue"),
            )
            .toPandas()
        )
        for send_dt, arms in figures.groupby("dt"):
            by_arm = {
                row.arm: results.ArmFigures(int(row.users), int(row.converted), float(row.orders), float(row.revenue))
                for row in arms.itertuples()
            }
            if assignment.TREATMENT not in by_arm or assignment.HOLDOUT not in by_arm:
                log.info("campaign %s on %s: an arm is empty, not measured", campaign.name, send_dt)
                continue
            result = results.measure(by_arm[assignment.TREATMENT], by_arm[assignment.HOLDOUT], campaign.offer_cost)
            rows.append(
                {
                    "campaign": campaign.name,
                    "send_dt": send_dt,
                    "horizon_days": campaign.horizon_days,
                    **result.to_dict(),
                    "measured_dt": ctx.dt,
                }
            )
    ctx.notes["measured"] = len(rows)
    frame = pd.DataFrame(rows, columns=list(spec.columns))
    return ctx.spark.createDataFrame(
        frame.astype(
            {"treated": "int64", "holdout": "int64", "treated_converted": "int64", "holdout_converted": "int64", "horizon_days": "int32"}
        )
        if rows
        else [],
        spec.ddl,
    )


def run(ctx: RunContext) -> list[Output]:
    book = load_campaigns(ctx.conf)
    return [
        Output(ASSIGNMENTS, assignments(ctx, book), "partition", ctx.dt),
        Output(RESULTS, measured(ctx, book), "partition", ctx.dt),
    ]


# --------------------------------------------------------------------------- delivery


def run_deliveries(ctx: RunContext) -> list[Output]:
    """The deliveries stage: send every active campaign of D; a channel without an endpoint is left pending (noted)."""
    book = load_campaigns(ctx.conf)
    sent, unsent = {}, {}
    for campaign in book.active(ctx.dt):
        try:
            sent[campaign.name] = delivery.send(ctx, campaign.name)
        except channels.ChannelConfigError as exc:
            unsent[campaign.name] = str(exc)
            log.warning("%s; its deliveries of %s stay pending", exc, ctx.dt)
    ctx.notes["deliveries"], ctx.notes["unsent"] = sent, unsent
    return []
