"""The master profile (用户画像): one flat row per user from one snapshot date's sub-profiles.

Pure: DataFrames in, a DataFrame with the columns of ``gold.profile`` out. The
sub-profiles stay the explanation of every tag (seed: 子画像作为中间结果并不会
被删除); the master only joins them, under the same column names, so a tag is
found under one name everywhere. Every user known on the date has exactly one
row; a section missing for a user (no row in its sub-profile) is left null
for the gate to refuse, never filled in here.

Which section gives which column is read from the declaration of
``gold.profile`` (conf/tables/gold.yaml ``columns_of:`` / ``array_of:``)
through :func:`layout`, the same list the catalog derives the table's columns
from: a tag of a section cannot be missing from the master.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from portrait.core.tables import Catalog

PROFILE = "gold.profile"


@dataclass(frozen=True)
class Layout:
    """Where each column of the master comes from."""

    columns: list[str]  # the declared order
    from_users: list[str]  # user_id and the plain columns read from silver.users (name)
    sections: dict[str, list[str]]  # table -> the columns it gives, flat, in order
    nested: dict[str, tuple[str, list[str]]]  # column -> (table, fields): that table's rows as an array of structs


def layout(catalog: Catalog, table: str = PROFILE) -> Layout:
    spec = catalog.spec(table)
    users, sections, nested = [], {}, {}
    for column, kind, source in catalog.column_sources(table):
        if source[:1] == ("table",):
            sections.setdefault(source[1], []).append(column)
        elif source[:1] == ("array_of",):
            fields = [field.split(":", 1)[0] for field in kind[len("array<struct<") : -2].split(",")]
            nested[column] = (source[1], fields)
        elif column not in spec.partition_by:
            users.append(column)
    return Layout(list(spec.columns), users, sections, nested)


def master_profile(users: DataFrame, sections: dict[str, DataFrame], nested: dict[str, DataFrame], dt: date, layout: Layout) -> DataFrame:
    """One row per user of ``users`` with every section's tags, the nested sections as arrays, dt = ``dt``.

    ``sections`` and ``nested`` map each table of ``layout.sections`` and of
    ``layout.nested``'s values to its rows of ``dt``.
    """
    profile = users.select(*layout.from_users)
    for table, columns in layout.sections.items():
        profile = profile.join(sections[table].select("user_id", *columns), "user_id", "left")
    for column, (table, fields) in layout.nested.items():
        entries = (
            nested[table]
            .groupBy("user_id")
            .agg(
                F.array_sort(F.collect_list(F.struct(*fields))).alias(column)  # ordered by the first field (product_line)
            )
        )
        profile = profile.join(entries, "user_id", "left")
    return profile.withColumn("dt", F.lit(dt).cast("date")).select(*layout.columns)
