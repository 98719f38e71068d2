"""Values no shop produces are quarantined with the bound they broke, and no such record stops a later stage.

Issue 17, defects 3 and 7: an amount of 1e308 was accepted into silver.orders
(the next consumption run then failed for every user), and timestamps in 1900
made dt=1900-01-01 partitions.
"""

from __future__ import annotations

from datetime import date

import pytest

import dirty_landing as landing
from portrait.core.pipeline import RunContext, run_stage
from test_clean import make_conf

DAY = date(2026, 7, 1)


@pytest.fixture(scope="module")
def hostile(spark, tmp_path_factory):
    lake = tmp_path_factory.mktemp("hostile") / "lake"
    conf = make_conf(tmp_path_factory.mktemp("conf"))
    users = [landing.user("u1", "王小明"), landing.user("u2", "李丽", registered_at="1900-01-01T00:00:00+08:00")]
    orders = [
        landing.order("ok", "u1", "2026-07-01T12:00:00+08:00"),
        landing.order("huge", "u1", "2026-07-01T12:05:00+08:00", amount=1e308),
        landing.order("old", "u1", "1900-01-01T12:00:00+08:00"),
        landing.order("coupon", "u1", "2026-07-01T12:10:00+08:00", coupon_amount=1e12),
        {
            **landing.order("many", "u1", "2026-07-01T12:15:00+08:00"),
            "items": [{"sku": "s", "category": "fruit", "qty": 10**9, "price": 4.0}],
        },
        {
            **landing.order("dear", "u1", "2026-07-01T12:20:00+08:00"),
            "items": [{"sku": "s", "category": "fruit", "qty": 1, "price": 1e300}],
        },
    ]
    events = [
        landing.event("e1", "u1", "d1", "app_open", "2026-07-01T08:00:00+08:00"),
        landing.event("e_old", "u1", "d1", "app_open", "1900-01-01T08:00:00+08:00"),
    ]
    addresses = [{"address_id": "a1", "user_id": "u1", "text": "x", "lat": 39.9, "lon": 116.4, "poi_type": "office"}]
    addresses.append({**addresses[0], "address_id": "a_far", "lat": 391.0})
    for source, lines in (("users", users), ("orders", orders), ("events", events), ("addresses", addresses), ("consent", [])):
        landing._write(lake, source, str(DAY), lines)
    ctx = RunContext(spark, str(lake), DAY, conf)
    clean = run_stage(ctx, "clean")
    consumption = run_stage(RunContext(spark, str(lake), DAY, conf), "consumption")
    return ctx.catalog, clean, consumption


def test_values_outside_their_bounds_are_quarantined_with_the_bound(spark, hostile):
    catalog, _, _ = hostile
    rows = catalog.read(spark, "quarantine.records").collect()
    reason = {r.record_key: (r.rule, r.detail) for r in rows}
    assert reason["huge"] == ("out_of_range", "amount 1e308 is above 100000")
    assert reason["coupon"] == ("out_of_range", "coupon_amount 1000000000000.0 is above 10000")
    assert reason["many"] == ("out_of_range", "items has an entry whose qty is above 1000")
    assert reason["dear"] == ("out_of_range", "items has an entry whose price is above 100000")
    assert reason["a_far"] == ("out_of_range", "lat 391.0 is above 90")
    for key in ("old", "e_old", "u2"):
        rule, detail = reason[key]
        assert rule == "out_of_range" and "before the earliest accepted 2010-01-01T00:00:00+08:00" in detail, (key, detail)


def test_no_partition_before_the_earliest_date_and_counts_reconcile(spark, hostile):
    catalog, clean, _ = hostile
    for table in ("silver.orders", "silver.events", "silver.users_history"):
        days = {r.dt for r in catalog.read(spark, table).select("dt").distinct().collect()}
        assert all(day.year >= 2010 for day in days), (table, days)
    assert [r["order_id"] for r in catalog.read(spark, "silver.orders").collect()] == ["ok"]
    for source in clean.notes["reconciliation"]:
        assert source["balanced"], source


def test_the_next_stage_runs_on_what_was_accepted(spark, hostile):
    catalog, _, consumption = hostile
    row = catalog.read(spark, "profile.consumption").where("user_id = 'u1'").first()
    assert row.orders_total == 1 and row.spend_30d == pytest.approx(45.0)
    assert consumption.versions["profile.consumption"] >= 0
