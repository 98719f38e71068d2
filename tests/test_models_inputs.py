"""What every model reads: the orders that count, and windows of business days."""

from __future__ import annotations

from datetime import date

import pandas as pd

from portrait.core.config import Conf
from portrait.models import in_window, load_settings, purchases


def test_cancelled_orders_are_not_purchases():
    orders = pd.DataFrame({"order_id": ["1", "2", "3", "4"], "status": ["paid", "delivered", "cancelled", "refunded"]})
    assert purchases(orders, load_settings(Conf()))["order_id"].tolist() == ["1", "2", "4"]


def test_window_holds_both_ends():
    frame = pd.DataFrame({"dt": [date(2026, 9, 1), date(2026, 9, 2), date(2026, 9, 30), date(2026, 10, 1)]})
    assert in_window(frame, date(2026, 9, 30), 29)["dt"].tolist() == [date(2026, 9, 2), date(2026, 9, 30)]
