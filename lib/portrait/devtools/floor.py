"""The physical floor of a daily-run stage: its reads and writes done with pyarrow alone (no engine, no logic).

What a stage cannot go below on this machine: reading the bytes it must read
and writing the rows it writes. ``portrait bench`` measures it right after each
stage, on the same lake, and reports the stage as a multiple of it.

* reads: the day's landing files (the clean stage), parsed into one string
  column per line; and every published table the stage read, at the version it
  found, scanned whole with ``deltalake``'s pyarrow dataset (the bench's
  ``rows_in`` counts the same snapshots; a stage's own date filters may read
  fewer, so this floor is on the high side for the windowed stages).
* writes: as many rows as the stage produced per table (its staged rows), taken
  from what it published, written once as snappy Parquet files with pyarrow.

The rows to write are gathered before the clock starts; only reading and
writing are timed.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from portrait.core import storage


@dataclass
class Floor:
    read_seconds: float
    write_seconds: float
    bytes_read: int
    rows_read: int
    rows_written: int

    @property
    def seconds(self) -> float:
        return self.read_seconds + self.write_seconds


def table_versions(catalog) -> dict[str, int]:
    """{table: its current version} of every declared table that exists (what a stage about to run will find)."""
    return {name: catalog.version(name) for name in catalog.names() if catalog.exists(name)}


def _delta(catalog, name: str, version: int | None = None):
    from deltalake import DeltaTable

    spec = catalog.spec(name)
    return DeltaTable(spec.path, version=version, storage_options=storage.delta_options(spec.path))


def read_landing(lake: str, sources, dt: date) -> tuple[int, int]:
    """(bytes, lines) of the landing files of ``dt``, read and split into lines with pyarrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from portrait.clean.landing import landing_files

    size = lines = 0
    for source in sources:
        for path in landing_files(lake, source, dt):
            data = storage.read_bytes(path) if storage.is_remote(path) else Path(path).read_bytes()
            size += len(data)
            split = pc.split_pattern(pa.array([data.decode("utf-8", errors="replace")]), "\n")
            lines += int(pc.sum(pc.not_equal(pc.utf8_trim_whitespace(pc.list_flatten(split)), "")).as_py() or 0)
    return size, lines


def read_tables(catalog, versions: dict[str, int | None]) -> int:
    """Rows of every table of ``versions`` scanned at that version, batch by batch (nothing kept)."""
    rows = 0
    for name, version in versions.items():
        if not catalog.exists(name):
            continue
        for batch in _delta(catalog, name, version).to_pyarrow_dataset().to_batches():
            rows += batch.num_rows
    return rows


def rows_to_write(catalog, staged_rows: dict[str, int], dt: date) -> dict:
    """{table: a pyarrow table of as many rows as the stage staged}, from the published table (the run's partition first)."""
    import pyarrow.dataset as ds

    picked = {}
    for name, count in staged_rows.items():
        if not count or not catalog.exists(name):
            continue
        spec = catalog.spec(name)
        dataset = _delta(catalog, name).to_pyarrow_dataset()
        run_column = spec.run_partition
        wanted = None
        if run_column and run_column in dataset.schema.names and str(dataset.schema.field(run_column).type).startswith("date"):
            wanted = ds.field(run_column) == dt
        table = dataset.head(count, filter=wanted) if wanted is not None else dataset.head(count)
        if table.num_rows < count:  # fewer in the run's partition (an upsert, a table of another date): fill from the rest
            table = dataset.head(count)
        picked[name] = table
    return picked


def write_rows(tables: dict, directory: str) -> int:
    """Write each table once as Parquet under ``directory``; returns the rows written."""
    import pyarrow.parquet as pq

    rows = 0
    for name, table in tables.items():
        pq.write_table(table, str(Path(directory) / f"{name}.parquet"), compression="snappy")
        rows += table.num_rows
    return rows


def measure(catalog, stage: str, dt: date, versions_before: dict[str, int], tables_read: dict, staged_rows: dict, sources=()) -> Floor:
    """The floor of ``stage`` for ``dt``: its landing files (clean), the tables it read at the versions it found, its writes."""
    reads = {name: versions_before.get(name) if version is None else version for name, version in tables_read.items()}
    reads = {name: version for name, version in reads.items() if version is not None}  # a table that did not exist yet: nothing to read
    started = time.perf_counter()
    size, lines = read_landing(catalog.lake, sources, dt) if stage == "clean" else (0, 0)
    rows_read = lines + read_tables(catalog, reads)
    read_seconds = time.perf_counter() - started
    tables = rows_to_write(catalog, staged_rows, dt)
    scratch = tempfile.mkdtemp(prefix="portrait-floor-")
    try:
        started = time.perf_counter()
        rows_written = write_rows(tables, scratch)
        write_seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Floor(round(read_seconds, 3), round(write_seconds, 3), size, rows_read, rows_written)
