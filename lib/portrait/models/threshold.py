"""The churn threshold that makes the most money (seed: 计算在不同阈值下挽回用户的收入和成本，以此选择最优解).

Retaining users is a means, profit the end: contacting a user costs
``retention_cost``; a contacted user who would have churned stays with
probability ``success_rate`` and is then worth ``value``. Contacting everyone
whose churn probability is at least t has expected profit

    sum over p_i >= t of (p_i * success_rate * value_i - retention_cost),

which needs calibrated probabilities. The curve over t is kept, so the choice
can be explained; when the true outcomes are known (evaluation) the realised
profit is computed beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def profit_curve(
    probabilities,
    retention_cost: float,
    success_rate: float,
    value,
    step: float = 0.01,
    churned=None,
) -> pd.DataFrame:
    """Per threshold t on a grid of ``step``: users targeted, expected saves, revenue, cost and profit.

    ``value`` is one number or one per user (e.g. their 30-day spend, so
    valuable users are worth a dearer retention; seed: 配合消费档次进行区别对待).
    """
    p = np.asarray(probabilities, dtype=float)
    values = np.broadcast_to(np.asarray(value, dtype=float), p.shape)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    order = np.argsort(-p, kind="stable")
    p_sorted = p[order]
    gain = np.concatenate([[0.0], np.cumsum(p_sorted * success_rate * values[order])])
    thresholds = grid(step)
    targeted = np.searchsorted(-p_sorted, -thresholds, side="right")  # users with p >= t
    curve = pd.DataFrame(
        {
            "threshold": thresholds,
            "targeted": targeted,
            "expected_saved": np.concatenate([[0.0], np.cumsum(p_sorted * success_rate)])[targeted],
            "expected_revenue": gain[targeted],
            "cost": targeted * retention_cost,
        }
    )
    curve["expected_profit"] = curve["expected_revenue"] - curve["cost"]
    if churned is not None:
        outcome = np.asarray(churned, dtype=float)[order]
        realised = np.concatenate([[0.0], np.cumsum(outcome * success_rate * values[order])])
        curve["realised_profit"] = realised[targeted] - curve["cost"]
    return curve


def grid(step: float) -> np.ndarray:
    """The thresholds of the curve: 0, step, ..., 1."""
    return np.round(np.arange(0.0, 1.0 + step / 2, step), 10)


def profit_curve_from_bins(
    bins: pd.DataFrame, retention_cost: float, success_rate: float, value: float, step: float = 0.01
) -> pd.DataFrame:
    """:func:`profit_curve` from per-bin sums: ``bin`` k holds the users with
    grid[k] <= p < grid[k + 1] (p = 1 in the last), ``users`` how many and ``p_sum`` their probabilities' sum.
    With a ``pv_sum`` column (the sum of p_i * value_i: each user's own expected value) ``value`` is not used.

    The job counts the bins on the engine, so the driver holds one row per threshold, not per user.
    """
    thresholds = grid(step)
    users = np.zeros(len(thresholds))
    p_sum = np.zeros(len(thresholds))
    k = bins["bin"].to_numpy(dtype=int)
    np.add.at(users, k, bins["users"].to_numpy(dtype=float))
    np.add.at(p_sum, k, bins["p_sum"].to_numpy(dtype=float))
    pv_sum = p_sum * value
    if "pv_sum" in bins:
        pv_sum = np.zeros(len(thresholds))
        np.add.at(pv_sum, k, bins["pv_sum"].to_numpy(dtype=float))
    targeted = np.cumsum(users[::-1])[::-1]  # users with p >= t
    saved = np.cumsum(p_sum[::-1])[::-1] * success_rate
    curve = pd.DataFrame(
        {
            "threshold": thresholds,
            "targeted": targeted.astype(np.int64),
            "expected_saved": saved,
            "expected_revenue": np.cumsum(pv_sum[::-1])[::-1] * success_rate,
            "cost": targeted * retention_cost,
        }
    )
    curve["expected_profit"] = curve["expected_revenue"] - curve["cost"]
    return curve


def success_rate_from_uplift(uplift: float, holdout_conversion: float) -> float:
    """The share of would-be churners a contact keeps, from a retention campaign's measured conversion uplift.

    Without contact a share 1 - holdout_conversion does not order within the
    horizon (the would-be churners); the contact turns ``uplift`` of all users
    into buyers, so it keeps uplift / (1 - holdout_conversion) of them (clipped to [0, 1]).
    """
    if holdout_conversion >= 1:
        return 0.0
    return float(min(max(uplift / (1 - holdout_conversion), 0.0), 1.0))


def best_threshold(curve: pd.DataFrame, column: str = "expected_profit") -> float:
    """The threshold of highest profit; among equals the highest (the fewest users bothered)."""
    best = curve[column].max()
    return float(curve.loc[np.isclose(curve[column], best), "threshold"].max())
