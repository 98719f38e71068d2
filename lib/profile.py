"""One user's profile as nested JSON, for ``portrait show``.

Reads the furthest layer that has been built: for now the silver tables
(identity and order facts as of the snapshot date).
"""
from __future__ import annotations

from datetime import date

from pyspark.sql import functions as F

from portrait.lib.config import Conf
from portrait.lib.tables import Catalog


class ProfileNotFound(LookupError):
    """No such user in the lake."""


def read_profile(spark, lake: str, conf: Conf, user_id: str | None, sample: bool = False, dt: date | None = None) -> dict:
    catalog = Catalog(lake, conf)
    users = catalog.read(spark, "silver.users")
    orders = catalog.read(spark, "silver.orders").where(F.col("status") != "cancelled")
    if dt is not None:
        orders = orders.where((F.col("dt") <= F.lit(dt)) & (F.col("landing_dt") <= F.lit(dt)))
    if user_id is None:
        if not sample:
            raise ValueError("give a USER_ID or --sample")
        busiest = orders.groupBy("user_id").count().orderBy(F.desc("count"), "user_id").first()
        if busiest is None:
            raise ProfileNotFound(f"no orders in {lake}; run the pipeline first")
        user_id = busiest["user_id"]
    user = users.where(F.col("user_id") == user_id).first()
    if user is None:
        raise ProfileNotFound(f"user {user_id} is not in silver.users of {lake}")
    facts = orders.where(F.col("user_id") == user_id).agg(
        F.count(F.lit(1)).alias("orders"),
        F.sum("amount").alias("spend"),
        F.min("ts").alias("first_order_ts"),
        F.max("ts").alias("last_order_ts"),
    ).first()
    return {
        "ID": user["user_id"],
        "姓名": user["name"],
        "性别": {"自填": user["gender"]},
        "消费": {
            "订单数": facts["orders"],
            "消费金额": round(facts["spend"] or 0.0, 2),
            "首次消费时间": facts["first_order_ts"],
            "最后消费时间": facts["last_order_ts"],
        },
    }
