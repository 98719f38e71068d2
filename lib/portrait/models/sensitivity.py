"""Price and discount sensitivity in [0, 1] (seed: 价格敏感, 优惠敏感).

Price: how cheap the user's choices are within their category. Every unit
bought scores its "cheapness", the share of the category's units sold at a
higher price (ties count half): a user who always picks a category's cheapest
salad scores near 1, one who picks the dearest near 0.
Discount: the share of the user's orders paid with a coupon.

Both are averages over few events for most users, so both are shrunk towards
the population by empirical Bayes: the population mean, the spread between
users and the noise within a user are estimated from everyone, and each
user's mean is pulled towards the population's by ``strength`` pseudo-events
(for 0/1 events this is the posterior mean under the matching Beta prior).
A user with no purchases gets the population mean, one with many keeps their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

MAX_STRENGTH = 1e4  # no measurable difference between users: (almost) everyone gets the mean
MIN_STRENGTH = 1e-6  # no measurable noise: users keep their own mean, and one without events still gets the population's


@dataclass(frozen=True)
class Shrinkage:
    """The population mean of a score and how many of a user's own events it is worth."""

    mean: float
    strength: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def user_totals(events: pd.DataFrame, value: str, weight: str | None = None) -> pd.DataFrame:
    """Per user: event weight ``n``, weighted sum and weighted sum of squares of ``value``."""
    w = events[weight].astype(float) if weight else pd.Series(1.0, index=events.index)
    x = events[value].astype(float)
    frame = pd.DataFrame({"user_id": events["user_id"], "n": w, "total": w * x, "total_sq": w * x * x})
    return frame.groupby("user_id")[["n", "total", "total_sq"]].sum()


def moments(totals: pd.DataFrame) -> dict[str, float]:
    """Sums over users with events that fix :func:`fit_shrinkage`: the job computes the same on the engine (SQL)."""
    totals = totals[totals["n"] > 0]
    n, means = totals["n"], totals["total"] / totals["n"]
    repeat = n > 1
    return {
        "users": float(len(totals)),
        "n": float(n.sum()),
        "total": float(totals["total"].sum()),
        "mean_sum": float(means.sum()),
        "mean_sq_sum": float((means**2).sum()),
        "inverse_n_sum": float((1 / n).sum()),
        "within_squares": float((totals["total_sq"] - totals["total"] ** 2 / n)[repeat].sum()),
        "within_dof": float((n[repeat] - 1).sum()),
    }


def fit_shrinkage(totals: pd.DataFrame) -> Shrinkage:
    """Method of moments: between-user variance = variance of user means - within-user noise / n."""
    return fit_shrinkage_from_moments(moments(totals))


def fit_shrinkage_from_moments(m: dict[str, float]) -> Shrinkage:
    """:func:`fit_shrinkage` from the sums of :func:`moments` (users with events only)."""
    if not m["users"]:
        raise ValueError("no user with any event to estimate a population mean from")
    users = m["users"]
    mean = m["total"] / m["n"]
    within = m["within_squares"] / m["within_dof"] if m["within_dof"] > 0 else 0.0
    spread = m["mean_sq_sum"] / users - 2 * mean * m["mean_sum"] / users + mean * mean
    between = spread - within * m["inverse_n_sum"] / users
    strength = within / between if between > 0 else MAX_STRENGTH
    return Shrinkage(float(mean), float(np.clip(strength, MIN_STRENGTH, MAX_STRENGTH)))


def shrink(totals: pd.DataFrame, shrinkage: Shrinkage, user_ids: pd.Series) -> pd.Series:
    """Posterior mean per user of ``user_ids``: (total + strength * mean) / (n + strength)."""
    totals = totals.reindex(pd.Index(user_ids, name="user_id"), fill_value=0.0)
    return (totals["total"] + shrinkage.strength * shrinkage.mean) / (totals["n"] + shrinkage.strength)


def cheapness_table(units: pd.DataFrame) -> pd.DataFrame:
    """Per (category, price) with its ``units`` sold: the share of the category's units sold dearer (ties half)."""
    units = units.sort_values(["category", "price"], ascending=[True, False]).copy()
    dearer = units.groupby("category")["units"].cumsum() - units["units"]
    units["cheapness"] = (dearer + units["units"] / 2) / units.groupby("category")["units"].transform("sum")
    return units


def cheapness(items: pd.DataFrame) -> pd.Series:
    """Per item line: share of its category's units sold at a higher price (ties half), in [0, 1]."""
    units = cheapness_table(items.groupby(["category", "price"])["qty"].sum().rename("units").reset_index())
    return items[["category", "price"]].merge(units, on=["category", "price"], how="left")["cheapness"].set_axis(items.index)


def score(items: pd.DataFrame, purchases: pd.DataFrame, user_ids: pd.Series) -> tuple[pd.DataFrame, dict[str, dict]]:
    """``price_sensitivity`` and ``discount_sensitivity`` per user, and the fitted shrinkage of each.

    ``items``: user_id, category, price, qty of the lines bought;
    ``purchases``: user_id, coupon_amount of the orders that count.
    """
    priced = user_totals(items.assign(cheapness=cheapness(items)), "cheapness", weight="qty")
    couponed = user_totals(purchases.assign(with_coupon=(purchases["coupon_amount"].fillna(0) > 0).astype(float)), "with_coupon")
    result = pd.DataFrame({"user_id": pd.Series(user_ids).to_numpy()})
    fitted = {}
    for column, totals in (("price_sensitivity", priced), ("discount_sensitivity", couponed)):
        fitted[column] = fit_shrinkage(totals)
        result[column] = shrink(totals, fitted[column], result["user_id"]).to_numpy()
    return result, {column: s.to_dict() for column, s in fitted.items()}
