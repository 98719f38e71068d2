"""Tag monitoring: coverage and distribution of every tag per snapshot date, and the day-over-day change.

How a tag is summarised and what counts as a jump is declared in
conf/monitoring.yaml (read there for the definitions). ``summarise`` makes
two small aggregations over the snapshot (one wide pass for coverage and the
numeric summaries, one for the top values of category tags) and returns the
figures per date and tag, a few hundred numbers; ``compare`` turns those into
the rows of ops.tag_monitoring in plain Python. The gate on that table
(conf/gates/gold.yaml) flags the jumps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from portrait.core.config import Conf, ConfError

TABLE = "ops.tag_monitoring"
KINDS = ("number", "date", "size", "category")
#: Exact, interpolated percentiles (``percentile``): every engine gives the same figure, where each
#: ``percentile_approx`` approximates its own way (Sail and the JVM differed in p10/p90 on the same rows).
QUANTILES = {"p10": 0.1, "p50": 0.5, "p90": 0.9}
OTHER = "\x00other"  # the values beyond the top ones, as one value of the distance


def load_settings(conf: Conf) -> dict:
    settings = conf.load("monitoring")
    for key in ("not_tags", "top_values", "limits", "severity"):
        if key not in settings:
            raise ConfError(f"conf/monitoring.yaml: missing `{key}:`")
    unknown = set(settings["limits"]) - {"coverage_change", "distribution_change"}
    for limits in (settings.get("tags") or {}).values():
        unknown |= set(limits) - {"coverage_change", "distribution_change"}
    if unknown:
        raise ConfError(f"conf/monitoring.yaml: unknown limit {', '.join(sorted(unknown))} (limits: coverage_change, distribution_change)")
    return settings


def tag_kinds(columns: dict[str, str], settings: dict) -> dict[str, str]:
    """Each monitored column -> its kind, from its declared type; a per-tag limit for no column is refused."""
    kinds = {}
    for name, kind in columns.items():
        if name in settings["not_tags"]:
            continue
        kind = kind.replace(" ", "").lower()
        if kind.startswith(("array<", "map<")):
            kinds[name] = "size"
        elif kind in ("int", "bigint", "double", "float", "smallint"):
            kinds[name] = "number"
        elif kind == "date":
            kinds[name] = "date"
        else:
            kinds[name] = "category"
    unknown = sorted(set(settings.get("tags") or {}) - set(kinds))
    if unknown:
        raise ConfError(f"conf/monitoring.yaml tags: {', '.join(unknown)} is not a monitored column (columns: {', '.join(kinds)})")
    return kinds


@dataclass
class TagFigures:
    """One tag on one date."""

    kind: str
    users: int
    coverage: float
    mean: float | None = None
    stddev: float | None = None
    quantiles: dict = field(default_factory=dict)
    top_values: list = field(default_factory=list)  # [(value, share)], most frequent first


def _value(tag: str, kind: str):
    column = F.col(f"`{tag}`")
    if kind == "size":
        column = F.when(column.isNotNull(), F.size(column))
    elif kind == "date":
        column = F.datediff(F.col("dt"), column)
    return column.cast("double")


def _covered(tag: str, kind: str):
    column = F.col(f"`{tag}`")
    return (F.size(column) > 0) if kind == "size" else column.isNotNull()


def summarise(snapshots: DataFrame, kinds: dict[str, str], top_values: int) -> dict[date, dict[str, TagFigures]]:
    """The figures of every tag on every snapshot date in ``snapshots`` (one or two dates)."""
    measured = [t for t, k in kinds.items() if k != "category"]
    aggregates = [F.count(F.lit(1)).alias("_users")]
    for n, tag in enumerate(kinds):
        aggregates.append(F.avg(F.coalesce(_covered(tag, kinds[tag]), F.lit(False)).cast("int")).alias(f"c{n}"))
        if tag in measured:
            value = _value(tag, kinds[tag])
            aggregates += [F.avg(value).alias(f"m{n}"), F.stddev_pop(value).alias(f"s{n}")]
            aggregates += [F.percentile(value, q).alias(f"{name}_{n}") for name, q in QUANTILES.items()]
    figures: dict[date, dict[str, TagFigures]] = {}
    for row in snapshots.groupBy("dt").agg(*aggregates).collect():
        day = figures[row["dt"]] = {}
        for n, tag in enumerate(kinds):
            day[tag] = TagFigures(kinds[tag], row["_users"], row[f"c{n}"])
            if tag in measured:
                day[tag].mean, day[tag].stddev = row[f"m{n}"], row[f"s{n}"]
                day[tag].quantiles = {name: row[f"{name}_{n}"] for name in QUANTILES}
    categories = [t for t, k in kinds.items() if k == "category"]
    for row in _top_values(snapshots, categories, top_values).collect():
        figures[row["dt"]][row["tag"]].top_values.append((row["value"], row["count"] / row["total"]))
    return figures


def _top_values(snapshots: DataFrame, tags: list[str], top_values: int) -> DataFrame:
    """dt, tag, value, count, total (users with a value): the most frequent values of each category tag."""
    pairs = F.array(*[F.struct(F.lit(t).alias("tag"), F.col(f"`{t}`").cast("string").alias("value")) for t in tags])
    long = snapshots.select("dt", F.explode(pairs).alias("pair")).select("dt", "pair.tag", "pair.value").where(F.col("value").isNotNull())
    counts = long.groupBy("dt", "tag", "value").count()
    per_tag = Window.partitionBy("dt", "tag")
    ranked = counts.withColumn("total", F.sum("count").over(per_tag)).withColumn(
        "rank", F.row_number().over(per_tag.orderBy(F.desc("count"), "value"))
    )
    return ranked.where(F.col("rank") <= top_values).orderBy("dt", "tag", "rank")


def distribution_change(now: TagFigures, before: TagFigures) -> float | None:
    """How far a tag's distribution moved (see conf/monitoring.yaml); None when either side has no values."""
    if now.kind == "category":
        if not now.top_values or not before.top_values:
            return None
        shares_now, shares_before = _with_other(now.top_values), _with_other(before.top_values)
        return 0.5 * sum(abs(shares_now.get(v, 0.0) - shares_before.get(v, 0.0)) for v in set(shares_now) | set(shares_before))
    if now.mean is None or before.mean is None:
        return None
    scale = before.stddev if before.stddev else max(abs(before.mean), 1.0)
    return abs(now.mean - before.mean) / scale


def _with_other(top: list) -> dict[str, float]:
    shares = dict(top)
    shares[OTHER] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def compare(figures: dict[date, dict[str, TagFigures]], dt: date, previous: date | None, settings: dict) -> list[dict]:
    """The ops.tag_monitoring rows of ``dt``: its figures, the change from ``previous``, the limits that apply."""
    if dt not in figures:
        raise ValueError(f"gold.profile_snapshot has no rows for {dt}: run the master stage first")
    rows = []
    before_day = figures.get(previous, {}) if previous else {}
    for tag, now in figures[dt].items():
        limits = {**settings["limits"], **(settings.get("tags") or {}).get(tag, {})}
        before = before_day.get(tag)
        rows.append(
            {
                "tag": tag,
                "kind": now.kind,
                "users": now.users,
                "coverage": now.coverage,
                "mean": now.mean,
                "stddev": now.stddev,
                **{name: now.quantiles.get(name) for name in QUANTILES},
                "top_values": [{"value": v, "share": s} for v, s in now.top_values] if now.kind == "category" else None,
                "previous_dt": previous if before else None,
                "coverage_change": None if before is None else now.coverage - before.coverage,
                "distribution_change": None if before is None else distribution_change(now, before),
                "coverage_limit": float(limits["coverage_change"]),
                "distribution_limit": float(limits["distribution_change"]),
                "dt": dt,
            }
        )
    return rows
