"""Sub-profile stages: the silver tables as known on D -> one snapshot partition per profile table.

Each stage reads silver as known at the end of D (``portrait.clean.as_of.SilverAsOf``:
no look-ahead, so a snapshot rerun later gives the same rows), no further back
than the longest window its tags declare, and replaces exactly the ``dt = D``
partition of its table (seed: 子画像作为中间结果并不会被删除).
"""

from __future__ import annotations

from portrait.core.pipeline import Output, RunContext
from portrait.subprofiles.snapshots import BUILDERS


def _snapshot(table: str):
    def run(ctx: RunContext) -> list[Output]:
        return [Output(table, BUILDERS[table](ctx), "partition", ctx.dt)]

    run.__doc__ = f"The stage that replaces the dt = D partition of {table}."
    return run


run_consumption = _snapshot("profile.consumption")
run_behavior = _snapshot("profile.behavior")
run_interest = _snapshot("profile.interest")
run_social = _snapshot("profile.social")
run_product_line = _snapshot("profile.product_line")
