"""How good a probability is: ranking (AUC), calibration (Brier, reliability bins), accuracy.

A model tag is read as a probability, so it must rank users well *and* mean
what it says: of the users given 0.3, about 30 % should turn out positive.
The reliability bins show that, and the plot puts them beside the profit
curve for people who would rather look than read.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

from portrait.core import storage

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import brier_score_loss, roc_auc_score  # noqa: E402


def reliability_bins(outcomes, probabilities, bins: int = 10) -> pd.DataFrame:
    """Equal-width probability bins: users, mean predicted and observed rate in each (empty bins left out)."""
    y, p = np.asarray(outcomes, dtype=float), np.asarray(probabilities, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    frame = (
        pd.DataFrame({"bin": index, "p": p, "y": y})
        .groupby("bin")
        .agg(users=("p", "size"), mean_predicted=("p", "mean"), observed_rate=("y", "mean"))
    )
    frame.insert(0, "bin_low", edges[frame.index])
    frame.insert(1, "bin_high", edges[frame.index + 1])
    return frame.reset_index(drop=True)


def binary_metrics(outcomes, probabilities, threshold: float = 0.5, bins: int = 10) -> dict[str, float]:
    """AUC, Brier score, expected calibration error, accuracy at ``threshold``, and the base rates.

    AUC is NaN when only one outcome occurs (nothing to rank).
    """
    y, p = np.asarray(outcomes, dtype=float), np.asarray(probabilities, dtype=float)
    if len(y) == 0:
        raise ValueError("no outcomes to evaluate")
    table = reliability_bins(y, p, bins)
    return {
        "users": float(len(y)),
        "observed_rate": float(y.mean()),
        "mean_predicted": float(p.mean()),
        "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "calibration_error": float(np.sum(table["users"] * (table["mean_predicted"] - table["observed_rate"]).abs()) / len(y)),
        "accuracy": float(np.mean((p >= threshold) == (y == 1))),
    }


def plot_report(bins: pd.DataFrame, curve: pd.DataFrame | None, path: str | Path, title: str) -> Path:
    """A PNG: the reliability diagram, and the profit per threshold when a curve is given."""
    panels = 2 if curve is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    left = axes[0][0]
    left.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    left.plot(bins["mean_predicted"], bins["observed_rate"], marker="o", label="model")
    left.set(xlabel="mean predicted probability", ylabel="observed rate", xlim=(0, 1), ylim=(0, 1), title="reliability")
    left.legend(loc="upper left")
    if curve is not None:
        right = axes[0][1]
        for column in ("expected_profit", "realised_profit"):
            if column in curve:
                right.plot(curve["threshold"], curve[column], label=column.replace("_", " "))
        right.axhline(0, color="grey", linewidth=0.8)
        right.set(xlabel="threshold", ylabel="profit (yuan)", title="profit by threshold")
        right.legend(loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    path = str(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    storage.write_bytes(path, buffer.getvalue())
    plt.close(figure)
    return path if storage.is_remote(path) else Path(path)
