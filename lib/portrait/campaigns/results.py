"""What a campaign earned: treatment against holdout, once its horizon has passed.

Per campaign and send date: the users of each arm, the share who ordered
within the horizon (conversion), the uplift (treatment - holdout) with a 95 %
interval (normal approximation of a difference of two proportions: Wald), the
incremental orders and revenue (per-user means' difference times the treated),
the offer cost (what the treated converters' coupons cost) and the profit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054
CONVERTING_STATUS = ("paid", "delivered")  # an order that counts as a conversion (not cancelled or refunded)


@dataclass(frozen=True)
class ArmFigures:
    users: int
    converted: int
    orders: float
    revenue: float


@dataclass(frozen=True)
class Result:
    treated: int
    holdout: int
    treated_converted: int
    holdout_converted: int
    treated_conversion: float
    holdout_conversion: float
    uplift: float
    uplift_low: float
    uplift_high: float
    incremental_orders: float
    incremental_revenue: float
    offer_cost: float
    profit: float

    def to_dict(self) -> dict:
        return asdict(self)


def uplift_interval(
    treated: int, treated_converted: int, holdout: int, holdout_converted: int, z: float = Z95
) -> tuple[float, float, float]:
    """(uplift, low, high): p_t - p_h and its Wald interval; ValueError for an empty arm."""
    if treated <= 0 or holdout <= 0:
        raise ValueError(f"an arm is empty (treated {treated}, holdout {holdout}): no uplift can be measured")
    p_t, p_h = treated_converted / treated, holdout_converted / holdout
    se = math.sqrt(p_t * (1 - p_t) / treated + p_h * (1 - p_h) / holdout)
    uplift = p_t - p_h
    return uplift, uplift - z * se, uplift + z * se


def measure(treatment: ArmFigures, holdout: ArmFigures, offer_cost: float) -> Result:
    uplift, low, high = uplift_interval(treatment.users, treatment.converted, holdout.users, holdout.converted)
    per_t = (treatment.orders / treatment.users, treatment.revenue / treatment.users)
    per_h = (holdout.orders / holdout.users, holdout.revenue / holdout.users)
    incremental_orders = (per_t[0] - per_h[0]) * treatment.users
    incremental_revenue = (per_t[1] - per_h[1]) * treatment.users
    cost = offer_cost * treatment.converted
    return Result(
        treatment.users,
        holdout.users,
        treatment.converted,
        holdout.converted,
        treatment.converted / treatment.users,
        holdout.converted / holdout.users,
        uplift,
        low,
        high,
        incremental_orders,
        incremental_revenue,
        cost,
        incremental_revenue - cost,
    )
