"""Hand-made rows of the profile tables (tests/test_master.py, tests/test_monitoring.py).

``row(table, user, dt, **values)`` is a row of any declared table: the given
values, the labels a job always sets (LABELS), and zeros / empty lists /
nulls by type for the rest.
"""

from __future__ import annotations

import shutil
from datetime import date

from portrait.core.config import Conf
from portrait.core.tables import Catalog

CONF = Conf()
#: Values a sub-profile job always sets (labels); every other column defaults by type.
LABELS = {
    "profile.consumption": {
        "lifecycle_stage": "old",
        "vip_tier": "regular",
        "orders_total": 2,
        "orders_30d": 2,
        "spend_30d": 80.0,
        "rfm_r": 3,
        "rfm_f": 3,
        "rfm_m": 3,
        "rfm_segment": "loyal",
    },
    "profile.behavior": {"activity_tag": "active", "logins_30d": 3},
    "profile.social": {"gender_reported": "F", "city": "上海"},
    "profile.model_tags": {"gender_reported": "F", "p_male": 0.1, "model_versions": {"gender": "20260901"}},
    "profile.product_line": {"line_intensity": "none", "line_status": "unused"},
}
DEFAULTS = {"bigint": 0, "int": 0, "double": 0.0}


def row(table: str, user_id: str, dt: date, **values) -> dict:
    spec = Catalog(".", CONF).spec(table)
    defaults = {c: [] if t.startswith("array") else {} if t.startswith("map") else DEFAULTS.get(t) for c, t in spec.columns.items()}
    return {**defaults, **LABELS.get(table, {}), "user_id": user_id, "dt": dt, **values}


def write(spark, lake: str, table: str, rows: list[dict], dt: date, conf: Conf = CONF) -> None:
    """Replace the ``dt`` partition of ``table`` with ``rows``.

    Through a scratch Delta copy: on Sail 0.7.2 a replaceWhere of a table with
    array columns fails for rows made by createDataFrame (list field 'element'
    vs 'item'); rows read from Delta - what the pipeline publishes - are fine.
    """
    catalog = Catalog(lake, conf)
    scratch = f"{lake}/_scratch/{table}"
    shutil.rmtree(scratch, ignore_errors=True)  # an overwrite keeps the old schema on Sail (a grown conf, tests/test_migrate.py)
    spark.createDataFrame(rows, catalog.spec(table).ddl).write.format("delta").mode("overwrite").save(scratch)
    catalog.write(spark, spark.read.format("delta").load(scratch), table, "partition", dt)
