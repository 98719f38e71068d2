"""The model registry on Delta: versions upserted, latest found, metrics per snapshot, artefacts on disk."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from portrait.core.config import Conf
from portrait.core.tables import Catalog
from portrait.models import registry
from portrait.models.bgnbd import BGNBDParams
from portrait.models.registry import ModelVersion


@pytest.fixture
def lake(tmp_path):
    return str(tmp_path / "lake")


def entry(lake: str, version: str, train_end: date, auc: float, hour: int = 1) -> ModelVersion:
    return ModelVersion(
        model="churn",
        version=version,
        trained_at=datetime(2026, 9, 30, hour, tzinfo=UTC),
        train_start=date(2026, 5, 1),
        train_end=train_end,
        params={"horizon_days": 30, "features": ["orders_10d"]},
        metrics={"auc": auc, "brier": float("nan")},
        artifact_path=str(registry.artifact_dir(lake, "churn", version)),
    )


def test_register_upserts_versions_and_finds_the_latest(spark, lake):
    catalog = Catalog(lake, Conf())
    assert registry.latest(spark, catalog, "churn") is None
    registry.register(spark, catalog, entry(lake, "20260801", date(2026, 8, 1), 0.81))
    registry.register(spark, catalog, entry(lake, "20260901", date(2026, 9, 1), 0.84))
    registry.register(spark, catalog, entry(lake, "20260901", date(2026, 9, 1), 0.86, hour=2))  # retrained: replaces
    rows = catalog.read(spark, registry.REGISTRY).orderBy("version").collect()
    assert [(r["version"], json.loads(r["metrics"])["auc"]) for r in rows] == [("20260801", 0.81), ("20260901", 0.86)]
    latest = registry.latest(spark, catalog, "churn")
    assert latest.version == "20260901" and latest.metrics == {"auc": 0.86, "brier": None}  # NaN stored as JSON null
    assert latest.params["features"] == ["orders_10d"] and latest.train_end == date(2026, 9, 1)
    assert registry.latest(spark, catalog, "gender") is None
    # a rerun of an older date never uses a later model
    assert registry.latest(spark, catalog, "churn", on_or_before=date(2026, 8, 31)).version == "20260801"
    assert registry.latest(spark, catalog, "churn", on_or_before=date(2026, 9, 1)).version == "20260901"
    assert registry.latest(spark, catalog, "churn", on_or_before=date(2026, 7, 31)) is None


def test_metrics_are_recorded_per_snapshot_and_replaced_on_rerun(spark, lake):
    catalog = Catalog(lake, Conf())
    registry.record_metrics(spark, catalog, "churn", "20260901", date(2026, 9, 29), {"auc": 0.84, "brier": 0.15})
    registry.record_metrics(spark, catalog, "churn", "20260901", date(2026, 9, 30), {"auc": 0.83, "brier": float("nan")})
    registry.record_metrics(spark, catalog, "churn", "20260901", date(2026, 9, 30), {"auc": 0.85, "brier": 0.14})
    rows = {(str(r["dt"]), r["metric"]): r["value"] for r in catalog.read(spark, registry.METRICS).collect()}
    assert rows == {("2026-09-29", "auc"): 0.84, ("2026-09-29", "brier"): 0.15, ("2026-09-30", "auc"): 0.85, ("2026-09-30", "brier"): 0.14}
    assert DeltaTable(catalog.spec(registry.METRICS).path).version() == 3  # created, then three upserts


def test_metric_nan_is_stored_as_null(spark, lake):
    catalog = Catalog(lake, Conf())
    registry.record_metrics(spark, catalog, "gender", "20260930", date(2026, 9, 30), {"auc": float("nan")})
    assert catalog.read(spark, registry.METRICS).collect()[0]["value"] is None


def test_artefacts_round_trip(lake):
    params = BGNBDParams(0.5, 10.0, 0.8, 3.0)
    folder = registry.save(lake, "bgnbd", "20260930", {"fitted": params.to_dict(), "log_likelihood": -12.5})
    assert folder == registry.artifact_dir(lake, "bgnbd", "20260930")
    assert BGNBDParams.from_dict(json.loads((Path(folder) / registry.PARAMS_FILE).read_text(encoding="utf-8"))["fitted"]) == params
    registry.save(lake, "churn", "20260930", {"note": "pickled"}, fitted={"any": "object", "nan": math.inf})
    assert registry.load_fitted(lake, "churn", "20260930") == {"any": "object", "nan": math.inf}
    assert registry.version_for(date(2026, 9, 30)) == "20260930"
