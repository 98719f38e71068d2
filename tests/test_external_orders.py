"""A shop's order export as landing data: the mapping by hand, then `portrait run --orders` end to end."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

import numpy as np
import pytest
import yaml
from pyspark.sql import functions as F

from portrait.clean.external_orders import land_export, landing_orders, new_user_records, read_export
from portrait.cli import main
from portrait.core.config import Conf, ConfError
from portrait.core.tables import Catalog
from portrait.devtools.order_export import write_order_export
from repo import REPO_ROOT

D = date(2026, 9, 30)
EXPORT = """customer,order_time,paid
c1,2026-09-01 12:30:00,35.5
c1,2026-09-20 19:00,42
c2,2026-09-25T12:00:00+08:00,28
c2,2026-09-25T12:00:00+08:00,28
c3,yesterday,30
c4,2026-09-10 08:00,abc
,2026-09-11 08:00,20
c5,1789999999000,50
"""
MAPPING = {"user_id": "customer", "ts": "order_time", "amount": "paid"}


REGULARS = 60  # customers with regular habits, every other one stopping, so BG/NBD has something to fit


def regular_orders(rng=np.random.default_rng(5)) -> str:
    lines = []
    for k in range(REGULARS):
        gap = int(rng.integers(3, 10))
        last = 60 if k % 2 else int(rng.integers(10, 40))
        lines += [f"r{k:02d},{date(2026, 8, 1) + timedelta(days=d)} 12:00,30\n" for d in range(int(rng.integers(0, gap)), last, gap)]
    return "".join(lines)


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(EXPORT + regular_orders(), encoding="utf-8")
    return path


def without_app_logs(conf_dir) -> None:
    """A shop without app logs lands no events, addresses or consent: declared optional (docs/operations.md)."""
    landing = yaml.safe_load((conf_dir / "landing.yaml").read_text(encoding="utf-8"))
    for source in ("events", "addresses", "consent"):
        landing["sources"][source]["optional"] = True
    (conf_dir / "landing.yaml").write_text(yaml.safe_dump(landing, allow_unicode=True, sort_keys=False), encoding="utf-8")


def shop_conf(tmp_path) -> Conf:
    conf_dir = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf_dir)
    pipeline = yaml.safe_load((conf_dir / "pipeline.yaml").read_text(encoding="utf-8"))
    pipeline["external_orders"]["columns"].update(MAPPING)
    (conf_dir / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, allow_unicode=True), encoding="utf-8")
    without_app_logs(conf_dir)
    return Conf(conf_dir)


def test_mapping_by_hand(export, tmp_path):
    settings = shop_conf(tmp_path).pipeline["external_orders"]
    orders = landing_orders(read_export(export), settings)
    assert orders["ts"].tolist()[:3] == ["2026-09-01T12:30:00+08:00", "2026-09-20T19:00:00+08:00", "2026-09-25T12:00:00+08:00"]
    assert orders["ts"][4] == "yesterday" and orders["amount"][5] == "abc"  # landed as they are: the contract quarantines them
    assert orders["ts"][7] == 1789999999000  # epoch milliseconds pass through
    assert orders["order_id"].is_unique  # two equal rows are two orders
    assert orders["order_id"].tolist() == landing_orders(read_export(export), settings)["order_id"].tolist()  # stable
    assert set(orders["status"]) == {"delivered"} and set(orders["product_line"]) == {"salad"}
    users = new_user_records(orders.head(8), known={"c2"}, run_date=D, settings=settings)
    assert [u["user_id"] for u in users] == ["c1", "c3", "c4", "c5"]
    assert users[0]["registered_at"] == "2026-09-01T04:30:00+00:00"  # the first order, in UTC
    assert users[1]["registered_at"] == "2026-10-01T00:00:00+08:00"  # no readable time: the end of D


def test_a_mapping_to_a_missing_column_is_named(export, tmp_path):
    settings = Conf().pipeline["external_orders"]
    with pytest.raises(ConfError, match="no export column order_time"):
        landing_orders(read_export(export).drop(columns=["order_time"]), {**settings, "columns": {**settings["columns"], **MAPPING}})


@pytest.mark.slow  # two whole daily runs of the shop's lake (about 2 minutes)
def test_run_with_an_export_profiles_its_customers(spark, export, tmp_path):
    conf, lake = shop_conf(tmp_path), str(tmp_path / "lake")
    args = ["run", "--date", str(D), "--orders", str(export), "--lake", lake, "--conf", str(conf.dir), "--create"]
    assert main(args) == 0
    catalog = Catalog(lake, conf)
    rows = len(read_export(export))
    reconciliation = catalog.read(spark, "ops.reconciliation").where(F.col("source") == "orders").first()
    assert (reconciliation["input_records"], reconciliation["accepted"], reconciliation["quarantined"]) == (rows, rows - 3, 3)
    rules = sorted(r["rule"] for r in catalog.read(spark, "quarantine.records").collect())
    assert rules == ["missing_field", "wrong_type", "wrong_type"]
    consumption = {r["user_id"]: r["orders_total"] for r in catalog.read(spark, "profile.consumption").collect()}
    assert {u: consumption[u] for u in ("c1", "c2", "c3", "c4", "c5")} == {"c1": 2, "c2": 2, "c3": 0, "c4": 0, "c5": 1}
    assert len(consumption) == 5 + REGULARS
    tags = {r["user_id"]: r for r in catalog.read(spark, "profile.model_tags").collect()}
    assert {u for u, r in tags.items() if r["p_alive"] is not None} == set(consumption) - {"c3", "c4"}
    assert all(0 <= r["p_alive"] <= 1 and r["expected_purchases_30d"] >= 0 for r in tags.values() if r["p_alive"] is not None)
    assert tags["c1"]["churn_probability"] is None  # one day of snapshots: no churn model

    assert main(args) == 0  # rerun of D: the same file is landed again, nothing doubles
    assert catalog.read(spark, "silver.orders").count() == rows - 3
    landed = land_export(export, lake, date(2026, 10, 1), conf)  # the next day: what D took in is not landed again
    assert (landed.orders, landed.already_landed, landed.new_users) == (3, rows - 3, 0)
    lines = (tmp_path / "lake" / "landing" / "orders" / "dt=2026-10-01" / "external-orders.jsonl").read_text().splitlines()
    assert all(json.loads(line)["items"] == [] for line in lines)


@pytest.mark.slow
def test_a_long_export_trains_churn_and_publishes_every_layer(spark, tmp_path):
    """Issue 14: an export of 39 weeks (user_id, ts, amount; 2,357 customers, 4,960 orders) on an empty lake.

    Long enough for churn to train - the export above spans 60 days, too short,
    which is how the suite missed the MergeError: every order lands on D, so
    each past training snapshot is read as landed by D, not as known then.
    """
    export = write_order_export(tmp_path / "orders.csv")
    conf_dir = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf_dir)
    pipeline = yaml.safe_load((conf_dir / "pipeline.yaml").read_text(encoding="utf-8"))
    pipeline["external_orders"]["columns"].update({"user_id": "user_id", "ts": "ts", "amount": "amount"})
    (conf_dir / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, allow_unicode=True), encoding="utf-8")
    without_app_logs(conf_dir)
    conf, lake = Conf(conf_dir), str(tmp_path / "lake")
    assert main(["run", "--date", str(D), "--orders", str(export), "--lake", lake, "--conf", str(conf_dir), "--create"]) == 0
    catalog = Catalog(lake, conf)
    registry = catalog.read(spark, "ops.model_registry").where(F.col("model") == "churn").toPandas()
    assert len(registry) == 1
    params = json.loads(registry["params"].iloc[0])
    assert len(params["snapshots"]) >= 2 and params["training_rows"] > 1000
    tags = catalog.read(spark, "profile.model_tags").where(F.col("dt") == F.lit(D)).toPandas()
    assert len(tags) == 2357 and tags["churn_probability"].between(0, 1).all()
    assert tags["p_alive"].notna().all()
    assert catalog.read(spark, "gold.profile").count() == 2357  # the layers after the models published too
