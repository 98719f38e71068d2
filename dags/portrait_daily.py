"""portrait_daily: the daily run of portrait for one Asia/Shanghai business date.

Business date. Runs fire at 02:00 Asia/Shanghai and process the business day
that ended two hours earlier. Their logical date is that business date at
00:00 UTC (08:00 in Shanghai), so ``{{ ds }}`` *is* the business date D and
``airflow dags test portrait_daily D`` / ``airflow backfill create --from-date D1
--to-date D2`` take business dates as they are. In code, D is the Shanghai
calendar date of the logical date (so a logical date typed as Shanghai
midnight means the same day); a manual run without a logical date processes
the business day before it was triggered.

Tasks. One task group per stage of ``portrait.core.pipeline.STAGES`` (the registry the
CLI runs), each with three tasks, wired by the stages' ``after`` edges::

    <stage>.build  -> <stage>.gate -> <stage>.publish -> <next stage>.build ...

* build   - the stage's job entry point, writing to the stage's staging copy
            (``{lake}/_staging/<stage>/<D>``); nothing a consumer reads changes;
* gate    - the layer's quality gate (Great Expectations) on the staged rows,
            recorded in ``ops.gate_results``; a failing gate fails the task
            with its findings and is never retried (AirflowFailException);
* publish - writes the audited staged copy to the published Delta tables
            (refuses a copy that was not audited, failed, or changed since).

Same code path as ``portrait run``: ``portrait.core.pipeline.run_stage`` is build, gate
and publish in one process; the tasks call the same three functions.

Retries: engine and I/O errors are retried with exponential back-off; a failed
gate and deterministic errors (conf, schema, refused write, analysis errors)
fail at once. Failures and retries are recorded in ``ops.task_failures``.

Settings (read by the tasks at run time, never at parse time):
* lake:   Variable ``portrait_lake``, else env ``PORTRAIT_LAKE``, else ./lakehouse
* engine: Variable ``portrait_spark_remote`` (``sc://host:port``; ``sail`` or empty
          means embedded), else Connection ``portrait_spark_remote`` (type
          spark_connect), else env ``PORTRAIT_REMOTE`` / ``PORTRAIT_ENGINE``, else
          embedded Sail started inside the task process.
* pool:   ``portrait`` (every task: engine processes at once). Gates of different
          stages run in parallel: each records its own (dt, gate) partition of
          ops.gate_results.

Catch-up (docs/airflow.md): off by default. Unpausing the DAG schedules the
latest business date only, however far back the start date lies; earlier dates
are run on purpose with ``airflow backfill create`` (one date at a time, in
order). ``PORTRAIT_FIRST_DATE`` (default 2026-07-01) is the earliest date a run
or a backfill may have; ``PORTRAIT_CATCHUP=true`` turns Airflow's catch-up on.

This file stays thin: it imports only Airflow's SDK and the stage registry
(plain data); jobs, pyspark and the lake are touched inside tasks only.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable, TaskGroup, task

from portrait.core.pipeline import STAGES
from portrait.orchestration.tasks import (  # noqa: F401 - business_date, resolve_*: the DAG's helpers, also for tests
    BUILD,
    DAG_ID,
    GATE,
    PUBLISH,
    STEPS,
    TIME_ZONE,
    business_date,
    failure_kind,
    record_dag_run_failure,
    record_failure,
    record_retry,
    resolve_lake,
    resolve_remote,
    run_step,
)

#: Earliest business date a run (scheduled or backfilled) may have.
FIRST_BUSINESS_DATE = os.environ.get("PORTRAIT_FIRST_DATE", "2026-07-01")
#: Off by default: the scheduler creates the latest date only; past dates go through `airflow backfill create`.
CATCHUP = os.environ.get("PORTRAIT_CATCHUP", "false").strip().lower() in ("1", "true", "yes", "on")
#: 02:00 Shanghai for the day before; the logical date is that day at 00:00 UTC (18 h earlier).
SCHEDULE = CronTriggerTimetable("0 2 * * *", timezone=TIME_ZONE, interval=timedelta(hours=18))

POOL = "portrait"
EXECUTION_TIMEOUT = {BUILD: timedelta(minutes=60), GATE: timedelta(minutes=20), PUBLISH: timedelta(minutes=30)}
DAGRUN_TIMEOUT = timedelta(hours=8)
RETRIES = 3
RETRY_DELAY = timedelta(minutes=2)
MAX_RETRY_DELAY = timedelta(minutes=30)

# --------------------------------------------------------------------------- the DAG


def _step_task(stage, step: str):
    @task(
        task_id=step,
        pool=POOL,
        execution_timeout=EXECUTION_TIMEOUT[step],
        doc_md=f"**{stage.name} · {step}** — {stage.description}",
    )
    def step_task(**context):
        return run_step(stage.name, step, context)

    return step_task()


with DAG(
    dag_id=DAG_ID,
    description="portrait: landing zone -> silver -> sub-profiles -> ... for one Asia/Shanghai business date",
    schedule=SCHEDULE,
    start_date=pendulum.parse(FIRST_BUSINESS_DATE, tz="UTC"),
    catchup=CATCHUP,
    max_active_runs=1,  # dates in order: a date reads the dates before it (dedup look-back, stitching)
    dagrun_timeout=DAGRUN_TIMEOUT,
    default_args={
        "owner": "portrait",
        "depends_on_past": False,
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": MAX_RETRY_DELAY,
        "on_failure_callback": record_failure,
        "on_retry_callback": record_retry,
    },
    on_failure_callback=record_dag_run_failure,
    tags=["portrait"],
    doc_md=__doc__,
) as dag:
    entry: dict[str, object] = {}
    exit_: dict[str, object] = {}
    for stage in STAGES:
        with TaskGroup(group_id=stage.name, tooltip=stage.description):
            build, gate, publish = (_step_task(stage, step) for step in STEPS)
            build >> gate >> publish
        entry[stage.name], exit_[stage.name] = build, publish
    for stage in STAGES:
        for upstream in stage.after:
            exit_[upstream] >> entry[stage.name]
