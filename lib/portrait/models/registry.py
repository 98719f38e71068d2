"""The model registry: versions, their training window, parameters and metrics, on Delta.

Every trained model gets a row in ``ops.model_registry`` and a folder
``{lake}/models/{model}/{version}/`` holding what scoring needs: ``params.json``
(always, human-readable) and ``model.pkl`` for models that are more than
parameters (the churn classifier). Evaluations go to ``ops.model_metrics``,
one row per metric and snapshot, so a model tag always names the version
that produced it and its quality can be followed day by day.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pyspark.sql import functions as F

from portrait.core import storage
from portrait.core.tables import Catalog

REGISTRY, METRICS = "ops.model_registry", "ops.model_metrics"
PARAMS_FILE, MODEL_FILE = "params.json", "model.pkl"


@dataclass(frozen=True)
class ModelVersion:
    """One registry row."""

    model: str
    version: str
    trained_at: datetime
    train_start: date
    train_end: date
    params: dict
    metrics: dict
    artifact_path: str


def version_for(train_end: date) -> str:
    """The default version name: the last training date, so retraining the same day replaces it."""
    return train_end.strftime("%Y%m%d")


def artifact_dir(lake: str, model: str, version: str) -> str:
    return storage.join(lake, "models", model, version)


def _json(values: dict) -> str:
    """JSON with NaN written as null (strict JSON readers reject NaN)."""

    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(values), ensure_ascii=False, sort_keys=True, default=str)


def save(lake: str, model: str, version: str, params: dict, fitted: object | None = None) -> str:
    """Write ``params.json`` (and ``model.pkl`` for a fitted object) for one version; returns the folder."""
    folder = artifact_dir(lake, model, version)
    storage.write_text(storage.join(folder, PARAMS_FILE), _json(params))
    if fitted is not None:
        storage.write_bytes(storage.join(folder, MODEL_FILE), pickle.dumps(fitted))
    return folder


def load_fitted(lake: str, model: str, version: str) -> object:
    """The pickled model of a version (only artefacts this lake wrote: unpickling runs code)."""
    return pickle.loads(storage.read_bytes(storage.join(artifact_dir(lake, model, version), MODEL_FILE)))


def register(spark, catalog: Catalog, entry: ModelVersion) -> int:
    """Upsert the version's registry row; returns the table's new Delta version."""
    return catalog.write(spark, spark.createDataFrame(registry_rows(entry), catalog.spec(REGISTRY).ddl), REGISTRY, "upsert")


def registry_rows(entry: ModelVersion) -> list[tuple]:
    """The registry row of ``entry``, in the declared column order (the models stage publishes it with its outputs)."""
    return [
        (
            entry.model,
            entry.version,
            entry.trained_at,
            entry.train_start,
            entry.train_end,
            _json(entry.params),
            _json(entry.metrics),
            entry.artifact_path,
        )
    ]


def record_metrics(spark, catalog: Catalog, model: str, version: str, dt: date, metrics: dict[str, float]) -> int:
    """Upsert one row per metric of a version's evaluation on snapshot ``dt`` (NaN kept as null)."""
    rows = metric_rows(model, version, dt, metrics)
    return catalog.write(spark, spark.createDataFrame(rows, catalog.spec(METRICS).ddl), METRICS, "upsert")


def metric_rows(model: str, version: str, dt: date, metrics: dict[str, float]) -> list[tuple]:
    """One ops.model_metrics row per metric (NaN kept as null), in the declared column order."""
    now = datetime.now(UTC)
    return [(model, version, dt, name, None if math.isnan(float(value)) else float(value), now) for name, value in sorted(metrics.items())]


def latest(spark, catalog: Catalog, model: str, on_or_before: date | None = None) -> ModelVersion | None:
    """The newest version of ``model``, or None if it was never trained.

    Versions are named by the run date that trained them (:func:`version_for`).
    With ``on_or_before``, only versions trained on or before that date count:
    a rerun of an old date never uses a later model.
    """
    rows = catalog.read(spark, REGISTRY).where(F.col("model") == model)
    if on_or_before is not None:
        rows = rows.where(F.col("version") <= version_for(on_or_before))
    row = rows.orderBy(F.col("version").desc(), F.col("trained_at").desc()).first()
    if row is None:
        return None
    values = row.asDict()
    return ModelVersion(**{**values, "params": json.loads(values["params"]), "metrics": json.loads(values["metrics"])})
