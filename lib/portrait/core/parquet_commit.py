"""Delta tables for an engine without a Delta connector: Spark writes Parquet, delta-rs commits it.

Classic JVM Spark reads and writes Delta only with the delta-spark jars, which
come from Maven at start-up. Where Maven cannot be reached, the same tables
stay Delta tables all the same: reads take the Parquet files of the table's
snapshot from its log (``deltalake``), and writes let Spark write Parquet into
a temporary directory inside the table, move the files into their partition
directories and commit them with ``DeltaTable.create_write_transaction``. The
lake is the one every other engine reads; only who writes the log differs.

An upsert arrives as the whole merged table (``tables.upserted``) and is
committed as a whole-table overwrite: the old files stay on disk until
vacuum, so the plan that reads them is safe while the new files are written.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from itertools import repeat
from pathlib import Path
from urllib.parse import quote, unquote

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def native_delta(spark) -> bool:
    """Does this session read and write Delta itself (Sail, Spark Connect, JVM Spark with delta-spark)?"""
    if type(spark).__module__.startswith("pyspark.sql.connect"):
        return True
    return "DeltaSparkSessionExtension" in (spark.conf.get("spark.sql.extensions", "") or "")


def read(spark, spec, version: int | None = None):
    """The table's snapshot (latest, or ``version``) as a DataFrame in the declared schema.

    Partition values come from the log, not from directory names: a published
    staged copy's files sit under ``portrait-staged/...`` inside the table, where
    Spark's partition discovery would see conflicting directory structures.
    """
    import pyarrow as pa
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    table = DeltaTable(spec.path, version=version)
    actions = pa.table(table.get_add_actions(flatten=True))
    if not actions.num_rows:
        return spark.createDataFrame([], spec.ddl)
    data_ddl = ", ".join(f"`{c}` {t}" for c, t in spec.columns.items() if c not in spec.partition_by)
    groups: dict[tuple, list[str]] = {}
    values = zip(*(actions.column(f"partition.{c}").to_pylist() for c in spec.partition_by)) if spec.partition_by else repeat(())
    for path, key in zip(actions.column("path").to_pylist(), values):
        groups.setdefault(key, []).append(os.path.join(spec.path, unquote(path)))
    parts = []
    for key, files in groups.items():
        part = spark.read.schema(data_ddl).parquet(*files)
        for column, value in zip(spec.partition_by, key):
            part = part.withColumn(column, F.lit(value).cast(spec.columns[column]))
        parts.append(part.select(*[f"`{c}`" for c in spec.columns]))
    df = parts[0]
    for part in parts[1:]:
        df = df.unionByName(part)
    return df


def create(spark, spec) -> None:
    """Create the empty table with its declared schema and partitioning."""
    from deltalake import write_deltalake

    empty = spark.createDataFrame([], spec.ddl).toArrow()
    write_deltalake(spec.path, empty, mode="append", partition_by=list(spec.partition_by) or None)


def commit(df, spec, mode: str, replace_partition: list[tuple[str, str]] | None = None) -> None:
    """Write ``df`` as Parquet into the table and commit the files.

    ``mode`` is ``append`` or ``overwrite``; an overwrite replaces the partition
    given by ``replace_partition`` (``[(column, value), ...]``), or the whole table.
    """
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction, CommitProperties

    table_dir = Path(spec.path)
    scratch = table_dir / f"_portrait_write_{uuid.uuid4().hex}"  # "_" dirs are not part of a Delta table
    writer = df.write.mode("overwrite")
    if spec.partition_by:
        writer = writer.partitionBy(*spec.partition_by)
    try:
        writer.parquet(str(scratch))
        actions, rows = _move_into_table(scratch, table_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = DeltaTable(spec.path)
    filters = [(column, "=", value) for column, value in replace_partition] if replace_partition else None
    table.create_write_transaction(
        [AddAction(**action) for action in actions],
        mode,
        table.schema(),
        partition_by=list(spec.partition_by) or None,
        partition_filters=filters,
        commit_properties=CommitProperties(custom_metadata={"numOutputRows": rows}),
    )


def _move_into_table(scratch: Path, table_dir: Path) -> tuple[list[dict], int]:
    """Move the written files to their partition directories; their add actions and row count."""
    import pyarrow.parquet as pq

    actions, rows = [], 0
    for written in sorted(scratch.rglob("*.parquet")):
        relative = written.relative_to(scratch)
        target = table_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written, target)
        partition_values = {}
        for part in relative.parts[:-1]:
            column, _, value = part.partition("=")
            partition_values[unquote(column)] = None if value == HIVE_NULL else unquote(value)
        records = pq.read_metadata(target).num_rows
        rows += records
        stat = target.stat()
        actions.append(
            {
                "path": quote(relative.as_posix(), safe="/="),
                "size": stat.st_size,
                "partition_values": partition_values,
                "modification_time": int(stat.st_mtime * 1000),
                "data_change": True,
                "stats": json.dumps({"numRecords": records}),
            }
        )
    return actions, rows


def materialize(spark, df, path: str):
    """Write ``df`` to Parquet scratch at ``path`` and read it back (the schema kept when empty)."""
    df.write.mode("overwrite").parquet(path)
    return spark.read.schema(df.schema).parquet(path)
