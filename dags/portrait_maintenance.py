"""portrait_maintenance: weekly compaction and vacuum of every declared Delta table.

Sundays 04:00 Asia/Shanghai (after the daily run of 02:00 has normally finished;
it shares the ``portrait`` pool with it). For each declared table that exists:

* compact - bin-pack the small files the daily partition writes leave
            (delta-rs ``optimize.compact``; a new version, same rows);
* vacuum  - delete files no version younger than the retention needs, so time
            travel (``versionAsOf`` / ``portrait rollback``) keeps working for
            ``maintenance.time_travel_days`` of conf/pipeline.yaml (default 30).

Also removes staged copies (``{lake}/_staging``) older than the retention: a
failed gate leaves its staged rows there for inspection.
Runs through delta-rs (``lib/maintenance.py``): no engine is started.
"""
from __future__ import annotations

import logging
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable, task

log = logging.getLogger("portrait.airflow")

DEFAULT_TIME_TRAVEL_DAYS = 30


def retention_hours(conf) -> int:
    days = (conf.pipeline.get("maintenance") or {}).get("time_travel_days", DEFAULT_TIME_TRAVEL_DAYS)
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"conf/pipeline.yaml maintenance.time_travel_days must be a positive integer, got {days!r}")
    return days * 24


def maintain(lake: str, conf=None, hours: int | None = None) -> dict:
    """Compact and vacuum every declared table of ``lake``; returns what was done per table."""
    from portrait.lib import maintenance
    from portrait.lib.config import Conf
    from portrait.lib.tables import Catalog

    conf = conf or Conf()
    hours = retention_hours(conf) if hours is None else hours
    catalog = Catalog(lake, conf)
    done, failed = {}, {}
    for name in catalog.names():
        if not catalog.exists(name):
            continue
        try:
            compacted = maintenance.compact(catalog, name)
            removed = maintenance.vacuum(catalog, name, retention_hours=hours)
            done[name] = {"files_added": compacted.get("numFilesAdded"), "files_removed": compacted.get("numFilesRemoved"),
                          "vacuumed": len(removed), "version": catalog.version(name)}
            log.info("%s: %s", name, done[name])
        except Exception as exc:  # noqa: BLE001 - one table's trouble must not stop the others
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.exception("maintenance of %s failed", name)
    staging = Path(lake) / "_staging"
    cutoff = time.time() - hours * 3600
    for folder in staging.glob("*/*") if staging.is_dir() else ():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed stale staged copy %s", folder)
    if failed:
        raise RuntimeError("maintenance failed for " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return done


def _record_failure(context) -> None:
    try:
        from datetime import datetime, timezone

        from portrait.lib.config import Conf, default_lake
        from portrait.lib.pipeline import record_task_failure
        from airflow.sdk import Variable

        ti, exc = context["ti"], context.get("exception")
        logical = context.get("logical_date") or context["dag_run"].run_after
        row = {
            "dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "stage": None, "step": "maintenance",
            "try_number": ti.try_number, "state": "failed", "kind": "maintenance",
            "error": f"{type(exc).__name__}: {exc}"[:4000] if exc else None, "log_url": ti.log_url,
            "failed_at": datetime.now(timezone.utc), "dt": pendulum.instance(logical).in_timezone("Asia/Shanghai").date(),
        }
        record_task_failure(Variable.get("portrait_lake", default=None) or default_lake(), Conf(), row)
    except Exception:  # noqa: BLE001
        log.exception("could not record the failure in ops.task_failures")


with DAG(
    dag_id="portrait_maintenance",
    description="portrait: weekly compaction + vacuum of every declared Delta table",
    schedule=CronTriggerTimetable("0 4 * * 0", timezone="Asia/Shanghai"),
    start_date=pendulum.datetime(2026, 7, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args={
        "owner": "portrait",
        "pool": "portrait",
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "retry_exponential_backoff": 2.0,
        "execution_timeout": timedelta(hours=4),
        "on_failure_callback": _record_failure,
    },
    tags=["portrait", "maintenance"],
    doc_md=__doc__,
) as dag:

    @task(task_id="compact_and_vacuum")
    def compact_and_vacuum() -> dict:
        from airflow.sdk import Variable

        from portrait.lib.config import default_lake

        return maintain(Variable.get("portrait_lake", default=None) or default_lake())

    compact_and_vacuum()
