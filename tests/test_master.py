"""The master stage end to end on a tiny hand-made lake: MERGE upsert, snapshot, gate, show, export.

The sub-profile partitions are written directly (hand-made rows, real Delta
tables); the master stage then runs through write-audit-publish exactly as
the daily run does (``run_stage``).
"""

from __future__ import annotations

import json
from datetime import date, datetime

import jsonschema
import pytest
from pyspark.sql import functions as F

from portrait.core.pipeline import RunContext, run_stage
from portrait.core.tables import Catalog
from portrait.gates import GateFailed, run_gate
from portrait.master.merge import layout
from portrait.master.render import ProfileNotFound, export_profiles, read_profile, schema
from profile_rows import CONF, row, write

D1, D2, D3 = date(2026, 9, 1), date(2026, 9, 2), date(2026, 9, 3)
SECTIONS = list(layout(Catalog(".", CONF)).sections)
LINES = CONF.landing["sources"]["events"]["fields"]["product_line"]["values"]


def land_users(spark, lake: str, dt: date, *user_ids: str) -> None:
    rows = [
        {
            "user_id": u,
            "name": f"用户{u}",
            "gender": "F",
            "birth_year": 1995,
            "registered_at": datetime(2026, 1, 1),
            "channel": "app",
            "city": "上海",
            "has_phone": True,
            "updated_at": datetime(2026, 1, 1),
            "dt": dt,
        }
        for u in user_ids
    ]
    catalog = Catalog(lake, CONF)
    catalog.write(spark, spark.createDataFrame(rows, catalog.spec("silver.users_history").ddl), "silver.users_history", "partition", dt)


def write_sub_profiles(spark, lake: str, dt: date, users: list[str], changes: dict | None = None, skip: tuple = ()) -> None:
    """One row per user in every sub-profile of ``dt``; ``changes[table][user]`` overrides values, ``skip`` = (table, user) left out."""
    changes = changes or {}
    for table in SECTIONS:
        rows = [row(table, u, dt, **changes.get(table, {}).get(u, {})) for u in users if (table, u) not in skip]
        write(spark, lake, table, rows, dt)
    lines = [row("profile.product_line", u, dt, product_line=line) for u in users for line in LINES]
    write(spark, lake, "profile.product_line", lines, dt)


def master(spark, lake: str, dt: date):
    return run_stage(RunContext(spark, lake, dt, CONF), "master")


def rows_of(spark, lake: str, table: str, dt: date | None = None) -> dict:
    df = Catalog(lake, CONF).read(spark, table)
    if dt:
        df = df.where(f"dt = DATE'{dt}'")
    return {r["user_id"]: r.asDict(recursive=True) for r in df.collect()}


#: D2's sub-profile rows that differ from the defaults: u1 spends more and has an office address
#: without a place name; u3's models could not run (null tags).
D2_CHANGES = {
    "profile.consumption": {"u1": {"spend_30d": 260.0, "vip_tier": "vip", "orders_30d": 5}},
    "profile.social": {
        "u1": {
            "common_address_count": 1,
            "common_addresses": [
                {"address_id": "a1", "place_name": None, "lat": 31.23, "lon": 121.47, "poi_type": "office", "uses": 3, "last_used_dt": D2}
            ],
        }
    },
    "profile.model_tags": {"u3": {"p_male": None, "model_versions": {}}},
}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """u1..u3 known on D1, u4 joins on D2 (D2_CHANGES)."""
    lake = str(tmp_path_factory.mktemp("master") / "lake")
    land_users(spark, lake, D1, "u1", "u2", "u3")
    land_users(spark, lake, D2, "u4")
    write_sub_profiles(spark, lake, D1, ["u1", "u2", "u3"], {"profile.model_tags": D2_CHANGES["profile.model_tags"]})
    write_sub_profiles(spark, lake, D2, ["u1", "u2", "u3", "u4"], D2_CHANGES)
    master(spark, lake, D1)
    master(spark, lake, D2)
    return lake


def test_one_flat_row_per_known_user_with_every_section(spark, lake):
    snapshot = rows_of(spark, lake, "gold.profile_snapshot", D1)
    assert set(snapshot) == {"u1", "u2", "u3"}
    u1 = snapshot["u1"]
    assert u1["name"] == "用户u1" and u1["gender_reported"] == "F" and u1["lifecycle_stage"] == "old" and u1["activity_tag"] == "active"
    assert [line["product_line"] for line in u1["product_lines"]] == sorted(LINES)
    assert snapshot["u3"]["p_male"] is None and snapshot["u3"]["model_versions"] == {}  # a model that did not run: null, still built
    assert set(rows_of(spark, lake, "gold.profile_snapshot", D2)) == {"u1", "u2", "u3", "u4"}
    profile = rows_of(spark, lake, "gold.profile")
    assert {u: (r["dt"], r["spend_30d"]) for u, r in profile.items()} == {
        "u1": (D2, 260.0),
        "u2": (D2, 80.0),
        "u3": (D2, 80.0),
        "u4": (D2, 80.0),
    }


def test_rerunning_a_date_gives_the_same_tables(spark, lake):
    def tables():
        return [rows_of(spark, lake, "gold.profile")] + [rows_of(spark, lake, "gold.profile_snapshot", dt) for dt in (D1, D2)]

    before = tables()
    master(spark, lake, D2)
    assert tables() == before


def test_a_changed_sub_profile_row_updates_that_user_only(spark, lake):
    before = rows_of(spark, lake, "gold.profile")
    snapshot_d1 = rows_of(spark, lake, "gold.profile_snapshot", D1)
    corrected = {"profile.behavior": {"u2": {"activity_tag": "silent", "logins_30d": 0}}}
    write_sub_profiles(spark, lake, D2, ["u1", "u2", "u3", "u4"], {**D2_CHANGES, **corrected})
    master(spark, lake, D2)
    after = rows_of(spark, lake, "gold.profile")
    changed = {u for u in after if after[u] != before[u]}
    assert changed == {"u2"}
    assert (after["u2"]["activity_tag"], after["u2"]["logins_30d"]) == ("silent", 0)
    assert rows_of(spark, lake, "gold.profile_snapshot", D1) == snapshot_d1  # another date never changes


def test_rerunning_an_older_date_does_not_roll_the_master_back(spark, lake):
    before = rows_of(spark, lake, "gold.profile")
    snapshot_d2 = rows_of(spark, lake, "gold.profile_snapshot", D2)
    master(spark, lake, D1)
    assert rows_of(spark, lake, "gold.profile") == before  # still D2's rows, u4 kept
    assert rows_of(spark, lake, "gold.profile_snapshot", D2) == snapshot_d2
    assert {r["dt"] for r in rows_of(spark, lake, "gold.profile_snapshot", D1).values()} == {D1}


def test_show_follows_the_json_schema_for_any_date(spark, lake):
    validator = jsonschema.Draft202012Validator(schema(CONF))
    latest = read_profile(spark, lake, CONF, "u1")
    validator.validate(latest)
    assert latest["快照日期"] == str(D2) and latest["消费"]["消费标签"] == "VIP用户" and latest["消费"]["30天内消费金额"] == "260元"
    assert latest["性别"] == {"自填": "女", "推断": {"性别": "女", "男性概率": 0.1}}
    assert set(latest["产品线"]) == set(LINES)
    assert latest["社会属性"]["常用地址"] == {"常用地址1": {"地理名称": None, "经纬度": "31.23,121.47", "类型": "商业区", "次数": 3}}
    older = read_profile(spark, lake, CONF, "u1", dt=D1)
    validator.validate(older)
    assert older["消费"]["30天内消费金额"] == "80元"
    no_models = read_profile(spark, lake, CONF, "u3")
    validator.validate(no_models)
    assert no_models["性别"]["推断"] == {"性别": None, "男性概率": None}
    assert read_profile(spark, lake, CONF, None, sample=True)["ID"] == "u1"  # the most orders in 30 days
    with pytest.raises(ProfileNotFound, match=f"user u4 has no profile on {D1}"):
        read_profile(spark, lake, CONF, "u4", dt=D1)
    broken = {**latest, "消费": {**latest["消费"], "流失概率": 1.5}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_export_writes_every_user_as_one_json_line(spark, lake, tmp_path):
    seen = []
    path, lines, dt = export_profiles(
        spark, lake, CONF, out=tmp_path / "profiles.jsonl", progress=lambda done, total: seen.append((done, total)), with_pii=True
    )
    profiles = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert (lines, dt, seen[-1]) == (4, D2, (4, 4))
    assert [p["ID"] for p in profiles] == ["u1", "u2", "u3", "u4"]
    validator = jsonschema.Draft202012Validator(schema(CONF))
    for profile in profiles:
        validator.validate(profile)
    assert profiles[0] == read_profile(spark, lake, CONF, "u1")  # the same rendering as show (asked with the personal fields)


@pytest.mark.parametrize(
    "broken, failed",
    [
        ({"changes": {"profile.consumption": {}}, "duplicate": "u2"}, "user_id"),
        ({"skip": (("profile.behavior", "u3"),)}, "behavior_section_present"),
    ],
)
def test_the_gate_refuses_a_duplicated_user_or_a_missing_section_and_publishes_nothing(spark, lake, broken, failed):
    catalog = Catalog(lake, CONF)
    versions = {t: catalog.version(t) for t in ("gold.profile", "gold.profile_snapshot")}
    write_sub_profiles(spark, lake, D3, ["u1", "u2", "u3", "u4"], skip=broken.get("skip", ()))
    if "duplicate" in broken:  # a second row for the user in one sub-profile
        extra = row("profile.interest", broken["duplicate"], D3, interest_signals_90d=7)
        catalog.write(spark, spark.createDataFrame([extra], catalog.spec("profile.interest").ddl), "profile.interest", "append")
    with pytest.raises(GateFailed) as refused:
        master(spark, lake, D3)
    assert {r.column for report in refused.value.reports for r in report.failures()} == {failed}
    assert {t: catalog.version(t) for t in versions} == versions
    assert rows_of(spark, lake, "gold.profile_snapshot", D3) == {}


def test_the_gate_refuses_a_snapshot_missing_a_known_user_or_with_a_stranger(spark, lake):
    snapshot = Catalog(lake, CONF).read(spark, "gold.profile_snapshot").where(f"dt = DATE'{D2}'")
    assert run_gate(spark, "gold.profile_snapshot", snapshot, D2, CONF, lake=lake).success
    stranger = snapshot.where("user_id = 'u1'").withColumn("user_id", F.lit("nobody"))
    for rows, named in ((snapshot.where("user_id <> 'u4'"), "u4"), (snapshot.unionByName(stranger), "nobody")):
        report = run_gate(spark, "gold.profile_snapshot", rows, D2, CONF, lake=lake)
        [failure] = report.failures()
        assert failure.column == "one_row_per_user_known_on_dt" and named in failure.observed


def test_the_snapshot_declares_the_columns_of_the_master_once():
    catalog = Catalog(".", CONF)
    assert catalog.spec("gold.profile_snapshot").columns == catalog.spec("gold.profile").columns
    both = Catalog(".", CONF, {**CONF.tables, "gold.twin": {"columns_like": "gold.profile", "columns": {"user_id": "string"}}})
    with pytest.raises(KeyError, match="both columns and columns_like"):
        both.spec("gold.twin")
