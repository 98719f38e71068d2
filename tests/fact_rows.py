"""Small hand-made inputs for the fact transforms (tests/test_facts_*.py).

Every test snapshot is taken on ``D``; ``ago(n)`` is the business date n days
before it, so a test reads like the window definitions in conf/tags.yaml.
"""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta

from portrait.core.config import Conf
from portrait.core.tables import Catalog
from portrait.tags.dictionary import TagDictionary

D = date(2026, 7, 31)
UTC_OFFSET_HOURS = 8  # Asia/Shanghai, no daylight saving


def ago(days: int) -> date:
    return D - timedelta(days=days)


def local_ts(day: date, hour: int = 12, minute: int = 0) -> datetime:
    """The UTC timestamp (as stored in silver) of ``hour:minute`` Shanghai time on business date ``day``."""
    return datetime(day.year, day.month, day.day, hour, minute) - timedelta(hours=UTC_OFFSET_HOURS)


def tag_dictionary(**threshold_overrides: dict) -> TagDictionary:
    """The repo's tag dictionary, with ``tag={key: value}`` thresholds replaced."""
    declarations = copy.deepcopy(Conf().load("tags"))
    for tag, thresholds in threshold_overrides.items():
        declarations["tags"][tag]["thresholds"].update(thresholds)
    return TagDictionary(declarations)


def users(spark, *user_ids: str):
    return spark.createDataFrame([(u, date(2026, 1, 1)) for u in user_ids], "user_id string, registered_dt date")


def by_user(df, key: str = "user_id") -> dict:
    """Rows of a result keyed by user (or by (user, line) with key=("user_id", "product_line"))."""
    if isinstance(key, str):
        return {row[key]: row.asDict(recursive=True) for row in df.collect()}
    return {tuple(row[k] for k in key): row.asDict(recursive=True) for row in df.collect()}


def check_declared_schema(df, table: str) -> None:
    """The transform's output is exactly what the writer will accept for ``table`` (names and types)."""
    Catalog(".", Conf()).spec(table).check_schema(df)
