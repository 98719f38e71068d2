"""``portrait bench``: the daily run at a given size, measured per stage.

Generates (or reuses) a landing zone of ``users`` x ``days``, cleans the history
before the last date (not timed: that is the lake a daily run finds), then runs
every stage for the last date and prints, per stage, wall seconds, rows in and
out, rows per second and the peak memory of the process and its children
while the stage ran. The same figures go to a JSON file so runs can be
compared across commits and engines.

The set-up runs in child processes (``portrait generate`` / ``portrait run``),
so the memory the measured run reports is its own, as in a fresh Airflow task
process. The churn model is retrained weekly (conf/models.yaml
churn.retrain_every_days), not daily: the set-up runs the models stage of the
day before, which trains it when one is due, and reports that time on its own
line, so the stage figures are those of an ordinary day.

The set-up always runs on the embedded engine (whatever PORTRAIT_ENGINE or
PORTRAIT_REMOTE say); ``--engine spark`` runs the measured day on JVM Spark
in this process, ``--remote sc://...`` on a Spark Connect server (a JVM
Connect cluster with Delta, a Sail server), over the same lake, so runs side
by side compare the engines on the same work. With a remote engine the
memory meter sees this client alone: the driver's own footprint. Rows out
are the rows each stage produced (its staged copy), whatever its publish
mode rewrites.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import psutil

from portrait.core import storage
from portrait.core.config import Conf


@dataclass
class StageFigures:
    stage: str
    seconds: float
    rows_in: int | None
    rows_out: int
    rows_per_second: float | None
    peak_rss_mb: float
    floor_seconds: float | None = None  # the same reads and writes with pyarrow alone (devtools.floor)
    times_floor: float | None = None  # seconds / floor_seconds


class MemoryMeter:
    """Samples the resident memory of this process and its children (a JVM engine) every ``interval`` seconds.

    ``ru_maxrss`` only ever grows and misses a child still running, so it cannot
    say what one stage needed; sampling can: ``reset()`` starts a new peak.
    """

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._process = psutil.Process()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        total = 0
        for process in (self._process, *self._process.children(recursive=True)):
            try:
                total += process.memory_info().rss
            except psutil.Error:  # a child that just ended
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> MemoryMeter:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self.peak = self.rss()

    @property
    def peak_mb(self) -> float:
        return round(max(self.peak, self.rss()) / 2**20, 1)


def _portrait(*args: str, lake: str, conf: Conf) -> None:
    """Run a ``portrait`` command in a child process (the set-up), failing with its last output lines.

    Its progress goes to this process's stderr, so a long set-up shows where it
    is while the figures on stdout stay clean.
    """
    from portrait.core import engine

    command = [sys.executable, "-m", "portrait.cli", *args, "--lake", lake, "--conf", str(conf.dir)]
    embedded = {k: v for k, v in os.environ.items() if k not in (engine.ENGINE_ENV, engine.REMOTE_ENV)}
    done = subprocess.run(command, stdout=sys.__stderr__.fileno(), stderr=subprocess.PIPE, text=True, env=embedded)
    if done.returncode != 0:
        raise RuntimeError(f"bench set-up `portrait {' '.join(args)}` failed: {done.stderr.strip()[-2000:]}")


def ensure_landing(lake: str, users: int, days: int, end: date, seed: int, conf: Conf) -> None:
    """Generate the landing zone unless one of the same size and seed is already there."""
    marker = storage.join(lake, "landing", "_generated.json")
    wanted = {"users": users, "days": days, "end": str(end), "seed": seed}
    if storage.is_file(marker) and storage.read_json(marker) == wanted:
        return
    _portrait("generate", "--users", str(users), "--days", str(days), "--end", str(end), "--seed", str(seed), lake=str(lake), conf=conf)
    storage.write_text(marker, json.dumps(wanted))


def bench(
    lake: str, users: int, days: int, end: date, seed: int, engine_name: str | None, conf: Conf, console=None, remote: str | None = None
) -> dict:
    from portrait.core import engine
    from portrait.core.pipeline import RunContext, run_stage, stage_names
    from portrait.core.tables import Catalog
    from portrait.devtools import floor

    def say(text: str) -> None:
        if console:
            console.print(text, soft_wrap=True)

    lake_path = str(lake)
    started = time.perf_counter()
    say(f"set-up: landing zone of {users:,} users x {days} days")
    ensure_landing(lake_path, users, days, end, seed, conf)
    generate_seconds = time.perf_counter() - started
    history = [end - timedelta(days=n) for n in range(days - 1, 0, -1)]
    cleaned = _cleaned_dates(lake_path, conf)
    missing = [dt for dt in history if dt not in cleaned]
    started = time.perf_counter()
    if missing:
        say(f"set-up: cleaning the history {missing[0]} .. {history[-1]}")
        _portrait("run", "--date", str(missing[0]), "--until", str(history[-1]), "--to", "aggregate", lake=lake, conf=conf)
    history_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if days > 1:
        say("set-up: the sub-profiles and models stage of the day before (it trains churn when a model is due)")
        day_before = str(end - timedelta(days=1))  # the models stage reads that day's published sub-profiles
        _portrait("run", "--date", day_before, "--from", "consumption", "--to", "models", lake=lake, conf=conf)
    day_before_models_seconds = time.perf_counter() - started

    figures = []
    with MemoryMeter() as meter:
        started = time.perf_counter()
        engine_name, remote = engine.resolve_engine(engine_name, remote)  # the endpoint as get_spark finds it (flag, else env)
        spark = engine.get_spark(engine_name, remote)
        engine_seconds = time.perf_counter() - started
        catalog = Catalog(lake_path, conf)
        sources = list(conf.landing["sources"])
        for stage in stage_names():
            versions_before = floor.table_versions(catalog)  # what the stage finds: the floor reads these versions
            meter.reset()
            ctx = RunContext(spark, lake, end, conf, tables_read={})  # counts what each stage reads
            result = run_stage(ctx, stage)
            peak = meter.peak_mb
            landing = result.notes.get("reconciliation")  # clean reads landing files: the lines it read
            rows_in = sum(r["input_records"] for r in landing) if landing else sum(result.notes["rows_read"].values())
            rows_out = sum(result.notes["staged_rows"].values())
            rate = round((rows_in or rows_out) / result.seconds, 1) if result.seconds else None
            least = floor.measure(catalog, stage, end, versions_before, ctx.tables_read, result.notes["staged_rows"], sources)
            figures.append(
                StageFigures(
                    stage,
                    round(result.seconds, 2),
                    rows_in,
                    rows_out,
                    rate,
                    peak,
                    round(least.seconds, 3),
                    _times(result.seconds, least.seconds),
                )
            )
            say(_row(figures[-1]))
    total = round(sum(f.seconds for f in figures), 2)
    floor_total = round(sum(f.floor_seconds for f in figures), 3)
    return {
        "users": users,
        "days": days,
        "date": str(end),
        "engine": engine.current_engine(),
        "remote": remote if engine.current_engine() == "remote" else None,
        "machine": {
            "cpus": _cpus(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "generate_seconds": round(generate_seconds, 1),
        "history_clean_seconds": round(history_seconds, 1),
        "day_before_models_seconds": round(day_before_models_seconds, 1),
        "engine_start_seconds": round(engine_seconds, 2),
        "stages": [asdict(f) for f in figures],
        "total_seconds": total,
        "floor_seconds": floor_total,
        "times_floor": _times(total, floor_total),
        "peak_rss_mb": max(f.peak_rss_mb for f in figures),
    }


def _cleaned_dates(lake: Path, conf: Conf) -> set[date]:
    """The landing dates the clean stage has published (they have reconciliation rows)."""
    from deltalake import DeltaTable

    from portrait.core.tables import Catalog

    catalog = Catalog(str(lake), conf)
    if not catalog.exists("ops.reconciliation"):
        return set()
    return set(
        DeltaTable(catalog.spec("ops.reconciliation").path, storage_options=storage.delta_options(catalog.spec("ops.reconciliation").path))
        .to_pyarrow_table(columns=["dt"])["dt"]
        .to_pylist()
    )


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _times(seconds: float, floor_seconds: float) -> float | None:
    """``seconds`` as a multiple of the floor (None where the floor is too small to divide by)."""
    return round(seconds / floor_seconds, 1) if floor_seconds >= 0.001 else None


def _multiple(times: float | None) -> str:
    return f"{times:>7,.1f}x" if times is not None else f"{'-':>8}"


def _row(f: StageFigures) -> str:
    rows_in = f"{f.rows_in:,}" if f.rows_in is not None else "-"
    rate = f"{f.rows_per_second:,.0f}" if f.rows_per_second else "-"
    least = f"  floor {f.floor_seconds:>7.3f}s {_multiple(f.times_floor)}" if f.floor_seconds is not None else ""
    return (
        f"{f.stage:<16} {f.seconds:>8.2f}s  in {rows_in:>12}  out {f.rows_out:>12,}  {rate:>12} rows/s  peak {f.peak_rss_mb:>8,.0f} MiB"
        + least
    )


def render(report: dict) -> str:
    engine = report["engine"] + (f" {report['remote']} (peak memory: this client process only)" if report.get("remote") else "")
    lines = [f"portrait bench: {report['users']:,} users x {report['days']} days, date {report['date']}, engine {engine}"]
    lines += [_row(StageFigures(**s)) for s in report["stages"]]
    total = f"{'total':<16} {report['total_seconds']:>8.2f}s  peak {report['peak_rss_mb']:,.0f} MiB"
    if report.get("floor_seconds") is not None:
        total += f"  floor {report['floor_seconds']:.3f}s ({_multiple(report['times_floor']).strip()} the floor)"
    lines.append(total)
    lines.append("floor: the stage's landing files and the table snapshots it read, and the rows it wrote, with pyarrow alone")
    lines.append(
        f"engine start {report['engine_start_seconds']:.1f}s (before the stages); set-up: sub-profiles and models of the day before "
        f"{report['day_before_models_seconds']:.1f}s (it retrains churn when due, weekly)"
    )
    return "\n".join(lines)
