"""A shop's order export as a real one looks: columns user_id, ts, amount, nothing else.

What a shop hands over when it first tries portrait (``portrait run --orders``):
one row per order over months, most customers buying once or twice, a few
regulars buying weekly, customers arriving all along and some leaving. The
default shape is that of the export that broke churn training (issue 14):
2,357 customers, 4,960 orders over 39 weeks. Deterministic for a seed.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd


def order_export(customers: int = 2357, orders: int = 4960, weeks: int = 39, end: date = date(2026, 9, 30), seed: int = 14) -> pd.DataFrame:
    """``orders`` rows (user_id, ts as local 'YYYY-MM-DD HH:MM:SS', amount) of ``customers`` over ``weeks`` ending on ``end``.

    Every customer has at least one order; the rest go to customers in
    proportion to a heavy-tailed activity, each buying at their own pace from
    their first day on until they leave.
    """
    if orders < customers:
        raise ValueError(f"an export of {customers} customers needs at least as many orders (got {orders})")
    rng = np.random.default_rng(seed)
    days = weeks * 7
    first = end - timedelta(days=days - 1)
    activity = rng.pareto(1.5, customers) + 0.05
    extra = rng.multinomial(orders - customers, activity / activity.sum())
    start = rng.integers(0, days, customers)
    rows = []
    for k in range(customers):
        n = 1 + int(extra[k])
        span = days - int(start[k])
        # a customer's orders spread over the part of the history they stayed for
        stay = max(1, int(span * rng.uniform(0.2, 1.0))) if n > 1 else 1
        offsets = np.sort(rng.integers(0, stay, n))
        for offset in offsets:
            day = first + timedelta(days=int(start[k]) + int(offset))
            moment = datetime.combine(day, time(int(rng.integers(10, 21)), int(rng.integers(0, 60)), int(rng.integers(0, 60))))
            rows.append((f"{100000 + k}", moment.strftime("%Y-%m-%d %H:%M:%S"), round(float(rng.gamma(6.0, 6.0)), 2)))
    return pd.DataFrame(rows, columns=["user_id", "ts", "amount"])


def write_order_export(path: str | Path, **shape) -> Path:
    """The export of :func:`order_export` as a CSV file."""
    path = Path(path)
    order_export(**shape).to_csv(path, index=False)
    return path
