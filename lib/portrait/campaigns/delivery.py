"""Sending a campaign's published assignments of one date, with ops.campaign_deliveries as the outbox.

Read and written with delta-rs: the delivery loop needs no engine, so the CLI
(`portrait campaign send`) and the deliveries stage run it the same way. One
sender per campaign and date at a time (a lock like a stage's).
"""

from __future__ import annotations

from datetime import UTC, datetime

from portrait.campaigns import assignment, channels
from portrait.campaigns.declarations import Campaign, load_campaigns
from portrait.campaigns.report import read_table
from portrait.core.pipeline import RunContext, append_rows, stage_lock

ASSIGNMENTS, DELIVERIES = "gold.campaign_assignments", "ops.campaign_deliveries"


def pending_deliveries(ctx: RunContext, campaign: Campaign) -> tuple[list[channels.Delivery], set[str]]:
    """(D's treatment deliveries of ``campaign``, the keys already settled in the outbox)."""
    if ctx.tables_read is not None:  # read with delta-rs, noted like the engine's reads (the bench counts them)
        for table in (ASSIGNMENTS, DELIVERIES):
            ctx.tables_read.setdefault(table, None)
    rows = read_table(ctx.catalog, ASSIGNMENTS, [("dt", "=", ctx.dt), ("campaign", "=", campaign.name), ("arm", "=", assignment.TREATMENT)])
    outbox = read_table(ctx.catalog, DELIVERIES, [("dt", "=", ctx.dt), ("campaign", "=", campaign.name)])
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
