"""The master profile as nested JSON, shaped like the seed's final example.

Reads one user's row of the master snapshot ``gold.profile_snapshot`` (the
latest date unless one is given) and nests it: identity, 性别 (self-reported
and inferred), 社会属性 (common addresses, occupation), 消费, 行为 (with
taste) and one section per product line. ``render`` is pure - a flat row as
JSON values in, the nested dict out - so ``portrait show`` and the
distributed ``portrait export`` (mapInPandas over the snapshot) print the same
thing; conf/schemas/profile.schema.json describes its output.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from pyspark.sql import functions as F

from portrait.core import storage
from portrait.core.config import Conf
from portrait.core.tables import Catalog

SNAPSHOT = "gold.profile_snapshot"
GENDER = {"M": "男", "F": "女"}
LIFECYCLE = {"potential": "潜在用户", "new": "新用户", "old": "老用户"}
VIP = {"vip": "VIP用户", "super_vip": "超级VIP用户"}
ACTIVITY = {"active": "活跃", "silent": "沉默", "lost": "流失"}
POI = {"residential": "居住区", "office": "商业区", "school": "学校", "other": "其他"}
TASTE = {"vegetable": "蔬菜沙拉", "fruit": "水果沙拉", "seafood": "海鲜沙拉", "chicken": "鸡肉沙拉"}
OCCUPATION = {"p_white_collar": "白领", "p_student": "学生"}


class ProfileNotFound(LookupError):
    """No such user, or no snapshot yet."""


def snapshot_date(spark, catalog: Catalog, dt: date | None = None) -> date:
    """``dt`` if given, else the latest date of the master snapshot."""
    if not catalog.exists(SNAPSHOT):
        raise ProfileNotFound(f"no master profile in {catalog.lake}: run the pipeline first")
    return dt or catalog.read(spark, SNAPSHOT).agg(F.max("dt")).first()[0]


def as_json_rows(df):
    """Each row as one JSON string (column ``row``): the engine's own encoding, read back by ``render``."""
    return df.select(F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns])).alias("row"))


def read_profile(spark, lake: str, conf: Conf, user_id: str | None, sample: bool = False, dt: date | None = None) -> dict:
    catalog = Catalog(lake, conf)
    dt = snapshot_date(spark, catalog, dt)
    snapshot = catalog.read(spark, SNAPSHOT).where(F.col("dt") == F.lit(dt))
    if user_id is None:
        if not sample:
            raise ValueError("give a USER_ID or --sample")
        pick = snapshot.orderBy(F.desc("orders_30d"), "user_id").select("user_id").first()
        if pick is None:
            raise ProfileNotFound(f"the snapshot of {dt} is empty")
        user_id = pick["user_id"]
    found = as_json_rows(snapshot.where(F.col("user_id") == user_id)).first()
    if found is None:
        raise ProfileNotFound(f"user {user_id} has no profile on {dt}")
    return render(json.loads(found["row"]))


def render(row: dict) -> dict:
    """Nest one flat master row (JSON values: dates as YYYY-MM-DD, absent = null) like the seed's profile JSON."""
    p_male = row.get("p_male")
    return {
        "ID": row["user_id"],
        "姓名": row.get("name"),
        "快照日期": row["dt"],
        "性别": {
            "自填": GENDER.get(row.get("gender_reported")),
            "推断": {"性别": None if p_male is None else ("男" if p_male >= 0.5 else "女"), "男性概率": _round(p_male)},
        },
        "社会属性": _social(row),
        "消费": _consumption(row),
        "行为": _behavior(row),
        "产品线": {
            line["product_line"]: {
                "强度": line["line_intensity"],
                "状态": line["line_status"],
                "30天使用次数": line["line_usage_30d"],
                "30天使用天数": line["line_active_days_30d"],
                "使用占比": _round(line.get("line_usage_share_30d")),
                "最后使用时间": _day(line.get("line_last_use_dt")),
                "距上次使用天数": line.get("days_since_last_use"),
            }
            for line in row.get("product_lines") or []
        },
        "模型版本": dict(row.get("model_versions") or {}),
    }


def _social(row: dict) -> dict:
    addresses = {
        f"常用地址{n}": {
            "地理名称": a.get("place_name"),
            "经纬度": None if a.get("lat") is None or a.get("lon") is None else f"{a['lat']},{a['lon']}",
            "类型": POI.get(a.get("poi_type"), a.get("poi_type")),
            "次数": a.get("uses"),
        }
        for n, a in enumerate(row.get("common_addresses") or [], start=1)
    }
    scores = {label: row.get(column) for column, label in OCCUPATION.items()}
    known = {label: score for label, score in scores.items() if score is not None}
    label = max(known, key=known.get) if known else None
    return {
        "常用地址": addresses,
        "职业": {"职业标签": label, "概率": _round(known.get(label)), **{f"{k}概率": _round(v) for k, v in scores.items()}},
        "年龄段": row.get("age_band"),
        "城市": row.get("city"),
    }


def _consumption(row: dict) -> dict:
    spend = row.get("spend_30d")
    return {
        "消费标签": VIP.get(row.get("vip_tier")) or LIFECYCLE.get(row.get("lifecycle_stage")),
        "生命周期": LIFECYCLE.get(row.get("lifecycle_stage")),
        "30天内消费金额": None if spend is None else f"{spend:.0f}元",
        "30天内消费次数": row.get("orders_30d"),
        "距上次消费天数": row.get("days_since_last_order"),
        "RFM": {"R": row.get("rfm_r"), "F": row.get("rfm_f"), "M": row.get("rfm_m"), "分群": row.get("rfm_segment")},
        "流失概率": _round(row.get("churn_probability")),
        "存活概率": _round(row.get("p_alive")),
        "价格敏感": _round(row.get("price_sensitivity")),
        "优惠敏感": _round(row.get("discount_sensitivity")),
        "首次消费时间": _day(row.get("first_order_dt")),
        "最后消费时间": _day(row.get("last_order_dt")),
    }


def _behavior(row: dict) -> dict:
    return {
        "行为标签": ACTIVITY.get(row.get("activity_tag"), row.get("activity_tag")),
        "30天内登场次数": row.get("logins_30d"),
        "30天内评价次数": row.get("reviews_30d"),
        "30天内差评次数": row.get("bad_reviews_30d"),
        "30天内退货次数": row.get("refunds_30d"),
        "口味偏好": {name: _round(row.get(f"taste_{category}")) for category, name in TASTE.items()},
        "兴趣": {w["category"]: _round(w["weight"]) for w in row.get("interest_weights") or []},
    }


def _round(value):
    return None if value is None else round(float(value), 2)


def _day(value: str | None):
    return None if value is None else value.replace("-", ".")


def schema(conf: Conf) -> dict:
    """The JSON Schema the rendering follows (conf/schemas/profile.schema.json, checked by the tests)."""
    return json.loads((conf.dir / "schemas" / "profile.schema.json").read_text(encoding="utf-8"))


def export_profiles(
    spark, lake: str, conf: Conf, dt: date | None = None, out: str | Path | None = None, progress=None
) -> tuple[Path, int, date]:
    """Write every user's profile of snapshot ``dt`` (default: the latest) as JSON lines; returns (path, lines, dt).

    Rendering runs on the engine (mapInPandas over the snapshot, the same
    ``render`` as ``show``); the driver only streams the finished lines, in
    user_id order, to the file. ``progress(done, total)`` is called as lines are written.
    """
    catalog = Catalog(lake, conf)
    dt = snapshot_date(spark, catalog, dt)
    snapshot = catalog.read(spark, SNAPSHOT).where(F.col("dt") == F.lit(dt))
    total = snapshot.count()
    if total == 0:
        raise ProfileNotFound(f"the snapshot of {dt} is empty")
    rendered = as_json_rows(snapshot).mapInPandas(render_lines, "user_id string, profile string").orderBy("user_id")
    path = str(out) if out else storage.join(lake, "exports", f"profile-{dt}.jsonl")
    lines = 0
    with storage.open_write(path) as handle:  # a reader never sees half a file
        for row in rendered.toLocalIterator():
            handle.write((row["profile"] + "\n").encode("utf-8"))
            lines += 1
            if progress and (lines % 1000 == 0 or lines == total):
                progress(lines, total)
    return (path if storage.is_remote(path) else Path(path)), lines, dt


def render_lines(batches):
    """mapInPandas: batches of JSON rows -> (user_id, rendered profile as one JSON line)."""
    import pandas as pd

    for batch in batches:
        profiles = [render(json.loads(text)) for text in batch["row"]]
        yield pd.DataFrame(
            {
                "user_id": [p["ID"] for p in profiles],
                "profile": [json.dumps(p, ensure_ascii=False) for p in profiles],
            }
        )
