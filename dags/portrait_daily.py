"""portrait_daily: the daily run of portrait for one Asia/Shanghai business date.

Business date. Runs fire at 02:00 Asia/Shanghai and process the business day
that ended two hours earlier. Their logical date is that business date at
00:00 UTC (08:00 in Shanghai), so ``{{ ds }}`` *is* the business date D and
``airflow dags test portrait_daily D`` / ``airflow backfill create --from-date D1
--to-date D2`` take business dates as they are. In code, D is the Shanghai
calendar date of the logical date (so a logical date typed as Shanghai
midnight means the same day); a manual run without a logical date processes
the business day before it was triggered.

Tasks. One task group per stage of ``lib.pipeline.STAGES`` (the registry the
CLI runs), each with three tasks, wired by the stages' ``after`` edges::

    <stage>.build  -> <stage>.gate -> <stage>.publish -> <next stage>.build ...

* build   - the stage's job entry point, writing to the stage's staging copy
            (``{lake}/_staging/<stage>/<D>``); nothing a consumer reads changes;
* gate    - the layer's quality gate (Great Expectations) on the staged rows,
            recorded in ``ops.gate_results``; a failing gate fails the task
            with its findings and is never retried (AirflowFailException);
* publish - writes the audited staged copy to the published Delta tables
            (refuses a copy that was not audited, failed, or changed since).

Same code path as ``portrait run``: ``lib.pipeline.run_stage`` is build, gate
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
* pools:  ``portrait`` (build / publish: engine processes at once) and
          ``portrait_gates`` (1 slot: gates record a date's ops.gate_results
          partition read-modify-write, so they must not run concurrently).

This file stays thin: it imports only Airflow's SDK and the stage registry
(plain data); jobs, pyspark and the lake are touched inside tasks only.
"""
from __future__ import annotations

import logging
import os
from datetime import date, datetime, timedelta, timezone

import pendulum
from airflow.sdk import DAG, CronTriggerTimetable, TaskGroup, task

from portrait.lib.pipeline import STAGES

log = logging.getLogger("portrait.airflow")

DAG_ID = "portrait_daily"
TIME_ZONE = "Asia/Shanghai"
#: First business date the DAG processes (catch-up creates every date from here on).
FIRST_BUSINESS_DATE = os.environ.get("PORTRAIT_FIRST_DATE", "2026-07-01")
#: 02:00 Shanghai for the day before; the logical date is that day at 00:00 UTC (18 h earlier).
SCHEDULE = CronTriggerTimetable("0 2 * * *", timezone=TIME_ZONE, interval=timedelta(hours=18))

POOL = "portrait"
GATE_POOL = "portrait_gates"
BUILD, GATE, PUBLISH = "build", "gate", "publish"
STEPS = (BUILD, GATE, PUBLISH)
EXECUTION_TIMEOUT = {BUILD: timedelta(minutes=60), GATE: timedelta(minutes=20), PUBLISH: timedelta(minutes=30)}
DAGRUN_TIMEOUT = timedelta(hours=8)
RETRIES = 3
RETRY_DELAY = timedelta(minutes=2)
MAX_RETRY_DELAY = timedelta(minutes=30)

LAKE_VARIABLE = "portrait_lake"
REMOTE_VARIABLE = "portrait_spark_remote"
REMOTE_CONNECTION = "portrait_spark_remote"
EMBEDDED = ("", "sail", "embedded", "none")


# --------------------------------------------------------------------------- run-time helpers (no heavy imports)


def business_date(logical_date: datetime | None, run_after: datetime | None = None) -> date:
    """The business date D a run processes (see the module docstring)."""
    if logical_date is not None:
        return pendulum.instance(logical_date).in_timezone(TIME_ZONE).date()
    if run_after is None:
        raise ValueError("a run needs a logical date or a run_after time to have a business date")
    return pendulum.instance(run_after).in_timezone(TIME_ZONE).date() - timedelta(days=1)


def _context_date(context) -> date:
    dag_run = context.get("dag_run")
    logical = context.get("logical_date") or getattr(dag_run, "logical_date", None)
    return business_date(logical, getattr(dag_run, "run_after", None))


def _variable(name: str, metadata_db: bool = False) -> str | None:
    """An Airflow Variable through the Task SDK (env AIRFLOW_VAR_*, then the API server).

    ``metadata_db``: outside a task (a DAG-level callback run by ``dag.test`` or the
    scheduler) the SDK has no API to ask; then read the metadata DB directly.
    """
    value = None
    try:
        from airflow.sdk import Variable

        value = Variable.get(name, default=None)
    except Exception as exc:  # noqa: BLE001 - no API to ask: fall back
        log.debug("variable %s unavailable through the SDK: %s", name, exc)
    if value is None and metadata_db:
        try:
            from airflow.models.variable import Variable as StoredVariable

            value = StoredVariable.get(name, default_var=None)
        except Exception as exc:  # noqa: BLE001
            log.debug("variable %s unavailable in the metadata DB: %s", name, exc)
    return None if value is None else str(value).strip()


def resolve_lake(metadata_db: bool = False) -> str:
    from portrait.lib.config import default_lake

    return _variable(LAKE_VARIABLE, metadata_db) or default_lake()


def resolve_remote() -> str | None:
    """The Spark Connect URL to use, or None for the embedded engine (or PORTRAIT_ENGINE's choice)."""
    value = _variable(REMOTE_VARIABLE)
    if value is not None:
        return None if value.lower() in EMBEDDED else value
    try:
        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

        return SparkConnectHook(REMOTE_CONNECTION).get_connection_url()
    except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException when not defined
        log.debug("connection %s not used: %s", REMOTE_CONNECTION, exc)
    return None  # lib.engine then reads PORTRAIT_REMOTE / PORTRAIT_ENGINE, else embedded Sail


def _deterministic_errors() -> tuple[type[BaseException], ...]:
    """Errors a retry cannot fix: the task fails at once instead of backing off."""
    from portrait.lib.config import ConfError
    from portrait.lib.gates import GateFailed
    from portrait.lib.pipeline import StagingError
    from portrait.lib.tables import SchemaMismatch, WriteRefused

    errors: list[type[BaseException]] = [GateFailed, ConfError, StagingError, SchemaMismatch, WriteRefused]
    try:
        from pyspark.errors import AnalysisException

        errors.append(AnalysisException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def run_step(stage: str, step: str, context) -> dict:
    """One task: build, gate or publish ``stage`` for the run's business date, then stop the engine."""
    from airflow.sdk.exceptions import AirflowFailException

    from portrait.lib import engine, pipeline
    from portrait.lib.config import Conf
    from portrait.lib.gates import GateFailed

    logging.getLogger("portrait").setLevel(logging.INFO)
    dt = _context_date(context)
    lake, remote = resolve_lake(), resolve_remote()
    where = remote.split(";")[0] if remote else (os.environ.get("PORTRAIT_ENGINE") or "embedded sail")
    log.info("portrait %s %s for business date %s on lake %s, engine %s", stage, step, dt, lake, where)
    try:
        spark = engine.get_spark(None, remote)
        ctx = pipeline.RunContext(spark, lake, dt, Conf())
        if step == BUILD:
            manifest = pipeline.build_staged(ctx, stage)
            return {"dt": str(dt), "staged": manifest["staged_versions"], "notes": _jsonable(manifest["notes"])}
        if step == GATE:
            reports = pipeline.audit_staged(ctx, stage)
            for report in reports:
                log.info("%s", report.summary())
            return {"dt": str(dt), "gates": {r.table: f"passed ({len(r.results)} expectations)" for r in reports}}
        if step == PUBLISH:
            versions = pipeline.publish_staged(ctx, stage)
            log.info("stage %s for %s published %s", stage, dt, versions)
            return {"dt": str(dt), "published": versions}
        raise ValueError(f"unknown step {step!r}")
    except GateFailed as exc:
        for report in exc.reports:
            (log.error if not report.success else log.info)("%s", report.summary())
        docs = _render_failed_gate_docs(ctx, exc)
        raise AirflowFailException(
            f"{exc}\n(no retry: the data failed its gate; findings in ops.gate_results"
            + (f", data docs {docs}" if docs else "") + f", staged rows in {ctx.staging_dir})"
        ) from exc
    except _deterministic_errors() as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}\n(no retry: a rerun would fail the same way)") from exc
    finally:
        engine.stop()  # client session first, then the in-process server: otherwise the task never exits


def _render_failed_gate_docs(ctx, exc) -> str | None:
    """Great Expectations data docs of the tables that failed, for on-call; None if they cannot be rendered."""
    try:
        from portrait.lib import gates
        from portrait.lib.pipeline import staging_catalog

        staging = staging_catalog(ctx)
        frames = {report.table: staging.read(ctx.spark, report.table) for report in exc.failed}
        return gates.render_data_docs(ctx.spark, frames, ctx.dt, gates.data_docs_dir(ctx.lake), ctx.conf)
    except Exception:  # noqa: BLE001 - the findings are already logged and recorded
        log.warning("could not render data docs for the failed gate", exc_info=True)
        return None


def _jsonable(value):
    import json

    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- failure records


def failure_kind(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    cause = exc.__cause__ or exc
    if type(cause).__name__ == "GateFailed" or "failed its gate" in str(exc):
        return "gate"
    if "Timeout" in type(exc).__name__:
        return "timeout"
    if type(exc).__name__ == "AirflowFailException":
        return "data_or_code"
    return "transient"


def _error_text(exc: BaseException | None, limit: int = 4000) -> str | None:
    if exc is None:
        return None
    cause = exc.__cause__ or exc  # the error itself; the message of a wrapping AirflowFailException adds where to look
    text = f"{type(cause).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _record(row: dict, dt: date, metadata_db: bool = False) -> None:
    """Append a row to ops.task_failures; never raises (a callback must not mask the failure)."""
    try:
        from portrait.lib.config import Conf
        from portrait.lib.pipeline import TASK_FAILURES, record_task_failure

        row = {**row, "failed_at": datetime.now(timezone.utc), "dt": dt}
        version = record_task_failure(resolve_lake(metadata_db), Conf(), row)
        log.info("recorded %s %s for %s in %s (version %s)", row.get("task_id"), row.get("state"), dt, TASK_FAILURES, version)
    except Exception:  # noqa: BLE001
        log.exception("could not record the failure in ops.task_failures")


def _task_callback(state: str):
    def callback(context) -> None:
        ti = context["ti"]
        exc = context.get("exception")
        stage, _, step = ti.task_id.partition(".")
        try:
            log_url = ti.log_url
        except Exception:  # noqa: BLE001
            log_url = None
        row = {
            "dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "stage": stage, "step": step or None,
            "try_number": ti.try_number, "state": state, "kind": failure_kind(exc), "error": _error_text(exc), "log_url": log_url,
        }
        _record(row, _context_date(context))

    callback.__name__ = f"record_{state}"
    return callback


record_failure = _task_callback("failed")
record_retry = _task_callback("up_for_retry")


def record_dag_run_failure(context) -> None:
    """DAG-level: one row per failed run (a failed task, or the run timed out)."""
    dag_run = context.get("dag_run")
    row = {
        "dag_id": getattr(dag_run, "dag_id", DAG_ID), "run_id": getattr(dag_run, "run_id", None), "task_id": "-", "stage": None,
        "step": "dag_run", "try_number": 0, "state": "failed", "kind": "dag_run", "error": str(context.get("reason") or "run failed"),
        "log_url": None,
    }
    _record(row, _context_date(context), metadata_db=True)


# --------------------------------------------------------------------------- the DAG


def _step_task(stage, step: str):
    @task(
        task_id=step,
        pool=GATE_POOL if step == GATE else POOL,
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
    catchup=True,
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
