"""The daily aggregate layer (dws) gives every tag its exact value, as known on D, and reruns stay isolated.

One generated silver history (tests/daily_history.py: 200 users, 60 landing
days) is summed into the dws tables by the real aggregate stage, date by
date; then every sub-profile of every date is computed both ways - from the
dws tables (what the stages now do) and from raw silver rows with the
transforms as they were before the layer (tests/raw_subprofiles.py) - and
every tag of every user must be equal (floats within 1e-9).
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

import pytest
from pyspark.sql import functions as F

import raw_subprofiles
from daily_history import history
from jobs import aggregate
from portrait.core.config import Conf
from portrait.core.pipeline import RunContext, run_stage
from portrait.core.tables import Catalog
from portrait.subprofiles import snapshots
from portrait.subprofiles.daily import LANDINGS, TABLES
from test_subprofiles_job import KNOWN_ON_D, LANDED_ON_NEXT_DAY, NEXT, D, snapshot, write_silver

pytestmark = pytest.mark.slow  # 60 landing days summed by the real stage, every sub-profile of every date twice (about 2-3 minutes)

SUBPROFILES = tuple(snapshots.BUILDERS)
DAYS = int(os.environ.get("PORTRAIT_TEST_DWS_DAYS", 60))  # a shorter history while debugging
# Every STRIDE-th date is compared, counting back from the last (so the last, with
# the full 30- and 60-day windows, always is). Comparing all 60 dates costs about
# 10 engine minutes on two cores; `PORTRAIT_TEST_DWS_STRIDE=1` does it (run for
# the note), the default keeps `make test` inside its budget.
STRIDE = int(os.environ.get("PORTRAIT_TEST_DWS_STRIDE", 6))
TOLERANCE = 1e-9


def same(a, b, where: str) -> list[str]:
    """The differences between two collected values (rows as dicts, lists, floats within TOLERANCE)."""
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or not math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE):
            return [f"{where}: {a!r} != {b!r}"]
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: columns {sorted(a)} != {sorted(b)}"]
        return [d for key in a for d in same(a[key], b[key], f"{where}.{key}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {a!r} != {b!r}"]
        return [d for n, (x, y) in enumerate(zip(a, b, strict=True)) for d in same(x, y, f"{where}[{n}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def keyed(df, table: str) -> dict:
    key = ("user_id", "product_line") if table == "profile.product_line" else ("user_id",)
    rows = {tuple(row[k] for k in key): row.asDict(recursive=True) for row in df.collect()}
    return rows


@pytest.fixture(scope="module")
def generated_lake(spark, tmp_path_factory):
    """The generated silver history, with the aggregate stage run for each of its landing dates."""
    lake, conf = str(tmp_path_factory.mktemp("daily") / "lake"), Conf()
    catalog = Catalog(lake, conf)
    rows = history(users=200, days=DAYS)
    write_silver(spark, catalog, rows)
    end = max(row["landing_dt"] for row in rows["silver.events"])
    dates = [end - timedelta(days=n) for n in range(DAYS - 1, -1, -1)]
    for dt in dates:  # the aggregate stage's job and writes; its gates run in the rerun tests below (they take seconds a date)
        for output in aggregate.run(RunContext(spark, lake, dt, conf)):
            catalog.write(spark, output.df, output.table, output.mode, output.partition_value)
    return lake, conf, dates


@pytest.mark.slow
def test_every_tag_of_every_user_on_every_date_equals_the_raw_row_computation(spark, generated_lake):
    lake, conf, dates = generated_lake
    differences, compared = [], 0
    compared_dates = dates[::-1][::STRIDE]
    for dt in compared_dates:
        ctx = RunContext(spark, lake, dt, conf)
        for table in SUBPROFILES:
            from_days = keyed(snapshots.BUILDERS[table](ctx), table)
            from_raw = keyed(raw_subprofiles.BUILDERS[table](ctx), table)
            assert set(from_days) == set(from_raw), f"{table} on {dt}: other users"
            for key, row in from_raw.items():
                differences += same(from_days[key], row, f"{table} {dt} {'/'.join(key)}")
            compared += len(from_raw)
    assert not differences, f"{len(differences)} tag values differ, e.g.\n" + "\n".join(differences[:20])
    assert compared > 200 * len(compared_dates) * 4  # every sub-profile, every user known on each date


def test_past_snapshots_as_landed_later_equal_the_raw_row_computation(spark, generated_lake):
    """The models stage builds snapshot S as landed by a later D (RunContext.known_on): the same both ways too."""
    lake, conf, dates = generated_lake
    differences = []
    for snapshot_dt, known_on in ((dates[len(dates) // 3], dates[-1]), (dates[len(dates) // 2], dates[len(dates) // 2 + 2])):
        ctx = RunContext(spark, lake, snapshot_dt, conf, known_on=known_on)
        for table in SUBPROFILES:
            from_days, from_raw = keyed(snapshots.BUILDERS[table](ctx), table), keyed(raw_subprofiles.BUILDERS[table](ctx), table)
            assert set(from_days) == set(from_raw), f"{table} on {snapshot_dt} known on {known_on}: other users"
            differences += [
                d for key, row in from_raw.items() for d in same(from_days[key], row, f"{table} {snapshot_dt}/{known_on} {key}")
            ]
    assert not differences, "\n".join(differences[:20])


def test_the_history_exercises_what_as_known_on_d_is_about(spark, generated_lake):
    """The equality above means something: late rows, anonymous events stitched later, unbuilt days are there."""
    lake, conf, dates = generated_lake
    catalog = Catalog(lake, conf)
    events = catalog.read(spark, "silver.events")
    assert events.where(F.col("landing_dt") > F.col("dt")).count() > 50
    assert events.where(F.col("landing_dt") < F.col("dt")).count() > 5
    assert events.where(F.col("user_id").isNull()).count() > 200
    assert catalog.read(spark, "silver.orders").where("status = 'cancelled'").count() > 20
    assert catalog.read(spark, LANDINGS).count() == DAYS
    summed = catalog.read(spark, "dws.user_events_daily").agg(F.sum("events")).first()[0]
    assert summed == events.where(F.col("user_id").isNotNull()).count()


@pytest.fixture(scope="module")
def aggregated_runs(spark, tmp_path_factory):
    """tests/test_subprofiles_job.py's lake and runs (D; data landing on D+1; D+1; D again), with the aggregate stage first."""
    lake, conf = str(tmp_path_factory.mktemp("aggregated") / "lake"), Conf()
    catalog = Catalog(lake, conf)

    def run_all(dt):
        for stage in ("aggregate", *(table.split(".")[1] for table in SUBPROFILES)):
            run_stage(RunContext(spark, lake, dt, conf), stage)

    def dws(dt):
        return {table: snapshot_by_landing(spark, catalog, table, dt) for table in TABLES}

    write_silver(spark, catalog, KNOWN_ON_D)
    run_all(D)
    first = {table: snapshot(spark, catalog, table, D) for table in SUBPROFILES}
    dws_first = dws(D)
    write_silver(spark, catalog, LANDED_ON_NEXT_DAY)
    run_all(NEXT)
    after_next = {table: (snapshot(spark, catalog, table, D), snapshot(spark, catalog, table, NEXT)) for table in SUBPROFILES}
    dws_next = dws(NEXT)
    run_all(D)
    rerun = {table: (snapshot(spark, catalog, table, D), snapshot(spark, catalog, table, NEXT)) for table in SUBPROFILES}
    return catalog, first, after_next, rerun, dws_first, dws_next, (dws(D), dws(NEXT))


def snapshot_by_landing(spark, catalog, table, landing_dt):
    df = catalog.read(spark, table).where(F.col("landing_dt") == F.lit(landing_dt))
    return sorted((tuple(row) for row in df.collect()), key=repr)


def test_reruns_with_the_aggregate_layer_replace_only_their_date(aggregated_runs):
    _, first, after_next, rerun, dws_first, dws_next, (dws_d_again, dws_next_again) = aggregated_runs
    for table in SUBPROFILES:
        assert after_next[table][0] == first[table], f"{table}: running D+1 changed D's snapshot"
        assert rerun[table][0] == first[table], f"{table}: rerunning D changed D's snapshot"
        assert rerun[table][1] == after_next[table][1], f"{table}: rerunning D changed D+1's snapshot"
        assert after_next[table][1] != first[table], f"{table}: D+1's snapshot is a copy of D's"
    assert dws_d_again == dws_first, "rerunning the aggregate stage for D changed D's sums"
    assert dws_next_again == dws_next, "rerunning the aggregate stage for D changed D+1's sums"
    assert any(dws_next.values()) and any(dws_first.values())


def test_snapshots_from_the_aggregates_equal_those_from_silver_alone(spark, aggregated_runs, tmp_path):
    """The same lake without the aggregate stage (every landing date summed from silver at read time) gives the same rows."""
    catalog, first, after_next, *_ = aggregated_runs
    lake, conf = str(tmp_path / "lake"), Conf()
    plain = Catalog(lake, conf)
    write_silver(spark, plain, KNOWN_ON_D)
    write_silver(spark, plain, LANDED_ON_NEXT_DAY)
    for dt, expected in ((D, {t: first[t] for t in SUBPROFILES}), (NEXT, {t: after_next[t][1] for t in SUBPROFILES})):
        ctx = RunContext(spark, lake, dt, conf)
        for table in SUBPROFILES:
            built = snapshots.BUILDERS[table](ctx).select(*plain.spec(table).columns)
            rows = sorted((tuple(row) for row in built.collect()), key=repr)
            assert rows == expected[table], f"{table} on {dt}"
    assert not plain.exists(LANDINGS)
