"""The one writer: its three modes, schema refusal, and the Sail hazards it guards against."""

from __future__ import annotations

import re
from datetime import date

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from portrait.core import maintenance
from portrait.core.tables import Catalog, SchemaMismatch, WriteRefused, upserted

TOY = {
    "test.visits": {
        "description": "toy partitioned fact table",
        "partition_by": ["dt"],
        "key": ["visit_id"],
        "columns": {"visit_id": "string", "user_id": "string", "amount": "double", "dt": "date"},
    },
    "test.people": {
        "description": "toy latest-state table",
        "partition_by": [],
        "key": ["user_id"],
        "newer_by": "updated_at",
        "columns": {"user_id": "string", "name": "string", "updated_at": "timestamp"},
    },
}


@pytest.fixture
def catalog(tmp_path):
    return Catalog(str(tmp_path / "lake"), declarations=TOY)


def visits(spark, rows):
    df = spark.createDataFrame(rows, "visit_id string, user_id string, amount double, dt string")
    return df.withColumn("dt", F.to_date("dt"))


def people(spark, rows):
    df = spark.createDataFrame(rows, "user_id string, name string, updated_at string")
    return df.withColumn("updated_at", F.to_timestamp("updated_at"))


def rows_of(catalog, spark, name):
    return sorted(tuple(r) for r in catalog.read(spark, name).collect())


def test_append_adds_rows_and_creates_partitioned_table(spark, catalog):
    catalog.write(spark, visits(spark, [("v1", "u1", 10.0, "2026-07-01")]), "test.visits", "append")
    catalog.write(spark, visits(spark, [("v2", "u2", 20.0, "2026-07-02")]), "test.visits", "append")
    assert [r[0] for r in rows_of(catalog, spark, "test.visits")] == ["v1", "v2"]
    assert DeltaTable(catalog.spec("test.visits").path).metadata().partition_columns == ["dt"]


def test_a_catalog_notes_what_it_read_and_counts_rows_from_the_log(spark, catalog):
    catalog.write(spark, visits(spark, [("v1", "u1", 10.0, "2026-07-01"), ("v2", "u2", 20.0, "2026-07-02")]), "test.visits", "append")
    catalog.write(spark, visits(spark, [("v3", "u3", 30.0, "2026-07-02")]), "test.visits", "partition", "2026-07-02")
    reading = Catalog(catalog.lake, declarations=TOY, tables_read={})
    reading.read(spark, "test.visits", version=1)
    reading.read(spark, "test.people")  # never written: read as empty, counted as 0 rows
    assert reading.tables_read == {"test.visits": 1, "test.people": None}
    assert [reading.rows_stored(name, version) for name, version in reading.tables_read.items()] == [2, 0]
    assert reading.rows_stored("test.visits") == 2 and reading.rows_written("test.visits", 2) == 1


def test_rerunning_one_date_leaves_every_other_date_unchanged(spark, catalog):
    """Sail ignores dynamic partition overwrite (a plain overwrite replaces the whole table)."""
    for day in ("2026-07-01", "2026-07-02", "2026-07-03"):
        catalog.write(spark, visits(spark, [(f"v-{day}", "u1", 1.0, day)]), "test.visits", "partition", day)
    before = [r for r in rows_of(catalog, spark, "test.visits") if str(r[3]) != "2026-07-02"]
    catalog.write(
        spark,
        visits(spark, [("redo-a", "u9", 5.0, "2026-07-02"), ("redo-b", "u9", 6.0, "2026-07-02")]),
        "test.visits",
        "partition",
        "2026-07-02",
    )
    after = rows_of(catalog, spark, "test.visits")
    assert [r for r in after if str(r[3]) != "2026-07-02"] == before
    assert sorted(r[0] for r in after if str(r[3]) == "2026-07-02") == ["redo-a", "redo-b"]


def test_rerun_with_same_rows_is_idempotent(spark, catalog):
    data = [("v1", "u1", 1.0, "2026-07-01"), ("v2", "u2", 2.0, "2026-07-01")]
    catalog.write(spark, visits(spark, data), "test.visits", "partition", date(2026, 7, 1))
    first = rows_of(catalog, spark, "test.visits")
    catalog.write(spark, visits(spark, data), "test.visits", "partition", date(2026, 7, 1))
    assert rows_of(catalog, spark, "test.visits") == first


def test_partition_write_refuses_rows_of_another_date(spark, catalog):
    """Sail's replaceWhere accepts rows outside its predicate; the writer must not."""
    catalog.write(spark, visits(spark, [("keep", "u1", 1.0, "2026-07-01")]), "test.visits", "partition", "2026-07-01")
    version = catalog.version("test.visits")
    stray = visits(spark, [("ok", "u1", 1.0, "2026-07-02"), ("stray", "u1", 1.0, "2026-07-01")])
    with pytest.raises(WriteRefused, match=r"dt = 2026-07-01 in a write that replaces dt = 2026-07-02"):
        catalog.write(spark, stray, "test.visits", "partition", "2026-07-02")
    assert catalog.version("test.visits") == version
    assert [r[0] for r in rows_of(catalog, spark, "test.visits")] == ["keep"]


@pytest.mark.parametrize(
    "frame, message",
    [
        (lambda s: visits(s, [("v", "u", 1.0, "2026-07-01")]).drop("amount"), "column 'amount' is missing (declared double)"),
        (lambda s: visits(s, [("v", "u", 1.0, "2026-07-01")]).withColumn("coupon", F.lit(1.0)), "column 'coupon' is not declared"),
        (
            lambda s: visits(s, [("v", "u", 1.0, "2026-07-01")]).withColumn("amount", F.col("amount").cast("string")),
            "column 'amount' has type string, declared double",
        ),
    ],
    ids=["missing", "extra", "mistyped"],
)
def test_schema_drift_fails_loudly_and_writes_nothing(spark, catalog, frame, message):
    """Sail ignores mergeSchema and silently drops unknown columns; the writer refuses first."""
    catalog.write(spark, visits(spark, [("v0", "u0", 1.0, "2026-07-01")]), "test.visits", "append")
    version = catalog.version("test.visits")
    with pytest.raises(SchemaMismatch, match=re.escape(message)):
        catalog.write(spark, frame(spark), "test.visits", "append")
    assert catalog.version("test.visits") == version
    assert DeltaTable(catalog.spec("test.visits").path).schema().to_arrow().names == ["visit_id", "user_id", "amount", "dt"]


def test_a_column_declared_after_the_table_was_created_is_refused_not_dropped(spark, catalog, tmp_path):
    """Sail would silently drop the new column on append; the writer names it and writes nothing."""
    catalog.write(spark, visits(spark, [("v0", "u0", 1.0, "2026-07-01")]), "test.visits", "append")
    version = catalog.version("test.visits")
    grown = {**TOY, "test.visits": {**TOY["test.visits"], "columns": {**TOY["test.visits"]["columns"], "coupon": "double"}}}
    later = Catalog(catalog.lake, declarations=grown)
    rows = visits(spark, [("v1", "u1", 2.0, "2026-07-02")]).withColumn("coupon", F.lit(0.5))
    with pytest.raises(
        SchemaMismatch,
        match="test.visits at .* lacks declared column\\(s\\) coupon: add the missing column\\(s\\) with `portrait migrate --lake ",
    ):
        later.write(spark, rows, "test.visits", "append")
    assert catalog.version("test.visits") == version


def test_upsert_updates_matching_keys_inserts_new_and_never_rolls_back(spark, catalog):
    catalog.write(
        spark, people(spark, [("u1", "old", "2026-07-01 00:00:00"), ("u2", "two", "2026-07-01 00:00:00")]), "test.people", "upsert"
    )
    catalog.write(
        spark, people(spark, [("u1", "new", "2026-07-02 00:00:00"), ("u3", "three", "2026-07-02 00:00:00")]), "test.people", "upsert"
    )
    # a rerun of an older date must not overwrite the newer state
    catalog.write(spark, people(spark, [("u1", "old", "2026-07-01 00:00:00")]), "test.people", "upsert")
    assert [(r[0], r[1]) for r in rows_of(catalog, spark, "test.people")] == [("u1", "new"), ("u2", "two"), ("u3", "three")]


def test_upsert_refuses_repeated_keys(spark, catalog):
    twice = people(spark, [("u1", "a", "2026-07-01 00:00:00"), ("u1", "b", "2026-07-01 00:00:00")])
    with pytest.raises(WriteRefused, match=r"key \(`user_id`\) repeats.*u1"):
        catalog.write(spark, twice, "test.people", "upsert")


def test_undeclared_table_and_unknown_mode_are_refused(spark, catalog):
    with pytest.raises(KeyError, match="not declared"):
        catalog.write(spark, visits(spark, []), "test.nope", "append")
    with pytest.raises(ValueError, match="unknown write mode"):
        catalog.write(spark, visits(spark, []), "test.visits", "overwrite")


def test_reading_a_table_never_written_gives_its_declared_schema(spark, catalog):
    df = catalog.read(spark, "test.visits")
    assert df.columns == ["visit_id", "user_id", "amount", "dt"] and df.count() == 0


def test_deltalake_reads_what_the_engine_wrote_and_maintains_it(spark, catalog):
    for day in ("2026-07-01", "2026-07-02"):
        catalog.write(spark, visits(spark, [(f"v-{day}", "u1", 2.5, day)]), "test.visits", "partition", day)
    table = DeltaTable(catalog.spec("test.visits").path)
    frame = table.to_pandas().sort_values("visit_id")
    assert list(frame["visit_id"]) == ["v-2026-07-01", "v-2026-07-02"]
    assert list(frame["amount"]) == [2.5, 2.5]
    assert [c["operation"] for c in maintenance.history(catalog, "test.visits")][:1] == ["WRITE"]
    maintenance.compact(catalog, "test.visits")
    maintenance.vacuum(catalog, "test.visits", retention_hours=0)
    assert sorted(DeltaTable(catalog.spec("test.visits").path).to_pandas()["visit_id"]) == ["v-2026-07-01", "v-2026-07-02"]
    # time travel to the first write and a restore
    assert catalog.read(spark, "test.visits", version=1).count() == 1
    maintenance.restore(catalog, "test.visits", 1)
    assert [r[0] for r in rows_of(catalog, spark, "test.visits")] == ["v-2026-07-01"]


def test_upserted_is_what_merge_into_leaves(spark):
    existing = spark.createDataFrame(
        [
            ("a", 1.0, date(2026, 1, 2)),
            ("b", 2.0, date(2026, 1, 2)),
            ("d", 4.0, date(2026, 1, 1)),
            (None, 9.0, date(2026, 1, 1)),
            ("e", 3.0, None),
        ],
        "user_id string, score double, updated_on date",
    )
    updates = spark.createDataFrame(
        [
            ("a", 5.0, date(2026, 1, 1)),
            ("b", 6.0, date(2026, 1, 2)),
            ("c", 7.0, date(2026, 1, 3)),
            (None, 8.0, date(2026, 1, 3)),
            ("e", 5.0, date(2026, 1, 3)),
        ],
        "user_id string, score double, updated_on date",
    )
    newer = sorted(map(tuple, upserted(existing, updates, ("user_id",), "updated_on").collect()), key=str)
    # a: the update is older, kept; b: as new, taken; c: inserted; d: untouched; a null key never matches;
    # e: a stored null is never older (as in MERGE's condition)
    assert newer == sorted(
        [
            ("a", 1.0, date(2026, 1, 2)),
            ("b", 6.0, date(2026, 1, 2)),
            ("c", 7.0, date(2026, 1, 3)),
            ("d", 4.0, date(2026, 1, 1)),
            (None, 9.0, date(2026, 1, 1)),
            (None, 8.0, date(2026, 1, 3)),
            ("e", 3.0, None),
        ],
        key=str,
    )
    always = {r.user_id: r.score for r in upserted(existing, updates, ("user_id",), None).collect() if r.user_id}
    assert always == {"a": 5.0, "b": 6.0, "c": 7.0, "d": 4.0, "e": 5.0}


def test_a_partition_of_several_columns_is_replaced_alone(spark, tmp_path):
    """ops.gate_results: each gate replaces its own (dt, gate) partition; other gates' rows stay; strays are refused."""
    from datetime import datetime

    from portrait.core.config import Conf
    from portrait.core.tables import Catalog

    gate_results = Catalog(str(tmp_path), Conf())
    spec = gate_results.spec("ops.gate_results")
    assert spec.partition_by == ("dt", "gate") and spec.run_partition == "dt"
    day = date(2026, 7, 1)

    def rows(gate, expectation):
        return spark.createDataFrame([(gate, "t", expectation, "c", "x", True, datetime(2026, 7, 2), day)], spec.ddl)

    for gate in ("clean", "behavior"):
        gate_results.write(spark, rows(gate, "old"), "ops.gate_results", "partition", {"dt": day, "gate": gate})
    gate_results.write(spark, rows("clean", "new"), "ops.gate_results", "partition", {"dt": day, "gate": "clean"})
    stored = sorted((r["gate"], r["expectation"]) for r in gate_results.read(spark, "ops.gate_results").collect())
    assert stored == [("behavior", "old"), ("clean", "new")]
    with pytest.raises(
        WriteRefused, match=r"rows with dt/gate = 2026-07-01/behavior in a write that replaces dt = 2026-07-01, gate = clean"
    ):
        gate_results.write(spark, rows("behavior", "stray"), "ops.gate_results", "partition", {"dt": day, "gate": "clean"})
    with pytest.raises(WriteRefused, match="not among its partition_by"):
        gate_results.write(spark, rows("clean", "x"), "ops.gate_results", "partition", {"dt": day, "table_name": "t"})
