"""The sub-profile stages end to end on a tiny hand-written silver layer.

D = 2026-07-31. First the silver rows known on D are written and every stage
runs for D. Then rows landing on D+1 arrive - later business dates, but also
late rows about D and earlier (an order of D-2, a review of D, a login that
would attribute an anonymous visit of D, a new user record) - and the stages
run for D+1 and again for D. D's snapshot must not change: no look-ahead, and
a rerun replaces exactly D's partition.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from pyspark.sql import functions as F

from fact_rows import D, ago, local_ts
from portrait.clean.as_of import SilverAsOf
from portrait.core.config import Conf
from portrait.core.pipeline import RunContext, run_stage
from portrait.core.tables import Catalog
from portrait.gates import GateFailed

NEXT = ago(-1)
STAGES = ("consumption", "behavior", "interest", "social", "product_line")
TABLES = {stage: f"profile.{stage}" for stage in STAGES}


def landed(day):
    """updated_at of a record that landed on business day ``day`` (the end of that day, UTC)."""
    return local_ts(day + timedelta(days=1), 0)


def user(user_id, landing, city="北京", gender=None, birth_year=None, registered=ago(40)):
    return dict(
        user_id=user_id,
        name="王国庆",
        gender=gender,
        birth_year=birth_year,
        registered_at=local_ts(registered, 9),
        channel="app_store",
        city=city,
        has_phone=True,
        updated_at=landed(landing),
        dt=landing,
    )


def order(order_id, user_id, day, amount, landing=None, status="delivered", address_id="a1", line="salad"):
    return dict(
        order_id=order_id,
        user_id=user_id,
        ts=local_ts(day, 12),
        amount=amount,
        coupon_amount=0.0,
        item_count=1,
        address_id=address_id,
        product_line=line,
        status=status,
        dt=day,
        landing_dt=landing or day,
    )


def item(order_id, user_id, day, category, landing=None):
    return dict(
        order_id=order_id,
        line_no=1,
        user_id=user_id,
        sku=f"{category}-1",
        category=category,
        qty=1,
        price=30.0,
        dt=day,
        landing_dt=landing or day,
    )


def event(event_id, user_id, device, day, event_type, landing=None, category=None, rating=None, hour=12, line="salad"):
    return dict(
        event_id=event_id,
        user_id=user_id,
        anonymous=user_id is None,
        device_id=device,
        event_type=event_type,
        ts=local_ts(day, hour),
        product_line=line,
        category=category,
        rating=rating,
        dt=day,
        landing_dt=landing or day,
    )


def login(device, user_id, day, hour=12):
    return dict(device_id=device, user_id=user_id, first_login_ts=local_ts(day, hour), last_login_ts=local_ts(day, hour), dt=day)


def address(address_id, user_id, landing):
    return dict(
        address_id=address_id,
        user_id=user_id,
        place_name="北京市海淀区",
        lat=39.96,
        lon=116.3,
        poi_type="office",
        city="北京",
        updated_at=landed(landing),
    )


KNOWN_ON_D = {
    "silver.users_history": [
        user("u1", ago(40)),
        user("u2", ago(40), city="上海", gender="F", birth_year=1990),
        user("u3", ago(1), registered=ago(1)),
    ],
    "silver.orders": [
        order("o1", "u1", ago(5), 120.0),
        order("o2", "u1", ago(3), 100.0, status="cancelled"),
        order("o3", "u1", D, 90.0),
        order("o7", "u1", ago(10), 40.0),
        order("o4", "u2", ago(1), 50.0, address_id=None, line="content", status="paid"),
    ],
    "silver.order_items": [
        item("o1", "u1", ago(5), "chicken"),
        item("o2", "u1", ago(3), "fruit"),
        item("o3", "u1", D, "chicken"),
        item("o7", "u1", ago(10), "chicken"),
    ],
    "silver.events": [
        event("e1", "u1", "d1", D, "app_open"),
        event("e2", "u1", "d1", ago(1), "view", category="fruit"),
        event("e3", None, "d2", ago(1), "view", category="drama", line="video"),  # u2 logs in on d2 on D
        event("e4", "u2", "d2", D, "login", line="video"),
        event("e5", None, "d3", D, "view", category="seafood", hour=10),  # u3 logs in on d3 only on D+1
    ],
    "silver.device_map": [login("d2", "u2", D)],
    "silver.addresses": [address("a1", "u1", ago(10))],
}

LANDED_ON_NEXT_DAY = {
    "silver.users_history": [user("u2", NEXT, city="深圳", gender="F", birth_year=1990), user("u4", NEXT, registered=NEXT)],
    "silver.orders": [
        order("o5", "u1", ago(2), 500.0, landing=NEXT, address_id="a2"),  # late: business date D-2
        order("o6", "u1", NEXT, 70.0, address_id="a2"),
        order("o8", "u3", NEXT, 30.0, address_id=None),
    ],
    "silver.order_items": [item("o5", "u1", ago(2), "seafood", landing=NEXT), item("o6", "u1", NEXT, "fruit")],
    "silver.events": [
        event("e6", "u1", "d1", NEXT, "app_open"),
        event("e7", "u1", "d1", D, "review", landing=NEXT, rating=1, hour=20),  # late: business date D
        event("e8", "u3", "d3", NEXT, "login", hour=9),
    ],
    "silver.device_map": [login("d3", "u3", NEXT, hour=9)],
    "silver.addresses": [address("a2", "u1", NEXT)],
}


def write_silver(spark, catalog, rows_by_table):
    for table, rows in rows_by_table.items():
        spec = catalog.spec(table)
        df = spark.createDataFrame([tuple(row.get(column) for column in spec.columns) for row in rows], spec.ddl)
        catalog.write(spark, df, table, "append")


def snapshot(spark, catalog, table, dt):
    df = catalog.read(spark, table).where(F.col("dt") == F.lit(dt))
    return sorted((tuple(row) for row in df.collect()), key=repr)


def run_all(spark, lake, conf, dt):
    for stage in STAGES:
        run_stage(RunContext(spark, str(lake), dt, conf), stage)


@pytest.fixture(scope="module")
def lake_runs(spark, tmp_path_factory):
    """The lake after: stages for D; later data + stages for D+1; stages for D again."""
    lake, conf = tmp_path_factory.mktemp("subprofiles") / "lake", Conf()
    catalog = Catalog(str(lake), conf)
    write_silver(spark, catalog, KNOWN_ON_D)
    run_all(spark, lake, conf, D)
    first = {stage: snapshot(spark, catalog, table, D) for stage, table in TABLES.items()}
    write_silver(spark, catalog, LANDED_ON_NEXT_DAY)
    run_all(spark, lake, conf, NEXT)
    after_next = {stage: (snapshot(spark, catalog, table, D), snapshot(spark, catalog, table, NEXT)) for stage, table in TABLES.items()}
    run_all(spark, lake, conf, D)
    rerun = {stage: (snapshot(spark, catalog, table, D), snapshot(spark, catalog, table, NEXT)) for stage, table in TABLES.items()}
    return catalog, first, after_next, rerun


def rows(spark, catalog, table, dt):
    return {row["user_id"]: row for row in catalog.read(spark, table).where(F.col("dt") == F.lit(dt)).collect()}


def test_snapshot_of_d_uses_only_what_was_known_on_d(spark, lake_runs):
    catalog = lake_runs[0]
    consumption = rows(spark, catalog, "profile.consumption", D)
    assert set(consumption) == {"u1", "u2", "u3"}  # u4 registered on D+1
    # u1: o1 120 + o3 90 + o7 40 = 250 (o2 cancelled; the late 500 of o5 landed on D+1)
    u1 = consumption["u1"]
    assert (u1["orders_total"], u1["spend_30d"], u1["vip_tier"], u1["lifecycle_stage"]) == (3, 250.0, "vip", "old")
    assert (consumption["u2"]["lifecycle_stage"], consumption["u3"]["lifecycle_stage"]) == ("new", "potential")

    behavior = rows(spark, catalog, "profile.behavior", D)
    assert behavior["u1"]["reviews_30d"] == 0  # the review of D landed on D+1
    assert behavior["u2"]["active_days_30d"] == 2  # D-1 (anonymous on d2, stitched by the login of D) and D
    assert behavior["u3"]["active_days_30d"] == 0  # its anonymous visit of D is stitched only on D+1

    interest = rows(spark, catalog, "profile.interest", D)
    assert interest["u1"]["top_interests"] == ["chicken", "fruit"]  # fruit only as a view: o2 was cancelled
    assert interest["u2"]["top_interests"] == ["drama"]

    social = rows(spark, catalog, "profile.social", D)
    assert [(a["address_id"], a["uses"]) for a in social["u1"]["common_addresses"]] == [("a1", 3)]
    assert (social["u2"]["city"], social["u2"]["age_band"]) == ("上海", "35-44")  # 深圳 was reported on D+1

    lines = {
        (r["user_id"], r["product_line"]): r for r in catalog.read(spark, "profile.product_line").where(F.col("dt") == F.lit(D)).collect()
    }
    assert len(lines) == 3 * 3
    assert (lines[("u2", "video")]["line_usage_30d"], lines[("u2", "content")]["line_usage_30d"]) == (2, 1)


def test_orders_that_count_are_declared_once_in_conf(spark, lake_runs):
    """SilverAsOf, which every sub-profile, model and segment reads orders through, follows the conf."""
    catalog = lake_runs[0]
    conf = Conf()
    ctx = RunContext(spark, catalog.lake, D, conf)
    assert conf.pipeline["orders_that_count"]["exclude_statuses"] == ["cancelled"]
    assert {r.order_id for r in SilverAsOf(ctx).orders().collect()} == {"o1", "o3", "o4", "o7"}
    assert {r.order_id for r in SilverAsOf(ctx).order_items().collect()} == {"o1", "o3", "o7"}
    conf.pipeline["orders_that_count"]["exclude_statuses"] = ["cancelled", "paid"]  # this Conf only
    assert {r.order_id for r in SilverAsOf(ctx).orders().collect()} == {"o1", "o3", "o7"}
    conf.pipeline["orders_that_count"]["exclude_statuses"] = ["delivered"]
    assert {r.order_id for r in SilverAsOf(ctx).order_items().collect()} == {"o2"}


def test_later_data_changes_nothing_in_d_and_reruns_replace_only_d(lake_runs):
    _, first, after_next, rerun = lake_runs
    for stage in STAGES:
        assert after_next[stage][0] == first[stage], f"{stage}: running D+1 changed D's snapshot"
        assert rerun[stage][0] == first[stage], f"{stage}: rerunning D after later data changed D's snapshot"
        assert rerun[stage][1] == after_next[stage][1], f"{stage}: rerunning D changed D+1's snapshot"
        assert after_next[stage][1] != first[stage], f"{stage}: D+1's snapshot is a copy of D's"


def test_next_day_sees_the_late_data(spark, lake_runs):
    catalog = lake_runs[0]
    consumption = rows(spark, catalog, "profile.consumption", NEXT)
    assert set(consumption) == {"u1", "u2", "u3", "u4"}
    # u1 on D+1: 250 + o5 500 (D-2, landed D+1) + o6 70 = 820
    assert (consumption["u1"]["spend_30d"], consumption["u1"]["vip_tier"]) == (820.0, "super_vip")
    assert consumption["u3"]["lifecycle_stage"] == "new"
    behavior = rows(spark, catalog, "profile.behavior", NEXT)
    assert (behavior["u1"]["reviews_30d"], behavior["u1"]["bad_reviews_30d"]) == (1, 1)
    assert behavior["u3"]["active_days_30d"] == 2  # the visit of D, now stitched, and the login of D+1


def test_a_failed_gate_publishes_nothing(spark, tmp_path):
    """A negative order amount (it would be quarantined upstream; written here directly) stops the snapshot."""
    lake, conf = tmp_path / "lake", Conf()
    catalog = Catalog(str(lake), conf)
    write_silver(spark, catalog, {"silver.users_history": [user("u1", ago(1))], "silver.orders": [order("bad", "u1", D, -5.0)]})
    with pytest.raises(GateFailed, match=r"profile.consumption: expect_column_values_to_be_between\(spend_30d\)"):
        run_stage(RunContext(spark, str(lake), D, conf), "consumption")
    assert not catalog.exists("profile.consumption")
    findings = catalog.read(spark, "ops.gate_results").where("table_name = 'profile.consumption' AND NOT success").collect()
    assert {row["column_name"] for row in findings} == {"spend_30d", "spend_90d"}
