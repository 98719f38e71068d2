"""The master profile (用户画像): one flat row per user from one snapshot date's sub-profiles.

Pure: DataFrames in, a DataFrame with the columns of ``gold.profile`` out. The
sub-profiles stay the explanation of every tag (seed: 子画像作为中间结果并不会
被删除); the master only joins them, under the same column names, so a tag is
found under one name everywhere. Every user known on the date has exactly one
row; a section missing for a user (no row in its sub-profile) is left null
for the gate to refuse, never filled in here.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

#: The sub-profiles whose columns the master carries flat, in column order.
SECTIONS = ("profile.consumption", "profile.behavior", "profile.interest", "profile.social", "profile.model_tags")
PRODUCT_LINES = "profile.product_line"
#: Reported in both social and model_tags (beside p_male); the master keeps social's.
GENDER_REPORTED = "gender_reported"


def master_profile(users: DataFrame, sections: dict[str, DataFrame], product_lines: DataFrame, dt: date, columns: list[str]) -> DataFrame:
    """One row per user of ``users`` with every section's tags, the product lines nested, dt = ``dt``.

    ``sections`` maps each table of SECTIONS to its rows of ``dt``; ``columns``
    is the declared column order of the master table.
    """
    profile = users.select("user_id", "name")
    for table in SECTIONS:
        rows = sections[table].drop("dt")
        if table != "profile.social":
            rows = rows.drop(GENDER_REPORTED)
        profile = profile.join(rows, "user_id", "left")
    line_columns = [c for c in product_lines.columns if c not in ("user_id", "dt")]
    lines = product_lines.groupBy("user_id").agg(
        F.array_sort(F.collect_list(F.struct(*line_columns))).alias("product_lines")  # ordered by product_line
    )
    return profile.join(lines, "user_id", "left").withColumn("dt", F.lit(dt).cast("date")).select(*columns)
