"""Reading the raw landing zone: the one place that knows its file layout.

``{lake}/landing/{source}/dt=YYYY-MM-DD/*.jsonl``. Every line keeps the file it
came from and its line number, so a quarantined record can be found again.
"""

from __future__ import annotations

import warnings
from datetime import date
from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from portrait.core import storage

RAW_SCHEMA = "source_file string, line_no bigint, raw_line string"


def landing_dir(lake: str | Path, source: str, dt: date | str) -> str:
    return storage.join(str(lake), "landing", source, f"dt={dt}")


def landing_files(lake: str | Path, source: str, dt: date | str) -> list[str]:
    folder = landing_dir(lake, source, dt)
    return [storage.join(folder, name) for name in storage.list_dir(folder) if name.endswith(".jsonl")]


def read_raw_lines(spark, lake: str | Path, source: str, dt: date | str) -> DataFrame:
    """All non-blank lines of one source and landing date, with file and line number.

    Empty (never landed) sources give an empty DataFrame: a quiet day is not an error.
    """
    files = landing_files(lake, source, dt)
    if not files:
        return spark.createDataFrame([], RAW_SCHEMA)
    numbered = [_numbered_lines(spark, path) for path in files]
    return reduce(DataFrame.unionByName, numbered).where(F.trim("raw_line") != "")


def _numbered_lines(spark, path: str) -> DataFrame:
    # Line numbers run over the whole file, so the window has no partition on
    # purpose; pyspark's warning about that is noise here.
    warnings.filterwarnings("ignore", message=".*No Partition Defined for Window", category=UserWarning)
    order = Window.orderBy(F.monotonically_increasing_id())
    return spark.read.text(str(path)).select(
        F.lit(str(path)).alias("source_file"),
        F.row_number().over(order).cast("bigint").alias("line_no"),
        F.col("value").alias("raw_line"),
    )
