"""Tag monitoring: coverage, distribution and day-over-day change per tag, and the gate that flags jumps."""

from __future__ import annotations

import shutil
from datetime import date

import pytest

from portrait.core.config import Conf, ConfError
from portrait.core.pipeline import RunContext, run_stage
from portrait.core.tables import Catalog
from portrait.gates import GateFailed
from portrait.master import monitoring
from portrait.master.monitoring import TagFigures, distribution_change
from profile_rows import CONF, row, write
from repo import REPO_ROOT

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)
USERS = [f"u{n}" for n in range(10)]


def snapshot_rows(dt: date, churn_scored: int, vip: int) -> list[dict]:
    """Ten users: the first ``churn_scored`` have a churn probability, the first ``vip`` are VIP."""
    return [
        row(
            "gold.profile_snapshot",
            u,
            dt,
            churn_probability=0.2 if n < churn_scored else None,
            vip_tier="vip" if n < vip else "regular",
            spend_30d=100.0 + n,
            product_lines=[],
        )
        for n, u in enumerate(USERS)
    ]


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """D1: one user churn-scored, none VIP; D2: all scored (a coverage jump), six VIP (a distribution jump)."""
    lake = str(tmp_path_factory.mktemp("monitoring") / "lake")
    write(spark, lake, "gold.profile_snapshot", snapshot_rows(D1, churn_scored=1, vip=0), D1)
    write(spark, lake, "gold.profile_snapshot", snapshot_rows(D2, churn_scored=10, vip=6), D2)
    for dt in (D1, D2):
        run_stage(RunContext(spark, lake, dt, CONF), "monitor")
    return lake


def monitored(spark, lake: str, dt: date) -> dict:
    rows = Catalog(lake, CONF).read(spark, monitoring.TABLE).where(f"dt = DATE'{dt}'").collect()
    return {r["tag"]: r.asDict(recursive=True) for r in rows}


def test_every_tag_is_summarised_with_its_change_from_the_previous_date(spark, lake):
    first, second = monitored(spark, lake, D1), monitored(spark, lake, D2)
    assert set(second) == set(Catalog(lake, CONF).spec("gold.profile_snapshot").columns) - {"user_id", "name", "dt"}
    assert first["churn_probability"]["previous_dt"] is None and first["churn_probability"]["coverage_change"] is None
    churn = second["churn_probability"]
    assert (churn["kind"], churn["users"], churn["previous_dt"]) == ("number", 10, D1)
    assert churn["coverage"] == 1.0 and churn["coverage_change"] == pytest.approx(0.9)
    assert (churn["coverage_limit"], churn["distribution_limit"]) == (0.10, 1.0)  # the per-tag limit of conf/monitoring.yaml
    spend = second["spend_30d"]
    assert spend["mean"] == pytest.approx(104.5) and spend["p50"] == pytest.approx(104.5, abs=0.6) and spend["distribution_change"] == 0.0
    vip = second["vip_tier"]
    assert vip["kind"] == "category" and vip["top_values"] == [{"value": "vip", "share": 0.6}, {"value": "regular", "share": 0.4}]
    assert vip["distribution_change"] == pytest.approx(0.6)
    assert (second["product_lines"]["kind"], second["product_lines"]["coverage"]) == ("size", 0.0)


def test_the_gate_flags_the_jumps_as_warnings_by_default(spark, lake):
    results = Catalog(lake, CONF).read(spark, "ops.gate_results").where(f"dt = DATE'{D2}' AND gate = 'monitor' AND NOT success").collect()
    flagged = {r["column_name"]: r["observed"] for r in results}
    assert set(flagged) == {"coverage_change_within_limit", "distribution_change_within_limit"}
    assert "[warning]" in flagged["coverage_change_within_limit"] and "tag=churn_probability" in flagged["coverage_change_within_limit"]
    assert "tag=vip_tier" in flagged["distribution_change_within_limit"]


def test_a_critical_jump_fails_the_stage_and_publishes_nothing(spark, lake, tmp_path):
    conf_dir = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf_dir)
    settings = conf_dir / "monitoring.yaml"
    settings.write_text(settings.read_text(encoding="utf-8").replace("severity: warning", "severity: critical"), encoding="utf-8")
    catalog = Catalog(lake, CONF)
    version, before = catalog.version(monitoring.TABLE), monitored(spark, lake, D2)
    with pytest.raises(GateFailed, match="coverage_change_within_limit"):
        run_stage(RunContext(spark, lake, D2, Conf(conf_dir)), "monitor")
    assert catalog.version(monitoring.TABLE) == version and monitored(spark, lake, D2) == before


def test_rerunning_a_date_gives_the_same_rows(spark, lake):
    before = monitored(spark, lake, D2)
    run_stage(RunContext(spark, lake, D2, CONF), "monitor")
    assert monitored(spark, lake, D2) == before


def test_distribution_change_by_kind():
    before = TagFigures("number", 10, 1.0, mean=10.0, stddev=2.0)
    assert distribution_change(TagFigures("number", 10, 1.0, mean=13.0, stddev=2.0), before) == 1.5  # in standard deviations
    constant = TagFigures("number", 10, 1.0, mean=4.0, stddev=0.0)
    assert distribution_change(TagFigures("number", 10, 1.0, mean=5.0, stddev=0.0), constant) == 0.25  # relative to the mean
    shares = TagFigures("category", 10, 1.0, top_values=[("a", 0.5), ("b", 0.3)])  # 0.2 in other values
    assert distribution_change(TagFigures("category", 10, 1.0, top_values=[("a", 0.5), ("c", 0.5)]), shares) == pytest.approx(0.5)
    assert distribution_change(TagFigures("number", 10, 0.0), before) is None  # no values: nothing to compare


def test_a_limit_for_an_unknown_tag_is_refused():
    settings = {**monitoring.load_settings(CONF), "tags": {"churn_prob": {"coverage_change": 0.2}}}
    with pytest.raises(ConfError, match="churn_prob is not a monitored column"):
        monitoring.tag_kinds(Catalog(".", CONF).spec("gold.profile_snapshot").columns, settings)
