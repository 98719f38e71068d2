"""Classic JVM Spark (``--engine spark``) writes Delta tables with delta-spark that Sail and delta-rs read.

The JVM runs in a child process (a classic and a Spark Connect session do not
share one Python process); this process reads what it wrote with Sail and
with ``deltalake``, so the lake is checked to be one lake for every engine.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import date

import pytest
from deltalake import DeltaTable

from portrait.core.tables import Catalog

TOY = {
    "test.visits": {
        "partition_by": ["dt"],
        "columns": {
            "user_id": "string",
            "visits": "bigint",
            "seen_at": "timestamp",
            "pages": "array<struct<page:string,seconds:double>>",
            "dt": "date",
        },
    },
    "test.people": {
        "key": ["user_id"],
        "newer_by": "updated_on",
        "columns": {"user_id": "string", "score": "double", "updated_on": "date"},
    },
}

pytestmark = pytest.mark.jvm  # JVM Spark in a child process

JVM_WRITES = """
from portrait.core import engine
from portrait.core.tables import Catalog
spark = engine.get_spark(engine="spark")
catalog = Catalog({lake!r}, declarations={toy!r})
print("extensions", spark.conf.get("spark.sql.extensions"))
first = spark.sql(
    "SELECT 'u1' user_id, 1L visits, TIMESTAMP'2026-01-01 10:00:00' seen_at, array(named_struct('page', 'home', 'seconds', 1.5D)) pages, DATE'2026-01-01' dt "
    "UNION ALL SELECT 'u2', 2L, TIMESTAMP'2026-01-02 11:00:00', array(named_struct('page', 'cart', 'seconds', 2.0D)), DATE'2026-01-02'")
catalog.write(spark, first, "test.visits", "append")
rerun = spark.sql(
    "SELECT 'u3' user_id, 3L visits, TIMESTAMP'2026-01-02 12:00:00' seen_at, "
    "CAST(array() AS array<struct<page:string,seconds:double>>) pages, DATE'2026-01-02' dt")
catalog.write(spark, rerun, "test.visits", "partition", "2026-01-02")
catalog.write(spark, spark.sql("SELECT 'a' user_id, 1.0D score, DATE'2026-01-02' updated_on UNION ALL SELECT 'b', 2.0D, DATE'2026-01-02'"), "test.people", "upsert")
catalog.write(spark, spark.sql(
    "SELECT 'a' user_id, 5.0D score, DATE'2026-01-01' updated_on UNION ALL SELECT 'b', 6.0D, DATE'2026-01-03' "
    "UNION ALL SELECT 'c', 7.0D, DATE'2026-01-03'"), "test.people", "upsert")
print("version_1", sorted(r.user_id for r in catalog.read(spark, "test.visits", version=1).collect()))
"""


def test_jvm_spark_writes_delta_tables_sail_and_deltalake_read(spark, tmp_path):
    lake = str(tmp_path / "lake")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JVM_WRITES.format(lake=lake, toy=TOY))],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "extensions io.delta.sql.DeltaSparkSessionExtension" in done.stdout
    assert "version_1 ['u1', 'u2']" in done.stdout  # time travel reads the log's older snapshot

    catalog = Catalog(lake, declarations=TOY)
    visits = sorted((r.user_id, r.visits, r.dt, [p.page for p in r.pages]) for r in catalog.read(spark, "test.visits").collect())
    assert visits == [("u1", 1, date(2026, 1, 1), ["home"]), ("u3", 3, date(2026, 1, 2), [])]  # 2026-01-02 replaced, 01-01 kept
    seen = {r.user_id: r.seen_at.isoformat() for r in catalog.read(spark, "test.visits").collect()}
    assert seen["u1"].startswith("2026-01-01T10:00:00")  # microsecond timestamps every reader agrees on
    people = sorted(tuple(r) for r in catalog.read(spark, "test.people").collect())
    assert people == [("a", 1.0, date(2026, 1, 2)), ("b", 6.0, date(2026, 1, 3)), ("c", 7.0, date(2026, 1, 3))]

    log = DeltaTable(catalog.spec("test.visits").path)
    assert log.metadata().partition_columns == ["dt"] and log.version() == 2
    assert sorted(log.to_pyarrow_table(columns=["user_id"])["user_id"].to_pylist()) == ["u1", "u3"]
    commit = log.history(1)[0]
    assert "Delta-Lake/" in commit["engineInfo"] and commit["engineInfo"].startswith("Apache-Spark/4.2")  # delta-spark wrote it
    assert int(commit["operationMetrics"]["numOutputRows"]) == 1  # what Catalog.rows_written reads (delta-spark logs text)
