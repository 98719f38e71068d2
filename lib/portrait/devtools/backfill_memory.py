"""Resident memory of a backfill, date by date: does one long ``portrait run --date D1 --until D2`` grow?

``python -m portrait.devtools.backfill_memory --lake L --date D1 --until D2 [--to clean] [--at 10,30,90]``
runs the stages of every date in this process, as ``portrait run`` does, and
prints after each date the resident memory of the process and its children
(the embedded engine runs inside the process; a JVM engine would be a child)
and the Python heap (tracemalloc, when ``--trace``). The figures at the dates
named by ``--at`` are what issue 16 asks for (10, 30 and 90 dates); the JSON
line at the end is what a test or a script compares.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from datetime import date, timedelta

import psutil

MIB = 2**20


def rss_mb() -> float:
    """Resident memory of this process and its children, in MiB."""
    me = psutil.Process()
    total = 0
    for process in (me, *me.children(recursive=True)):
        try:
            total += process.memory_info().rss
        except psutil.Error:  # a child that just ended
            pass
    return round(total / MIB, 1)


def measure(lake: str, dates: list[date], stages: list[str], conf=None, engine_name: str | None = None, say=None) -> list[dict]:
    """Run ``stages`` for each of ``dates`` in this process; one row per date: date, seconds, RSS after it (MiB)."""
    from portrait.core import engine
    from portrait.core.config import Conf
    from portrait.core.pipeline import RunContext, run_stage

    conf = conf or Conf()
    spark = engine.get_spark(engine_name)
    rows = [{"dates": 0, "date": None, "seconds": 0.0, "rss_mb": rss_mb()}]
    for n, dt in enumerate(dates, start=1):
        started = time.perf_counter()
        for stage in stages:
            run_stage(RunContext(spark, lake, dt, conf), stage)
        gc.collect()
        rows.append({"dates": n, "date": str(dt), "seconds": round(time.perf_counter() - started, 2), "rss_mb": rss_mb()})
        if say:
            say(f"{n:>4} {dt} {rows[-1]['seconds']:>7.2f}s  rss {rows[-1]['rss_mb']:>8.1f} MiB")
    return rows


def growth_per_date(rows: list[dict], skip: int = 3) -> float:
    """MiB per date of the memory after the first ``skip`` dates (start-up, first imports and caches excluded): least squares slope."""
    points = [(r["dates"], r["rss_mb"]) for r in rows if r["dates"] > skip]
    if len(points) < 2:
        raise ValueError(f"need at least {skip + 2} dates to measure growth, got {len(rows) - 1}")
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


def main(argv: list[str] | None = None) -> int:
    from portrait.core.pipeline import stages_between

    parser = argparse.ArgumentParser(prog="python -m portrait.devtools.backfill_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--date", type=date.fromisoformat, required=True)
    parser.add_argument("--until", type=date.fromisoformat, required=True)
    parser.add_argument("--from", dest="from_stage", default=None)
    parser.add_argument("--to", dest="to_stage", default="clean")
    parser.add_argument("--at", default="10,30,90", help="dates after which to report RSS (comma separated)")
    parser.add_argument("--engine", default=None)
    args = parser.parse_args(argv)
    dates = [args.date + timedelta(days=n) for n in range((args.until - args.date).days + 1)]
    rows = measure(args.lake, dates, stages_between(args.from_stage, args.to_stage), engine_name=args.engine, say=print)
    at = {int(n) for n in args.at.split(",") if n}
    summary = {
        "start_rss_mb": rows[0]["rss_mb"],
        "rss_mb_after": {r["dates"]: r["rss_mb"] for r in rows if r["dates"] in at},
        "growth_mb_per_date": round(growth_per_date(rows), 1) if len(rows) > 5 else None,
        "peak_rss_mb": max(r["rss_mb"] for r in rows),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
