"""portrait_maintenance: weekly compaction and vacuum of every declared Delta table.

Sundays 04:00 Asia/Shanghai (after the daily run of 02:00 has normally finished;
it shares the ``portrait`` pool with it). For each declared table that exists:

* compact - bin-pack the small files the daily partition writes leave
            (delta-rs ``optimize.compact``; a new version, same rows);
* vacuum  - delete files no version younger than the retention needs, so time
            travel (``versionAsOf`` / ``portrait rollback``) keeps working for
            ``maintenance.time_travel_days`` of conf/pipeline.yaml (default 30).

Also purges the old versions of tables an erasure left with ``portrait forget
--no-purge`` (ops.erasure_log rows with purged_at null; docs/privacy.md), and removes staged copies (``{lake}/_staging``) older than the retention: a
failed gate leaves its staged rows there for inspection.
Runs through delta-rs (``lib/portrait/core/maintenance.py``): no engine is started.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable, task

from portrait.orchestration.tasks import record_maintenance_failure, resolve_lake

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
        "on_failure_callback": record_maintenance_failure,
    },
    tags=["portrait", "maintenance"],
    doc_md=__doc__,
) as dag:

    @task(task_id="compact_and_vacuum")
    def compact_and_vacuum() -> dict:
        from portrait.core.maintenance import maintain

        return maintain(resolve_lake())

    compact_and_vacuum()
