"""One user's profile as nested JSON, shaped like the seed's final example.

Reads the sub-profile rows (and the model tags, once that stage has run) of
one snapshot date - the latest unless a date is given - and nests them:
identity, 社会属性 (common addresses, occupation), 消费, 行为 (with taste) and
one section per product line. Sections whose table has no row yet are left out.
"""
from __future__ import annotations

from datetime import date

from pyspark.sql import functions as F

from portrait.lib.config import Conf
from portrait.lib.tables import Catalog

SUB_PROFILES = ("profile.consumption", "profile.behavior", "profile.interest", "profile.social")
MODEL_TAGS = "profile.model_tags"
LIFECYCLE = {"potential": "潜在用户", "new": "新用户", "old": "老用户"}
VIP = {"vip": "VIP用户", "super_vip": "超级VIP用户"}
ACTIVITY = {"active": "活跃", "silent": "沉默", "lost": "流失"}
POI = {"residential": "居住区", "office": "商业区", "school": "学校", "other": "其他"}


class ProfileNotFound(LookupError):
    """No such user, or no snapshot yet."""


def latest_snapshot(spark, catalog: Catalog) -> date:
    if not catalog.exists("profile.consumption"):
        raise ProfileNotFound(f"no profile snapshot in {catalog.lake}: run the pipeline first")
    return catalog.read(spark, "profile.consumption").agg(F.max("dt")).first()[0]


def read_profile(spark, lake: str, conf: Conf, user_id: str | None, sample: bool = False, dt: date | None = None) -> dict:
    catalog = Catalog(lake, conf)
    dt = dt or latest_snapshot(spark, catalog)
    consumption = catalog.read(spark, "profile.consumption").where(F.col("dt") == F.lit(dt))
    if user_id is None:
        if not sample:
            raise ValueError("give a USER_ID or --sample")
        pick = consumption.orderBy(F.desc("orders_30d"), "user_id").first()
        if pick is None:
            raise ProfileNotFound(f"the snapshot of {dt} is empty")
        user_id = pick["user_id"]
    rows = {name: _row(spark, catalog, name, user_id, dt) for name in (*SUB_PROFILES, MODEL_TAGS)}
    if rows["profile.consumption"] is None:
        raise ProfileNotFound(f"user {user_id} has no profile on {dt}")
    user = catalog.read(spark, "silver.users").where(F.col("user_id") == user_id).first()
    lines = (
        catalog.read(spark, "profile.product_line")
        .where((F.col("user_id") == user_id) & (F.col("dt") == F.lit(dt)))
        .collect()
    )
    return render(user_id, user["name"] if user else None, dt, rows, lines)


def _row(spark, catalog: Catalog, name: str, user_id: str, dt: date):
    if name not in catalog.declarations or not catalog.exists(name):
        return None
    row = catalog.read(spark, name).where((F.col("user_id") == user_id) & (F.col("dt") == F.lit(dt))).first()
    return row.asDict(recursive=True) if row else None


def render(user_id: str, name: str | None, dt: date, rows: dict, lines: list) -> dict:
    """Nest one user's tag rows like the seed's profile JSON (pure: rows in, dict out)."""
    consumption, behavior = rows["profile.consumption"], rows.get("profile.behavior") or {}
    social, interest, model = rows.get("profile.social") or {}, rows.get("profile.interest") or {}, rows.get(MODEL_TAGS) or {}
    profile = {"ID": user_id, "姓名": name, "快照日期": str(dt), "性别": {"自填": social.get("gender_reported")}}
    if "p_male" in model:
        profile["性别"]["推断"] = {"男性概率": _round(model["p_male"])}
    addresses = {
        f"常用地址{n}": {"地理名称": a["place_name"], "经纬度": f"{a['lat']},{a['lon']}", "类型": POI.get(a["poi_type"], a["poi_type"]), "次数": a["uses"]}
        for n, a in enumerate(social.get("common_addresses") or [], start=1)
    }
    profile["社会属性"] = {"常用地址": addresses, "年龄段": social.get("age_band"), "城市": social.get("city")}
    if "p_white_collar" in model:
        occupations = {"白领": model["p_white_collar"], "学生": model["p_student"]}
        label = max(occupations, key=lambda k: occupations[k] or 0)
        profile["社会属性"]["职业"] = {"职业标签": label, "概率": _round(occupations[label]), "白领概率": _round(model["p_white_collar"]), "学生概率": _round(model["p_student"])}
    profile["消费"] = {
        "消费标签": VIP.get(consumption["vip_tier"]) or LIFECYCLE.get(consumption["lifecycle_stage"]),
        "生命周期": LIFECYCLE.get(consumption["lifecycle_stage"]),
        "30天内消费金额": f"{consumption['spend_30d']:.0f}元",
        "30天内消费次数": consumption["orders_30d"],
        "距上次消费天数": consumption["days_since_last_order"],
        "RFM": {"R": consumption["rfm_r"], "F": consumption["rfm_f"], "M": consumption["rfm_m"], "分群": consumption["rfm_segment"]},
        "首次消费时间": _day(consumption["first_order_dt"]),
        "最后消费时间": _day(consumption["last_order_dt"]),
    }
    for key, column in (("流失概率", "churn_probability"), ("存活概率", "p_alive"), ("价格敏感", "price_sensitivity"), ("优惠敏感", "discount_sensitivity")):
        if column in model:
            profile["消费"][key] = _round(model[column])
    profile["行为"] = {
        "行为标签": ACTIVITY.get(behavior.get("activity_tag"), behavior.get("activity_tag")),
        "30天内登场次数": behavior.get("logins_30d"),
        "30天内评价次数": behavior.get("reviews_30d"),
        "30天内差评次数": behavior.get("bad_reviews_30d"),
        "30天内退货次数": behavior.get("refunds_30d"),
        "兴趣": {w["category"]: _round(w["weight"]) for w in interest.get("interest_weights") or []},
    }
    taste = {column[len("taste_"):]: _round(value) for column, value in model.items() if column.startswith("taste_")}
    if taste:
        profile["行为"]["口味偏好"] = taste
    profile["产品线"] = {
        line["product_line"]: {"强度": line["line_intensity"], "状态": line["line_status"], "30天使用次数": line["line_usage_30d"], "距上次使用天数": line["days_since_last_use"]}
        for line in sorted(lines, key=lambda r: r["product_line"])
    }
    return profile


def _round(value):
    return None if value is None else round(float(value), 2)


def _day(value):
    return None if value is None else value.strftime("%Y.%m.%d")
