"""The group analysis of one date as a chart: tag distributions per segment and day-over-day moves.

Reads gold.segment_analysis and gold.tag_transitions with delta-rs (no engine)
and draws one PNG under {lake}/ops/reports/.
"""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pandas as pd

from portrait.core import storage

ANALYSIS, TRANSITIONS = "gold.segment_analysis", "gold.tag_transitions"


def read_date(catalog, table: str, dt: date) -> pd.DataFrame:
    from deltalake import DeltaTable

    if not catalog.exists(table):
        raise LookupError(f"{table} does not exist yet in {catalog.lake}; run the segments stage first")
    return DeltaTable(catalog.spec(table).path, storage_options=storage.delta_options(catalog.spec(table).path)).to_pandas(
        filters=[("dt", "=", dt)]
    )


def segment_moves(transitions: pd.DataFrame) -> pd.DataFrame:
    """Per segment: users who entered it (from out or absent), left it, and stayed in, D-1 -> D."""
    moves = transitions[transitions["tag"].str.startswith("segment:")].copy()
    moves["segment"] = moves["tag"].str.removeprefix("segment:")
    moves["move"] = "other"
    moves.loc[(moves["from_value"] != "in") & (moves["to_value"] == "in"), "move"] = "entered"
    moves.loc[(moves["from_value"] == "in") & (moves["to_value"] != "in"), "move"] = "left"
    moves.loc[(moves["from_value"] == "in") & (moves["to_value"] == "in"), "move"] = "stayed"
    table = moves[moves["move"] != "other"].pivot_table(index="segment", columns="move", values="users", aggfunc="sum", fill_value=0)
    return table.reindex(columns=["entered", "left", "stayed"], fill_value=0)


def render(catalog, dt: date) -> tuple[Path, str]:
    """Draw the chart for ``dt``; returns its path and a short text summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    analysis, transitions = read_date(catalog, ANALYSIS, dt), read_date(catalog, TRANSITIONS, dt)
    if analysis.empty:
        raise LookupError(f"no group analysis stored for {dt}; run the segments stage for that date")
    dist_tags = sorted(analysis["tag"].unique())
    state_tags = sorted(t for t in transitions["tag"].unique() if not t.startswith("segment:"))
    panels = len(dist_tags) + len(state_tags) + 1
    columns = 2
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 3.6 * rows), squeeze=False)
    flat = list(axes.flat)
    for axis, tag in zip(flat, dist_tags):
        shares = analysis[analysis["tag"] == tag].pivot_table(index="segment", columns="value", values="share", fill_value=0)
        shares.plot.barh(stacked=True, ax=axis, legend=True, width=0.8)
        axis.set_title(f"{tag}: share within each segment")
        axis.set_xlim(0, 1)
        axis.legend(fontsize=7, loc="lower right")
    for axis, tag in zip(flat[len(dist_tags) :], state_tags):
        matrix = transitions[transitions["tag"] == tag].pivot_table(index="from_value", columns="to_value", values="users", fill_value=0)
        axis.imshow(matrix.to_numpy(), cmap="Blues", aspect="auto")
        axis.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30, fontsize=8)
        axis.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=8)
        for (i, j), users in pd.DataFrame(matrix.to_numpy()).stack().items():
            axis.text(j, i, f"{int(users):,}", ha="center", va="center", fontsize=7)
        axis.set_title(f"{tag}: D-1 (rows) -> D (columns)")
    moves = segment_moves(transitions)
    axis = flat[len(dist_tags) + len(state_tags)]
    if not moves.empty:
        moves.plot.barh(ax=axis)
    axis.set_title("segment membership moves D-1 -> D")
    for axis in flat[panels:]:
        axis.axis("off")
    figure.suptitle(f"portrait segments {dt}")
    figure.tight_layout()
    path = storage.join(catalog.lake, "ops", "reports", f"segments_{dt}.png")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    storage.write_bytes(path, buffer.getvalue())
    plt.close(figure)
    return path, moves.to_string() if not moves.empty else "no segment moves (no previous snapshot?)"
