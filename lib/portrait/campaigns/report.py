"""A campaign's measured results as text and a chart, read with delta-rs (no engine).

The newest measuring date of ops.campaign_results holds every matured send
date; beside them the pooled figures (all send dates together), which is what
the retention threshold reads as the measured success rate.
"""

from __future__ import annotations

import io
from datetime import date

import pandas as pd

from portrait.campaigns import results
from portrait.core import storage

RESULTS = "ops.campaign_results"


def read_table(catalog, table: str, filters: list | None = None) -> pd.DataFrame:
    from deltalake import DeltaTable

    spec = catalog.spec(table)
    if not catalog.exists(table):
        return pd.DataFrame(columns=list(spec.columns))
    return DeltaTable(spec.path, storage_options=storage.delta_options(spec.path)).to_pandas(filters=filters)


def latest_results(catalog, campaign: str, measured_on: date | None = None) -> pd.DataFrame:
    """The campaign's rows of the newest measuring date (or ``measured_on``), by send date."""
    rows = read_table(catalog, RESULTS, [("campaign", "=", campaign)])
    if rows.empty:
        return rows
    day = measured_on or rows["measured_dt"].max()
    return rows[rows["measured_dt"] == day].sort_values("send_dt", ignore_index=True)


def pooled(rows: pd.DataFrame) -> results.Result | None:
    """All send dates together (sums of the arms), or None without rows."""
    if rows.empty:
        return None
    t = results.ArmFigures(int(rows["treated"].sum()), int(rows["treated_converted"].sum()), 0.0, 0.0)
    h = results.ArmFigures(int(rows["holdout"].sum()), int(rows["holdout_converted"].sum()), 0.0, 0.0)
    result = results.measure(t, h, 0.0)
    return results.Result(
        **{
            **result.to_dict(),
            "incremental_orders": float(rows["incremental_orders"].sum()),
            "incremental_revenue": float(rows["incremental_revenue"].sum()),
            "offer_cost": float(rows["offer_cost"].sum()),
            "profit": float(rows["profit"].sum()),
        }
    )


def summary(campaign: str, rows: pd.DataFrame) -> str:
    if rows.empty:
        return f"campaign {campaign}: no results yet (a send date is measured once its horizon has passed)"
    lines = [f"campaign {campaign}: measured {rows['measured_dt'].max()}, {len(rows)} send date(s)"]
    lines.append(f"{'send_dt':<11}{'treated':>8}{'holdout':>8}{'conv_t':>8}{'conv_h':>8}{'uplift':>8}  {'95% interval':<17}{'profit':>10}")
    for r in rows.itertuples():
        lines.append(
            f"{r.send_dt!s:<11}{r.treated:>8}{r.holdout:>8}{r.treated_conversion:>8.3f}{r.holdout_conversion:>8.3f}"
            f"{r.uplift:>+8.3f}  [{r.uplift_low:+.3f}, {r.uplift_high:+.3f}] {r.profit:>10.1f}"
        )
    p = pooled(rows)
    lines.append(
        f"{'all':<11}{p.treated:>8}{p.holdout:>8}{p.treated_conversion:>8.3f}{p.holdout_conversion:>8.3f}"
        f"{p.uplift:>+8.3f}  [{p.uplift_low:+.3f}, {p.uplift_high:+.3f}] {p.profit:>10.1f}"
    )
    lines.append(f"incremental orders {p.incremental_orders:.1f}, revenue {p.incremental_revenue:.1f}, offer cost {p.offer_cost:.1f}")
    return "\n".join(lines)


def plot(catalog, campaign: str, rows: pd.DataFrame, out: str | None = None) -> str:
    """Uplift per send date with its interval, and conversion per arm; a PNG under {lake}/ops/reports/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    x = pd.to_datetime(rows["send_dt"])
    left.errorbar(x, rows["uplift"], yerr=[rows["uplift"] - rows["uplift_low"], rows["uplift_high"] - rows["uplift"]], fmt="o", capsize=3)
    left.axhline(0, color="grey", linewidth=0.8)
    left.set_title(f"{campaign}: uplift per send date (95 % interval)")
    right.plot(x, rows["treated_conversion"], "o-", label="treatment")
    right.plot(x, rows["holdout_conversion"], "s--", label="holdout")
    right.set_ylim(0, 1)
    right.legend()
    right.set_title("conversion within the horizon")
    figure.autofmt_xdate()
    figure.tight_layout()
    path = out or storage.join(catalog.lake, "ops", "reports", f"campaign_{campaign}.png")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    storage.write_bytes(path, buffer.getvalue())
    plt.close(figure)
    return path
