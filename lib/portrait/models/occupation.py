"""Occupation from where and when orders are delivered: P(white_collar) and P(student).

The seed: an address used often is a common address; delivered to an office
building the user is probably a white-collar worker, to a school probably a
student, and school addresses go quiet in July and August (summer holiday).
No one tells us their occupation, so the model is unsupervised and small
enough to read: a mixture of multinomials. Each order falls into one cell
(POI type of its address x weekday/weekend x term/summer); each occupation
class has a profile over the cells, and a user's orders are drawn from their
class's profile. EM fits the profiles and class shares; the posterior class
probabilities are the tags. Each class starts from, and is anchored to, a
profile declared in conf/models.yaml (a Dirichlet prior worth
``prior_strength`` orders), so "white_collar" keeps meaning office-heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

DAY_TYPES = ("weekday", "weekend")
PERIODS = ("term", "summer")


def cells(poi_types: list[str]) -> list[str]:
    """Cell names ``poi|day_type|period``, in a fixed order."""
    return [f"{poi}|{day}|{period}" for poi in poi_types for day in DAY_TYPES for period in PERIODS]


def delivery_counts(purchases: pd.DataFrame, addresses: pd.DataFrame, poi_types: list[str], summer_months: list[int]) -> pd.DataFrame:
    """Orders per user and cell: one row per user with a delivered-to address of a known POI type.

    ``purchases``: user_id, address_id, dt (business date) of the orders that
    count; ``addresses``: address_id, poi_type.
    """
    placed = purchases[["user_id", "address_id", "dt"]].merge(addresses[["address_id", "poi_type"]], on="address_id")
    placed = placed[placed["poi_type"].isin(poi_types)]
    day = pd.to_datetime(placed["dt"])
    # the cell's position in cells(): poi, then day type, then period (integers: no strings per order)
    poi = pd.Categorical(placed["poi_type"], categories=poi_types).codes
    weekend = (day.dt.weekday >= 5).to_numpy(dtype=int)
    summer = day.dt.month.isin(summer_months).to_numpy(dtype=int)
    cell = (poi * len(DAY_TYPES) + weekend) * len(PERIODS) + summer
    users, user_codes = np.unique(placed["user_id"].to_numpy(dtype=object), return_inverse=True)
    counts = np.zeros((len(users), len(poi_types) * len(DAY_TYPES) * len(PERIODS)))
    np.add.at(counts, (user_codes, cell), 1.0)
    return pd.DataFrame(counts, index=pd.Index(users, name="user_id"), columns=cells(poi_types))


@dataclass(frozen=True)
class OccupationModel:
    """Class shares and each class's profile over the cells (rows sum to 1)."""

    classes: list[str]
    cells: list[str]
    shares: list[float]
    profiles: list[list[float]]

    def to_dict(self) -> dict:
        return {"classes": self.classes, "cells": self.cells, "shares": self.shares, "profiles": self.profiles}

    @classmethod
    def from_dict(cls, values: dict) -> OccupationModel:
        return cls(list(values["classes"]), list(values["cells"]), list(values["shares"]), [list(p) for p in values["profiles"]])


def _prior_profiles(class_conf: dict, counts: pd.DataFrame) -> np.ndarray:
    """Declared POI weights per class, spread over (day type, period) as all orders spread."""
    poi_of_cell = [c.split("|", 1)[0] for c in counts.columns]
    when_of_cell = [c.split("|", 1)[1] for c in counts.columns]
    orders_when = counts.sum().groupby(when_of_cell).sum() + 1.0
    spread = orders_when[when_of_cell].to_numpy() / orders_when.sum()
    weights = np.array([[float(class_conf[name]["poi"][poi]) for poi in poi_of_cell] for name in class_conf])
    if (weights <= 0).any():
        raise ValueError("occupation class POI weights must all be positive (a zero would rule a class out for good)")
    profiles = weights * spread[None, :]
    return profiles / profiles.sum(axis=1, keepdims=True)


def _posterior(log_shares: np.ndarray, log_profiles: np.ndarray, counts: np.ndarray) -> np.ndarray:
    log_joint = counts @ log_profiles.T + log_shares[None, :]
    return np.exp(log_joint - special.logsumexp(log_joint, axis=1, keepdims=True))


def fit(
    counts: pd.DataFrame, class_conf: dict, prior_strength: float, max_iterations: int = 200, tolerance: float = 1e-6
) -> OccupationModel:
    """MAP-EM for the mixture, starting from and shrunk towards the declared class profiles and shares."""
    classes = list(class_conf)
    prior = _prior_profiles(class_conf, counts)
    prior_shares = np.array([class_conf[name]["share"] for name in classes], dtype=float)
    prior_shares /= prior_shares.sum()
    x = counts.to_numpy(dtype=float)
    profiles, shares = prior, prior_shares
    for _ in range(max_iterations):
        resp = _posterior(np.log(shares), np.log(profiles), x)
        new_profiles = resp.T @ x + prior_strength * prior
        new_profiles /= new_profiles.sum(axis=1, keepdims=True)
        new_shares = (resp.sum(axis=0) + prior_strength * prior_shares) / (len(x) + prior_strength)
        change = max(np.abs(new_profiles - profiles).max(), np.abs(new_shares - shares).max())
        profiles, shares = new_profiles, new_shares
        if change < tolerance:
            break
    return OccupationModel(classes, list(counts.columns), shares.tolist(), profiles.tolist())


def score(model: OccupationModel, counts: pd.DataFrame) -> pd.DataFrame:
    """P(class | the user's deliveries) per user and class (``p_{class}`` columns); no deliveries -> class shares."""
    x = counts.reindex(columns=model.cells, fill_value=0).to_numpy(dtype=float)
    resp = _posterior(np.log(model.shares), np.log(model.profiles), x)
    return pd.DataFrame(resp, index=counts.index, columns=[f"p_{name}" for name in model.classes]).reset_index()
