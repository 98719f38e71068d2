"""``portrait bench``: the daily run at a given size, measured per stage.

Generates (or reuses) a landing zone of ``users`` x ``days``, cleans the history
before the last date (not timed: that is the lake a daily run finds), then runs
every stage for the last date and prints, per stage, wall seconds, rows in and
out, rows per second and the process's peak memory. The same figures go to a
JSON file so runs can be compared across commits and engines.
"""
from __future__ import annotations

import json
import platform
import resource
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

from portrait.lib.config import Conf


@dataclass
class StageFigures:
    stage: str
    seconds: float
    rows_in: int | None
    rows_out: int
    rows_per_second: float | None
    peak_rss_mb: float


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children (a JVM engine), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def rows_written(catalog, versions: dict[str, int]) -> int:
    """Rows the stage's published commits wrote, from the Delta log (no extra scan)."""
    from deltalake import DeltaTable

    total = 0
    for name, version in versions.items():
        commits = DeltaTable(catalog.spec(name).path).history(1)
        if commits and commits[0].get("version") == version:
            total += int(commits[0].get("operationMetrics", {}).get("numOutputRows", 0) or 0)
    return total


def ensure_landing(lake: Path, users: int, days: int, end: date, seed: int, progress=None) -> None:
    """Generate the landing zone unless one of the same size and seed is already there."""
    marker = lake / "landing" / "_generated.json"
    wanted = {"users": users, "days": days, "end": str(end), "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return
    from portrait.lib.generate import generate

    generate(lake, users=users, days=days, seed=seed, end_date=end, progress=progress)
    marker.write_text(json.dumps(wanted))


def bench(lake: str, users: int, days: int, end: date, seed: int, engine_name: str | None, conf: Conf, console=None) -> dict:
    from portrait.lib import engine
    from portrait.lib.pipeline import RunContext, run_stage, stage_names

    lake_path = Path(lake)
    started = time.perf_counter()
    ensure_landing(lake_path, users, days, end, seed)
    generate_seconds = time.perf_counter() - started
    spark = engine.get_spark(engine_name)
    history = [end - timedelta(days=n) for n in range(days - 1, 0, -1)]
    started = time.perf_counter()
    for dt in history:
        if not _already_cleaned(lake_path, conf, dt):
            run_stage(RunContext(spark, lake, dt, conf), "clean")
    history_seconds = time.perf_counter() - started

    figures = []
    for stage in stage_names():
        ctx = RunContext(spark, lake, end, conf)
        result = run_stage(ctx, stage)
        rows_in = sum(r["input_records"] for r in result.notes.get("reconciliation", [])) or result.notes.get("rows_in")
        rows_out = rows_written(ctx.catalog, result.versions)
        rate = round((rows_in or rows_out) / result.seconds, 1) if result.seconds else None
        figures.append(StageFigures(stage, round(result.seconds, 2), rows_in, rows_out, rate, peak_rss_mb()))
        if console:
            console.print(_row(figures[-1]), soft_wrap=True)
    total = round(sum(f.seconds for f in figures), 2)
    return {
        "users": users,
        "days": days,
        "date": str(end),
        "engine": engine.current_engine(),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "system": platform.platform()},
        "generate_seconds": round(generate_seconds, 1),
        "history_clean_seconds": round(history_seconds, 1),
        "stages": [asdict(f) for f in figures],
        "total_seconds": total,
        "peak_rss_mb": peak_rss_mb(),
    }


def _already_cleaned(lake: Path, conf: Conf, dt: date) -> bool:
    from deltalake import DeltaTable

    from portrait.lib.tables import Catalog

    catalog = Catalog(str(lake), conf)
    if not catalog.exists("ops.reconciliation"):
        return False
    done = DeltaTable(catalog.spec("ops.reconciliation").path).to_pyarrow_table(partitions=[("dt", "=", str(dt))])
    return done.num_rows > 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _row(f: StageFigures) -> str:
    rows_in = f"{f.rows_in:,}" if f.rows_in is not None else "-"
    rate = f"{f.rows_per_second:,.0f}" if f.rows_per_second else "-"
    return f"{f.stage:<16} {f.seconds:>8.2f}s  in {rows_in:>12}  out {f.rows_out:>12,}  {rate:>12} rows/s  peak {f.peak_rss_mb:>8,.0f} MiB"


def render(report: dict) -> str:
    lines = [f"portrait bench: {report['users']:,} users x {report['days']} days, date {report['date']}, engine {report['engine']}"]
    lines += [_row(StageFigures(**s)) for s in report["stages"]]
    lines.append(f"{'total':<16} {report['total_seconds']:>8.2f}s  peak {report['peak_rss_mb']:,.0f} MiB")
    return "\n".join(lines)
