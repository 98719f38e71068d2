"""The clean job on hand-written dirty landing files (tests/dirty_landing.py)."""

from __future__ import annotations

import shutil
from datetime import date

import pytest
import yaml
from deltalake import DeltaTable

import dirty_landing as landing
from portrait.clean.identity import read_attributed_events
from portrait.core.config import Conf
from portrait.core.pipeline import RunContext, run_stage
from portrait.core.tables import Catalog
from repo import REPO_ROOT

DAY1, DAY2 = date(2026, 7, 1), date(2026, 7, 2)
SILVER = [
    "silver.events",
    "silver.orders",
    "silver.order_items",
    "silver.users_history",
    "silver.users",
    "silver.addresses",
    "silver.device_map",
]
ALL_TABLES = SILVER + ["quarantine.records", "ops.reconciliation"]


def make_conf(tmp_path, **clean_overrides) -> Conf:
    """The repo's conf with a few clean settings changed (a small bot limit for small files)."""
    conf_dir = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf_dir)
    pipeline = yaml.safe_load((conf_dir / "pipeline.yaml").read_text())
    pipeline["clean"].update({"bot_events_per_device_per_day": 5, "max_quarantine_ratio": 1.0, **clean_overrides})
    (conf_dir / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, allow_unicode=True))
    return Conf(conf_dir)


@pytest.fixture
def lake(tmp_path):
    path = tmp_path / "lake"
    landing.write_day1(path)
    landing.write_day2(path)
    return path


@pytest.fixture(scope="module")
def cleaned(spark, tmp_path_factory):
    """Both days cleaned once, for the tests that only read the result."""
    tmp_path = tmp_path_factory.mktemp("cleaned")
    lake = tmp_path / "lake"
    landing.write_day1(lake)
    landing.write_day2(lake)
    conf = make_conf(tmp_path)
    results = {dt: clean(spark, lake, conf, dt) for dt in (DAY1, DAY2)}
    return Catalog(str(lake), conf), conf, results


def clean(spark, lake, conf, dt):
    return run_stage(RunContext(spark, str(lake), dt, conf), "clean")


def table_rows(spark, catalog, name, where=None):
    df = catalog.read(spark, name)
    if where:
        df = df.where(where)
    return sorted(tuple(r) for r in df.collect())


def snapshot(spark, catalog):
    return {name: table_rows(spark, catalog, name) for name in ALL_TABLES}


def by_source(result):
    return {row["source"]: row for row in result.notes["reconciliation"]}


def test_every_record_is_accepted_quarantined_or_a_counted_duplicate(spark, cleaned):
    catalog, conf, results = cleaned
    recon = by_source(results[DAY1])
    expected = {  # source: (input, accepted, quarantined, duplicates), worked out line by line in dirty_landing.py
        "users": (7, 2, 4, 1),
        "addresses": (3, 1, 2, 0),
        "orders": (7, 1, 5, 1),
        "events": (17, 5, 11, 1),
        "consent": (6, 4, 2, 0),
    }
    got = {s: (r["input_records"], r["accepted"], r["quarantined"], r["duplicates"]) for s, r in recon.items()}
    assert got == expected
    assert all(r["balanced"] for r in recon.values())
    # test accounts and the bot's events are filtered by policy, not broken input (the quarantine gate ignores them)
    assert {s: r["policy_filtered"] for s, r in recon.items()} == {"users": 1, "addresses": 1, "orders": 1, "events": 7, "consent": 1}
    stored = table_rows(spark, catalog, "ops.reconciliation", f"dt = DATE'{DAY1}'")
    assert sorted((r[0], r[1], r[2], r[3], r[4]) for r in stored) == sorted((s, *v) for s, v in expected.items())
    # accepted counts are what the silver tables hold
    landed_day1 = f"landing_dt = DATE'{DAY1}'"
    assert catalog.read(spark, "silver.events").where(landed_day1).count() == 5
    assert catalog.read(spark, "silver.orders").where(landed_day1).count() == 1
    assert catalog.read(spark, "silver.users_history").where(f"dt = DATE'{DAY1}'").count() == 2


def test_each_rejection_rule_with_its_reason(spark, cleaned):
    catalog, _, _ = cleaned
    rows = catalog.read(spark, "quarantine.records").where(f"dt = DATE'{DAY1}'").collect()
    rule_of = {(r.source, r.record_key): (r.rule, r.detail) for r in rows if r.record_key is not None}
    assert rule_of[("users", "t1")][0] == "test_account"
    assert rule_of[("users", "u4")] == ("missing_field", "missing required field 'name'")
    assert rule_of[("users", "u5")] == ("wrong_type", "field 'birth_year' is STRING, expected long")
    assert rule_of[("addresses", "a2")][0] == "unknown_value" and "castle" in rule_of[("addresses", "a2")][1]
    assert rule_of[("orders", "o2")] == ("out_of_range", "amount -5.0 is below 0")
    assert rule_of[("orders", "o3")][0] == "test_account"
    assert rule_of[("orders", "o4")][0] == "wrong_type" and "items" in rule_of[("orders", "o4")][1]
    assert rule_of[("orders", "o5")][0] == "future_timestamp"
    assert rule_of[("orders", "o6")][0] == "wrong_type" and "ISO-8601" in rule_of[("orders", "o6")][1]
    assert rule_of[("events", "e4")][0] == "unknown_value" and "hover" in rule_of[("events", "e4")][1]
    assert rule_of[("events", "e6")][0] == "test_account"
    assert rule_of[("events", "e8")] == ("missing_field", "missing required field 'device_id'")
    assert rule_of[("events", "bot0")][0] == "bot_device" and "dbot" in rule_of[("events", "bot0")][1]
    malformed = [r for r in rows if r.rule == "malformed_json"]
    # stored masked (docs/privacy.md): the cut name keeps its field, type and length, not its text
    assert sorted(r.raw_line for r in malformed) == ["not json at all", '{"user_id": "u3", "name": "«pii:name:string:2»"']
    assert all(r.source_file.endswith(".jsonl") and r.line_no >= 1 and r.dt == DAY1 for r in rows)
    number_id = [r for r in rows if r.rule == "wrong_type" and r.source == "events"]
    assert [(r.line_no, r.detail) for r in number_id] == [(10, "field 'event_id' is BIGINT, expected string")]


def test_timestamps_in_both_forms_become_utc_with_a_shanghai_business_date(spark, cleaned):
    catalog, _, _ = cleaned
    orders = {r.order_id: r for r in catalog.read(spark, "silver.orders").collect()}
    assert str(orders["o1"].ts) == "2026-07-01 03:00:00" and orders["o1"].dt == DAY1  # epoch ms
    assert str(orders["o7"].ts) == "2026-06-30 12:00:00" and orders["o7"].dt == date(2026, 6, 30)  # ISO +08:00
    events = {r.event_id: r for r in catalog.read(spark, "silver.events").collect()}
    # 2026-06-30T16:00Z is already 2026-07-01 in Shanghai
    assert str(events["e10"].ts) == "2026-06-30 16:00:00" and events["e10"].dt == DAY1


def test_late_events_are_filed_by_business_date_and_duplicates_caught_across_days(spark, cleaned):
    catalog, _, results = cleaned
    recon = by_source(results[DAY2])
    assert (recon["orders"]["accepted"], recon["orders"]["duplicates"]) == (1, 1)
    assert (recon["events"]["accepted"], recon["events"]["quarantined"], recon["events"]["duplicates"]) == (2, 1, 1)
    late = table_rows(spark, catalog, "silver.orders", "order_id = 'o7'")
    assert [(r[9], r[10]) for r in late] == [(date(2026, 6, 30), DAY2)]  # (dt, landing_dt)
    assert [r.event_id for r in catalog.read(spark, "silver.events").where("event_id = 'e1'").collect()] == ["e1"]
    assert catalog.read(spark, "silver.events").where("event_id = 'e10'").first().landing_dt == DAY2
    # the test account is remembered from day 1's quarantine
    rules = {r.record_key: r.rule for r in catalog.read(spark, "quarantine.records").where(f"dt = DATE'{DAY2}'").collect()}
    assert rules == {"e11": "test_account"}


def test_identity_stitching_same_day_and_across_days(spark, cleaned):
    catalog, conf, _ = cleaned
    events = {r.event_id: r for r in catalog.read(spark, "silver.events").collect()}
    assert (events["e2"].user_id, events["e2"].anonymous) == ("u2", True)  # login an hour later on d2
    stored = {r.event_id: r.user_id for r in catalog.read(spark, "silver.events").collect()}
    assert stored["e5"] is None  # d3 logs in on day 2, which does not rewrite day 1's rows...
    lookback = conf.pipeline["clean"]["stitch_lookback_hours"]
    attributed = {r.event_id: r.user_id for r in read_attributed_events(spark, catalog, lookback).collect()}
    assert attributed["e5"] == "u1"  # ...the device map attributes them when read
    as_of_day1 = {r.event_id: r.user_id for r in read_attributed_events(spark, catalog, lookback, until=DAY1).collect()}
    assert as_of_day1["e5"] is None and "e9" not in as_of_day1  # no look-ahead
    assert table_rows(spark, catalog, "silver.device_map") == sorted(
        [
            ("d2", "u2", events["e3"].ts, events["e3"].ts, DAY1),
            ("d3", "u1", stored_ts(catalog, spark, "e9"), stored_ts(catalog, spark, "e9"), DAY2),
        ]
    )


@pytest.mark.parametrize("since", [DAY1, DAY2])
def test_stitching_pruned_by_since_equals_stitching_everything(spark, cleaned, since):
    """Readers of a window prune before stitching; that must not change who an event belongs to."""
    catalog, conf, _ = cleaned
    lookback = conf.pipeline["clean"]["stitch_lookback_hours"]
    everything = read_attributed_events(spark, catalog, lookback).where(f"dt >= DATE'{since}'")
    pruned = read_attributed_events(spark, catalog, lookback, since=since)
    expected = sorted((r.event_id, r.user_id) for r in everything.collect())
    assert expected  # the window holds events
    assert sorted((r.event_id, r.user_id) for r in pruned.collect()) == expected


def stored_ts(catalog, spark, event_id):
    return catalog.read(spark, "silver.events").where(f"event_id = '{event_id}'").first().ts


def test_stitching_respects_the_look_back(spark, lake, tmp_path):
    conf = make_conf(tmp_path, stitch_lookback_hours=1)
    clean(spark, lake, conf, DAY1)
    clean(spark, lake, conf, DAY2)
    catalog = Catalog(str(lake), conf)
    attributed = {r.event_id: r.user_id for r in read_attributed_events(spark, catalog, 1).collect()}
    assert attributed["e2"] == "u2"  # login 1 hour later: inside
    assert attributed["e5"] is None  # login 2 hours later: outside


def test_sensitive_fields_stay_out_of_silver(spark, cleaned):
    catalog, _, _ = cleaned
    address = catalog.read(spark, "silver.addresses").first()
    assert (address.place_name, address.lat, address.lon, address.poi_type) == ("北京市海淀区中关村大街", 39.98, 116.32, "office")
    assert "phone" not in catalog.read(spark, "silver.users").columns
    for name in SILVER:
        text = " ".join(str(v) for row in catalog.read(spark, name).collect() for v in row)
        assert "13812345678" not in text and "13800138000" not in text, name


def test_users_keep_history_and_latest_state(spark, cleaned):
    catalog, _, _ = cleaned
    latest = {r.user_id: r for r in catalog.read(spark, "silver.users").collect()}
    assert latest["u1"].city == "上海" and latest["u2"].gender == "F" and latest["u1"].has_phone
    history = [(r.user_id, r.city, r.dt) for r in catalog.read(spark, "silver.users_history").where("user_id = 'u1'").collect()]
    assert sorted(history) == [("u1", "上海", DAY2), ("u1", "北京", DAY1)]


def test_rerun_is_idempotent_and_never_touches_other_dates(spark, lake, tmp_path):
    conf = make_conf(tmp_path)
    catalog = Catalog(str(lake), conf)
    clean(spark, lake, conf, DAY1)
    clean(spark, lake, conf, DAY2)
    before = snapshot(spark, catalog)
    clean(spark, lake, conf, DAY2)
    assert snapshot(spark, catalog) == before
    clean(spark, lake, conf, DAY1)  # an older date: silver.users must not roll back to its versions
    assert snapshot(spark, catalog) == before


def test_failed_gate_publishes_nothing_and_names_the_table(spark, lake, tmp_path):
    from portrait.gates import GateFailed

    conf = make_conf(tmp_path, max_quarantine_ratio=0.05)  # day 1 is far dirtier than 5 %
    catalog = Catalog(str(lake), conf)
    with pytest.raises(GateFailed, match="ops.reconciliation"):
        clean(spark, lake, conf, DAY1)
    for name in SILVER + ["quarantine.records"]:
        assert not catalog.exists(name), f"{name} was published despite the failed gate"
    findings = catalog.read(spark, "ops.gate_results").where("NOT success").collect()
    assert {r.table_name for r in findings} == {"ops.reconciliation"}


def test_failed_gate_leaves_published_versions_unchanged(spark, lake, tmp_path):
    from portrait.gates import GateFailed

    good = make_conf(tmp_path / "good")
    clean(spark, lake, good, DAY1)
    catalog = Catalog(str(lake), good)
    versions = {name: DeltaTable(catalog.spec(name).path).version() for name in SILVER}
    # day 2 quarantines only a test account: with no policy rules it counts
    strict = make_conf(tmp_path / "strict", max_quarantine_ratio=0.0, quarantine_allowance=0, policy_rules=[])
    with pytest.raises(GateFailed):
        clean(spark, lake, strict, DAY2)
    assert {name: DeltaTable(catalog.spec(name).path).version() for name in SILVER} == versions


def test_consent_latest_record_per_user_and_channel_holds(spark, cleaned):
    catalog, conf, results = cleaned
    held = {(r["user_id"], r["channel"]): r["granted"] for r in catalog.read(spark, "silver.consent").collect()}
    # u2 granted and withdrew push on day 1 (the later holds); u1's e-mail grant of day 1 was withdrawn on day 2
    assert held == {("u1", "push"): True, ("u1", "email"): False, ("u2", "push"): False}
    assert catalog.read(spark, "silver.consent_history").count() == 5
    rules = {r["record_key"]: r["rule"] for r in catalog.read(spark, "quarantine.records").where("source = 'consent'").collect()}
    assert rules == {"c5": "unknown_value", "c6": "test_account"}
