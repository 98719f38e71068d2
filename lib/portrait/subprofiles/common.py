"""Column helpers the sub-profiles share: windows of business days, ordered lists, zero fill.

A window counts back from the snapshot date ``D`` in business days, both ends
inclusive (conf/tags.yaml ``windows``). Transforms first add ``days_ago``
(``D - dt``) to their input with :func:`with_days_ago`, which also drops every
row outside the lookback they need - including rows dated after ``D``, so a
transform never looks ahead even if its caller passed later rows. Each tag is
then one conditional aggregate (:func:`count_in`, :func:`sum_in`) in a single
``groupBy``: one pass over the input per sub-profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

DAYS_AGO = "days_ago"


@dataclass(frozen=True)
class DayWindow:
    """Business days ``D - from_days_ago`` .. ``D - to_days_ago``, both inclusive."""

    name: str
    from_days_ago: int
    to_days_ago: int = 0
    description: str = ""

    def first_day(self, snapshot_dt: date) -> date:
        return snapshot_dt - timedelta(days=self.from_days_ago)

    def last_day(self, snapshot_dt: date) -> date:
        return snapshot_dt - timedelta(days=self.to_days_ago)

    def holds(self, days_ago: Column | None = None) -> Column:
        """True for rows whose ``days_ago`` falls in the window."""
        days_ago = F.col(DAYS_AGO) if days_ago is None else days_ago
        return days_ago.between(self.to_days_ago, self.from_days_ago)


def snapshot_date(snapshot_dt: date) -> Column:
    return F.lit(snapshot_dt).cast("date")


def days_between(snapshot_dt: date, day: Column | str) -> Column:
    """Whole days from ``day`` to the snapshot date (0 = the snapshot date itself)."""
    return F.datediff(snapshot_date(snapshot_dt), F.col(day) if isinstance(day, str) else day).cast("int")


def with_days_ago(df: DataFrame, snapshot_dt: date, lookback: DayWindow | None = None) -> DataFrame:
    """Rows of ``df`` whose business date ``dt`` lies in ``lookback`` (None: any day up to D), with ``days_ago``."""
    last = lookback.last_day(snapshot_dt) if lookback else snapshot_dt
    in_lookback = F.col("dt") <= F.lit(last).cast("date")
    if lookback:
        in_lookback = in_lookback & (F.col("dt") >= F.lit(lookback.first_day(snapshot_dt)).cast("date"))
    return df.where(in_lookback).withColumn(DAYS_AGO, days_between(snapshot_dt, "dt"))


def count_in(window: DayWindow, condition: Column | None = None) -> Column:
    """Rows in the window (and meeting ``condition``); 0 when none."""
    holds = window.holds() if condition is None else window.holds() & condition
    return F.count(F.when(holds, F.lit(1)))


def sum_in(window: DayWindow, value: str) -> Column:
    """Sum of column ``value`` over rows in the window; null when none (see :func:`zero_if_missing`)."""
    return F.sum(F.when(window.holds(), F.col(value)))


def ratio(numerator: Column | str, denominator: Column | str) -> Column:
    """numerator / denominator; null when the denominator is 0 or null."""
    numerator, denominator = (F.col(c) if isinstance(c, str) else c for c in (numerator, denominator))
    return F.when(denominator > 0, numerator / denominator)


def zero_if_missing(*columns: str) -> dict[str, Column]:
    """``{column: coalesce(column, 0)}`` for users without rows in an aggregate (left join)."""
    return {name: F.coalesce(F.col(name), F.lit(0)) for name in columns}


def sorted_by(array: Column | str, key: Callable[[Column], list[Column]]) -> Column:
    """``array`` sorted ascending by ``key(element)``, a list of columns compared in turn.

    Negate a number in the key to sort it descending. Built as transform ->
    sort_array -> transform: a comparator lambda (``array_sort(a, (x, y) -> ...)``)
    is about 40 times slower on Sail 0.7.2.
    """
    array = F.col(array) if isinstance(array, str) else array
    keyed = F.transform(array, lambda item: F.struct(*[k.alias(f"_key{i}") for i, k in enumerate(key(item))], item.alias("_item")))
    return F.transform(F.sort_array(keyed), lambda entry: entry["_item"])


def first_n(array: Column | str, n: int) -> Column:
    """The first ``n`` elements of ``array``.

    Not ``slice``: on Sail 0.7.2 it fails on arrays built with ``array(...)``
    ("Unsupported CAST ... to List(non-null Struct ...)"); ``filter`` by index works everywhere.
    """
    return F.filter(F.col(array) if isinstance(array, str) else array, lambda _, index: index < int(n))


def first_match(rules: list[tuple[Column, str]], default: str | None = None) -> Column:
    """CASE WHEN rule THEN label ... ELSE default END: the label of the first rule that holds."""
    chain = F
    for condition, label in rules:
        chain = chain.when(condition, F.lit(label))
    return chain.otherwise(F.lit(default).cast("string"))
