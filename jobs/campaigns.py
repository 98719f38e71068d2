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
from datetime import UTC, datetime, timedelta

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from portrait.campaigns import assignment, channels, results
from portrait.campaigns.declarations import Campaign, CampaignBook, load_campaigns
from portrait.core.pipeline import Output, RunContext, append_rows, stage_lock
from portrait.segments import audiences
from portrait.segments.rules import load_book

log = logging.getLogger(__name__)

ASSIGNMENTS, DELIVERIES, RESULTS = "gold.campaign_assignments", "ops.campaign_deliveries", "ops.campaign_results"
SNAPSHOT, MEMBERS, CONSENT, ORDERS = "gold.profile_snapshot", "gold.segment_members", "silver.consent", "silver.orders"
CONVERTING_STATUS = ("paid", "delivered")  # an order that counts as a conversion (not cancelled or refunded)


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
    orders = ctx.catalog.read(ctx.spark, ORDERS).where(F.col("status").isin(*CONVERTING_STATUS))
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


def _published_rows(ctx: RunContext, table: str, filters: list) -> pd.DataFrame:
    """Rows of a published table through delta-rs (the delivery loop needs no engine)."""
    from deltalake import DeltaTable

    from portrait.core import storage

    spec = ctx.catalog.spec(table)
    if not ctx.catalog.exists(table):
        return pd.DataFrame(columns=list(spec.columns))
    return DeltaTable(spec.path, storage_options=storage.delta_options(spec.path)).to_pandas(filters=filters)


def pending_deliveries(ctx: RunContext, campaign: Campaign) -> tuple[list[channels.Delivery], set[str]]:
    """(D's treatment deliveries of ``campaign``, the keys already settled in the outbox)."""
    rows = _published_rows(ctx, ASSIGNMENTS, [("dt", "=", ctx.dt), ("campaign", "=", campaign.name), ("arm", "=", assignment.TREATMENT)])
    outbox = _published_rows(ctx, DELIVERIES, [("dt", "=", ctx.dt), ("campaign", "=", campaign.name)])
    settled = set(outbox.loc[outbox["status"].isin(channels.SETTLED), "idempotency_key"])
    deliveries = [
        channels.Delivery(r.campaign, r.user_id, r.channel, r.idempotency_key, r.message, ctx.dt)
        for r in rows.sort_values("user_id").itertuples()
    ]
    return deliveries, settled


def send(ctx: RunContext, name: str, dry_run: bool = False, sender=None) -> dict:
    """Deliver D's treatment rows of campaign ``name`` not yet settled; one sender per campaign and date at a time."""
    book = load_campaigns(ctx.conf)
    campaign = book.campaign(name)
    with stage_lock(ctx, f"deliveries-{name}"):
        deliveries, settled = pending_deliveries(ctx, campaign)
        if dry_run:
            pending = [d for d in deliveries if d.idempotency_key not in settled]
            return {
                "campaign": name,
                "dt": str(ctx.dt),
                "assigned": len(deliveries),
                "settled": len(settled & {d.idempotency_key for d in deliveries}),
                "would_send": len(pending),
                "sample": [d.message for d in pending[:3]],
            }
        if not [d for d in deliveries if d.idempotency_key not in settled]:
            return {"campaign": name, "dt": str(ctx.dt), "skipped": len(deliveries), "delivered": 0, "rejected": 0, "failed": 0}
        sender = sender or channels.sender_for(campaign.channel)

        def record(batch, outcomes):
            at = datetime.now(UTC)
            bid = channels.batch_id(batch)
            by_key = {o.idempotency_key: o for o in outcomes}
            append_rows(
                ctx.lake,
                ctx.conf,
                DELIVERIES,
                [
                    {
                        "campaign": d.campaign,
                        "user_id": d.user_id,
                        "channel": d.channel,
                        "idempotency_key": d.idempotency_key,
                        "status": by_key[d.idempotency_key].status,
                        "attempts": by_key[d.idempotency_key].attempts,
                        "response_code": by_key[d.idempotency_key].response_code,
                        "error": by_key[d.idempotency_key].error,
                        "batch_id": bid,
                        "attempted_at": at,
                        "dt": ctx.dt,
                    }
                    for d in batch
                ],
            )

        counts = channels.deliver(deliveries, settled, sender, record, campaign.channel.batch_size)
        return {"campaign": name, "dt": str(ctx.dt), **counts}


def run_deliveries(ctx: RunContext) -> list[Output]:
    """The deliveries stage: send every active campaign of D; a channel without an endpoint is left pending (noted)."""
    book = load_campaigns(ctx.conf)
    sent, unsent = {}, {}
    for campaign in book.active(ctx.dt):
        try:
            sent[campaign.name] = send(ctx, campaign.name)
        except channels.ChannelConfigError as exc:
            unsent[campaign.name] = str(exc)
            log.warning("%s; its deliveries of %s stay pending", exc, ctx.dt)
    ctx.notes["deliveries"], ctx.notes["unsent"] = sent, unsent
    return []
