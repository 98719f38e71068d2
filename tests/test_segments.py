"""The segments stage on a hand-made two-day lake, with the real engine, Delta tables and gate.

D-1 = 2026-08-31 and D = 2026-09-01 (inside the back-to-school season). The
models stage chose a retention threshold of 0.4 for D only, so D-1 uses the
conf value 0.5. Five customers ordered to one office place on D.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from portrait.cli import main
from portrait.core.config import Conf, ConfError
from portrait.core.pipeline import RunContext, run_stage
from portrait.core.tables import Catalog
from portrait.segments import bitmaps

D0, D = date(2026, 8, 31), date(2026, 9, 1)
OFFICE, OTHER_OFFICE = "上海市浦东新区世纪大道", "上海市徐汇区漕溪北路"
COLLEAGUES = ["u08", "u09", "u10", "u11", "u12"]

#: user -> (D-1 tags, D tags); None: not in that day's snapshot
PROFILES = {
    "u01": (
        {"vip_tier": "vip", "lifecycle_stage": "old", "churn_probability": 0.3},
        {"vip_tier": "vip", "lifecycle_stage": "old", "churn_probability": 0.45},
    ),
    "u02": (
        {"vip_tier": "super_vip", "lifecycle_stage": "old", "churn_probability": 0.9},
        {"vip_tier": "super_vip", "lifecycle_stage": "old", "churn_probability": 0.9},
    ),
    "u03": (
        {"vip_tier": "regular", "lifecycle_stage": "potential"},
        {"vip_tier": "regular", "lifecycle_stage": "new", "churn_probability": 0.95, "days_since_last_order": 20, "coupon_share_90d": 0.5},
    ),
    "u04": (
        {"lifecycle_stage": "new", "days_since_last_order": 19, "coupon_share_90d": 0.0},
        {"lifecycle_stage": "new", "days_since_last_order": 20, "coupon_share_90d": 0.0},
    ),
    "u05": ({"lifecycle_stage": "potential"}, {"lifecycle_stage": "potential"}),
    "u06": (
        {"lifecycle_stage": "new", "p_student": 0.8, "days_since_last_order": 29},
        {"lifecycle_stage": "old", "p_student": 0.8, "days_since_last_order": 30},
    ),
    "u07": (
        {"lifecycle_stage": "old", "p_student": 0.8, "days_since_last_order": 3},
        {"lifecycle_stage": "old", "p_student": 0.8, "days_since_last_order": 4},
    ),
    **{u: ({"lifecycle_stage": "old"}, {"lifecycle_stage": "old"}) for u in COLLEAGUES + ["u13"]},
    "u14": (None, {"lifecycle_stage": "potential"}),
}
EXPECTED_ON_D = {
    "vip_at_risk": ["u01", "u02"],
    "new_user_no_repeat": ["u03"],
    "students_back_to_school": ["u06"],
    "potential_users": ["u05", "u14"],
    "group_order_candidates": COLLEAGUES,
}


def _snapshot_rows(catalog, day: date, which: int) -> list[dict]:
    columns = catalog.spec("gold.profile_snapshot").columns
    rows = []
    for user, days in PROFILES.items():
        if days[which] is not None:
            row = dict.fromkeys(columns)
            row.update(user_id=user, name=f"name {user}", dt=day, **days[which])
            rows.append(row)
    return rows


def _ts(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _write_lake(spark, catalog) -> None:
    for which, day in enumerate((D0, D)):
        spec = catalog.spec("gold.profile_snapshot")
        # append: each date once into a new table (a replaceWhere over null array columns trips Sail's union)
        catalog.write(spark, spark.createDataFrame(_snapshot_rows(catalog, day, which), spec.ddl), spec.name, "append")
    addresses = [(f"a{u}", u, OFFICE, 31.2, 121.5, "office", "上海", _ts(D0, 0)) for u in COLLEAGUES]
    addresses += [
        ("au13", "u13", OTHER_OFFICE, 31.1, 121.4, "office", "上海", _ts(D0, 0)),
        ("au06", "u06", OFFICE, 31.2, 121.5, "school", "上海", _ts(D0, 0)),
    ]  # same name, not an office
    catalog.write(spark, spark.createDataFrame(addresses, catalog.spec("silver.addresses").ddl), "silver.addresses", "upsert")
    orders = [(f"o{u}", u, _ts(D, 3 + n), 30.0, 0.0, 1, f"a{u}", "salad", "paid", D, D) for n, u in enumerate(COLLEAGUES + ["u13", "u06"])]
    orders.append(("o-cancelled", "u13", _ts(D, 4), 30.0, 0.0, 1, "au13", "salad", "cancelled", D, D))
    catalog.write(spark, spark.createDataFrame(orders, catalog.spec("silver.orders").ddl), "silver.orders", "append")
    curve = [("churn", "20260901", t, 1, 0.5, 10.0, 8.0, 2.0, t == 0.4, 0.25, "conf", "conf", 120.0, D) for t in (0.3, 0.4, 0.5)]
    catalog.write(spark, spark.createDataFrame(curve, catalog.spec("ops.threshold_curve").ddl), "ops.threshold_curve", "partition", D)


def _rows(catalog, table: str, day: date) -> list[dict]:
    from deltalake import DeltaTable

    return DeltaTable(catalog.spec(table).path).to_pyarrow_table(filters=[("dt", "=", day)]).to_pylist()


def _members(catalog, day: date) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in _rows(catalog, "gold.segment_members", day):
        found.setdefault(row["segment"], []).append(row["user_id"])
    return {segment: sorted(users) for segment, users in found.items()}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("segments")
    catalog = Catalog(str(root / "lake"), Conf())
    _write_lake(spark, catalog)
    results = {day: run_stage(RunContext(spark, catalog.lake, day, Conf()), "segments") for day in (D0, D)}
    return catalog, results, root


def test_segments_hold_exactly_the_expected_members(lake):
    catalog, results, _ = lake
    assert _members(catalog, D) == EXPECTED_ON_D
    # D-1: no threshold chosen, so 0.5: u01 (0.3) is not at risk yet; no office orders yet
    assert _members(catalog, D0) == {"vip_at_risk": ["u02"], "potential_users": ["u03", "u05"], "students_back_to_school": ["u06"]}
    assert results[D].notes["thresholds"]["retention"] == {"value": 0.4, "from": "ops.threshold_curve"}
    assert results[D0].notes["thresholds"]["retention"] == {"value": 0.5, "from": "conf"}
    rules = {day: {r["segment"]: r["rule"] for r in _rows(catalog, "gold.segment_bitmaps", day)} for day in (D0, D)}
    assert rules[D]["vip_at_risk"] == "((`vip_tier` IN ('vip', 'super_vip')) AND (`churn_probability` >= 0.4))"
    assert rules[D0]["vip_at_risk"].endswith("(`churn_probability` >= 0.5))")


def test_bitmaps_count_the_members_and_indices_are_stable(lake):
    catalog, _, _ = lake
    assert bitmaps.counts(catalog, D) == {name: len(EXPECTED_ON_D.get(name, [])) for name in bitmaps.counts(catalog, D)}
    assert set(bitmaps.counts(catalog, D)) == set(EXPECTED_ON_D)
    from deltalake import DeltaTable

    index = {r["user_id"]: r for r in DeltaTable(catalog.spec("gold.user_index").path).to_pyarrow_table().to_pylist()}
    assert sorted(index) == sorted(PROFILES)
    assert sorted(r["user_index"] for r in index.values()) == list(range(len(PROFILES)))
    assert index["u14"]["first_dt"] == D and index["u14"]["user_index"] == len(PROFILES) - 1  # new on D: after D-1's users
    stored = bitmaps.stored_bitmaps(catalog, D, "group_order_candidates")["group_order_candidates"]
    assert sorted(stored) == sorted(index[u]["user_index"] for u in COLLEAGUES)


def test_transitions_between_the_two_dates(lake):
    catalog, _, _ = lake
    moves = {(r["tag"], r["from_value"], r["to_value"]): r["users"] for r in _rows(catalog, "gold.tag_transitions", D)}
    assert moves[("lifecycle_stage", "new", "old")] == 1  # u06
    assert moves[("lifecycle_stage", "potential", "new")] == 1  # u03
    assert moves[("lifecycle_stage", "absent", "potential")] == 1  # u14
    assert moves[("segment:vip_at_risk", "out", "in")] == 1  # u01, VIP -> at risk
    assert moves[("segment:vip_at_risk", "in", "in")] == 1  # u02
    assert moves[("segment:group_order_candidates", "absent", "out")] == 1  # u14
    assert sum(n for (tag, _, _), n in moves.items() if tag == "vip_tier") == len(PROFILES)
    first = {(r["tag"], r["from_value"], r["to_value"]) for r in _rows(catalog, "gold.tag_transitions", D0)}
    assert {f for f in first if f[0] == "lifecycle_stage"} == {("lifecycle_stage", "absent", v) for v in ("new", "old", "potential")}


def test_distributions_per_segment(lake):
    catalog, _, _ = lake
    rows = {(r["segment"], r["tag"], r["value"]): (r["users"], r["share"]) for r in _rows(catalog, "gold.segment_analysis", D)}
    assert rows[("vip_at_risk", "vip_tier", "vip")] == (1, 0.5)
    assert rows[("vip_at_risk", "churn_band", "0.2-0.5")] == (1, 0.5) and rows[("vip_at_risk", "churn_band", ">=0.8")] == (1, 0.5)
    assert rows[("all_users", "churn_band", "unknown")][0] == len(PROFILES) - 3
    assert rows[("all_users", "lifecycle_stage", "old")] == (10, pytest.approx(10 / 14))


def test_cli_serves_counts_exports_and_report_without_spark(lake, capsys):
    catalog, _, root = lake
    assert main(["segment", "count", "group_order_candidates", "--date", str(D), "--lake", catalog.lake]) == 0
    assert capsys.readouterr().out.strip() == "5"
    assert main(["segment", "list", "--lake", catalog.lake]) == 0  # newest date by default
    listed = capsys.readouterr().out
    assert f"segments on {D}" in listed and "potential_users" in listed and "Registered users" in listed
    out = root / "students.jsonl"
    assert main(["segment", "export", "potential_users", "--date", str(D), "--out", str(out), "--lake", catalog.lake]) == 0
    assert [json.loads(line)["user_id"] for line in out.read_text().splitlines()] == ["u05", "u14"]
    assert main(["segment", "export", "new_user_no_repeat", "--date", str(D), "--lake", catalog.lake]) == 0
    assert capsys.readouterr().out.splitlines() == ["user_id", "u03"]
    assert main(["segment", "count", "vip_at_rsk", "--lake", catalog.lake]) == 1
    error = capsys.readouterr().err
    assert "unknown segment 'vip_at_rsk' (did you mean 'vip_at_risk'?); declared segments: vip_at_risk, new_user_no_repeat" in error
    assert main(["segment", "report", "--date", str(D), "--lake", catalog.lake]) == 0
    assert (Path(catalog.lake) / "ops" / "reports" / f"segments_{D}.png").stat().st_size > 10_000
    assert "entered" in capsys.readouterr().out


@pytest.mark.parametrize(
    "rule, users",
    [
        ("vip_tier == 'vip'", 1),  # u01
        ("lifecycle_stage in ('new', 'old')", 12),
        ("not vip", 1),  # u03: a null tier is unknown, so neither vip nor not vip (as in SQL)
        ("vip or lifecycle_stage == 'potential'", 4),  # u01 u02 u05 u14
        ("likely_to_churn and not vip", 1),  # u03 (0.95, regular)
        ("lifecycle_stage != 'old' and churn_band == 'unknown'", 3),  # u04 u05 u14
    ],
)
def test_ad_hoc_counts_from_tag_value_bitmaps(lake, capsys, rule, users):
    catalog, _, _ = lake
    assert main(["segment", "count", "--where", rule, "--date", str(D), "--lake", catalog.lake]) == 0
    assert capsys.readouterr().out.strip() == str(users)


def test_ad_hoc_count_errors_name_the_fault(lake, capsys):
    catalog, _, _ = lake
    assert main(["segment", "count", "--where", "vip_teir == 'vip'", "--lake", catalog.lake]) == 1
    assert "unknown tag 'vip_teir' (did you mean 'vip_tier'?)" in capsys.readouterr().err
    assert main(["segment", "count", "--where", "vip_tier == lifecycle_stage", "--lake", catalog.lake]) == 1
    assert "compare vip_tier with a quoted value" in capsys.readouterr().err


def test_rerun_of_d_replaces_only_d(lake, spark):
    catalog, _, _ = lake
    from deltalake import DeltaTable

    def index():
        return sorted(DeltaTable(catalog.spec("gold.user_index").path).to_pyarrow_table().to_pylist(), key=lambda r: r["user_id"])

    before = {day: _rows(catalog, "gold.segment_bitmaps", day) for day in (D0, D)}
    index_before = index()
    run_stage(RunContext(spark, catalog.lake, D, Conf()), "segments")
    assert _rows(catalog, "gold.segment_bitmaps", D0) == before[D0]
    assert sorted(_rows(catalog, "gold.segment_bitmaps", D), key=lambda r: r["segment"]) == sorted(before[D], key=lambda r: r["segment"])
    assert _members(catalog, D) == EXPECTED_ON_D
    assert index() == index_before  # every user already has an index: none is given again or changed


@pytest.fixture
def broken_conf(tmp_path):
    conf_dir = tmp_path / "conf"
    shutil.copytree(Conf().dir, conf_dir)
    path = conf_dir / "segments.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace('rule: "vip and likely_to_churn"', 'rule: "vip and likely_to_chrun"'), encoding="utf-8"
    )
    return conf_dir


def test_an_invalid_rule_stops_the_stage_and_the_cli(lake, spark, broken_conf, capsys):
    catalog, _, _ = lake
    versions = catalog.version("gold.segment_bitmaps")
    with pytest.raises(  # refused when the run's conf is validated, before any table is touched
        ConfError, match="segment vip_at_risk: unknown tag 'likely_to_chrun' \\(did you mean 'likely_to_churn'\\?\\)"
    ):
        run_stage(RunContext(spark, catalog.lake, D, Conf(broken_conf)), "segments")
    assert catalog.version("gold.segment_bitmaps") == versions
    assert main(["segment", "count", "vip_at_risk", "--lake", catalog.lake, "--conf", str(broken_conf)]) == 1
    assert "SegmentRuleError: segment vip_at_risk: unknown tag 'likely_to_chrun'" in capsys.readouterr().err


def test_gate_refuses_bitmaps_that_disagree_with_members(lake, spark):
    from portrait import gates
    from portrait.segments.bitmaps import serialise

    catalog, _, _ = lake
    spec = catalog.spec("gold.segment_bitmaps")
    rows = [("ok", 2, 2, "TRUE", bytearray(serialise([1, 2])), D), ("lost", 3, 2, "TRUE", bytearray(serialise([1, 2])), D)]
    report = gates.run_gate(spark, spec.name, spark.createDataFrame(rows, spec.ddl), D, catalog.conf, gate_name="segments")
    assert [r.column for r in report.failures()] == ["counts_reconcile_with_bitmap"]
    assert "lost" in report.failures()[0].observed
    members = spark.createDataFrame(
        [("potential_users", "u05", D), ("potential_users", "nobody", D)], catalog.spec("gold.segment_members").ddl
    )
    report = gates.run_gate(spark, "gold.segment_members", members, D, catalog.conf, gate_name="segments", lake=catalog.lake)
    assert [r.column for r in report.failures()] == ["members_are_users_of_the_snapshot"]
    assert "nobody" in report.failures()[0].observed and "u05" not in report.failures()[0].observed


def test_a_segment_not_built_on_the_previous_day_moves_from_unknown(spark):
    from portrait.segments.audiences import transitions
    from portrait.segments.rules import SegmentBook

    book = SegmentBook.compile(
        {"segments": {"s": {"rule": "vip_tier == 'vip'"}}, "analysis": {"transition_tags": ["vip_tier"]}}, {"vip_tier"}
    )
    before = spark.createDataFrame([("u1", "regular"), ("u2", "vip")], "user_id string, vip_tier string")
    after = spark.createDataFrame([("u1", "vip"), ("u2", "vip")], "user_id string, vip_tier string")
    members = spark.createDataFrame([("s", "u1"), ("s", "u2")], "segment string, user_id string")
    no_members = spark.createDataFrame([], "segment string, user_id string")

    def moves(built):
        rows = transitions(before, after, no_members, members, book, D, built).collect()
        return {(r["tag"], r["from_value"], r["to_value"]): r["users"] for r in rows}

    assert moves(set()) == {("vip_tier", "regular", "vip"): 1, ("vip_tier", "vip", "vip"): 1, ("segment:s", "unknown", "in"): 2}
    assert moves({"s"})[("segment:s", "out", "in")] == 2
