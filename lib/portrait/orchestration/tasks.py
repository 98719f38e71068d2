"""What the DAG files call: business dates, settings from Airflow, one task step, failure records.

Imported by the DAG files at parse time, so it imports only the standard
library and pendulum at its top; Airflow's SDK, the engine and the lake are
touched inside the functions, when a task runs.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime, timedelta

import pendulum

log = logging.getLogger("portrait.airflow")

DAG_ID = "portrait_daily"
TIME_ZONE = "Asia/Shanghai"
BUILD, GATE, PUBLISH = "build", "gate", "publish"
STEPS = (BUILD, GATE, PUBLISH)
LAKE_VARIABLE = "portrait_lake"
REMOTE_VARIABLE = "portrait_spark_remote"
S3_CONNECTION = "portrait_s3"  # type aws: credentials and endpoint of an s3:// lake
REMOTE_CONNECTION = "portrait_spark_remote"
EMBEDDED = ("", "sail", "embedded", "none")


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
    from portrait.core.config import default_lake

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
    return None  # portrait.core.engine then reads PORTRAIT_REMOTE / PORTRAIT_ENGINE, else embedded Sail


def use_s3_connection(lake: str) -> None:
    """For an ``s3://`` lake, the Airflow connection ``portrait_s3`` (type aws), if defined, supplies the AWS_* settings.

    login/password are the key id and secret; extra ``region_name`` and
    ``endpoint_url`` as the amazon provider names them. Variables already in
    the worker's environment win.
    """
    from portrait.core import storage

    if not storage.is_remote(lake):
        return
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(S3_CONNECTION)
    except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException when not defined
        log.debug("connection %s not used: %s", S3_CONNECTION, exc)
        storage.check_lake(lake)
        return
    extra = conn.extra_dejson or {}
    settings = {
        "AWS_ACCESS_KEY_ID": conn.login,
        "AWS_SECRET_ACCESS_KEY": conn.password,
        "AWS_REGION": extra.get("region_name"),
        "AWS_ENDPOINT_URL": extra.get("endpoint_url") or (extra.get("service_config") or {}).get("s3", {}).get("endpoint_url"),
    }
    for key, value in settings.items():
        if value and not os.environ.get(key):
            os.environ[key] = str(value)
    storage.check_lake(lake)  # one clear line if the store cannot be used; sets AWS_ALLOW_HTTP for an http endpoint


def _deterministic_errors() -> tuple[type[BaseException], ...]:
    """Errors a retry cannot fix: the task fails at once instead of backing off."""
    from portrait.core.config import ConfError
    from portrait.core.pipeline import StagingError
    from portrait.core.tables import SchemaMismatch, WriteRefused
    from portrait.gates.reports import GateFailed

    errors: list[type[BaseException]] = [GateFailed, ConfError, StagingError, SchemaMismatch, WriteRefused]
    try:
        from pyspark.errors import AnalysisException

        errors.append(AnalysisException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


#: Third-party loggers whose INFO lines are plumbing, not news (GX logs 214 "Skipping registering function" per import).
QUIET_LOGGERS = ("great_expectations", "py4j", "pyspark", "httpx", "urllib3", "grpc")


def quiet_third_party_logs() -> None:
    """Third-party INFO noise out of task logs (WARNING and worse still show)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_step(stage: str, step: str, context) -> dict:
    """One task: build, gate or publish ``stage`` for the run's business date, then stop the engine.

    Ends with one log line: ``portrait <stage>.<step> dt=D engine=E rows=N seconds=S``.
    """
    import time

    from airflow.sdk.exceptions import AirflowFailException

    from portrait import gates
    from portrait.core import engine, pipeline
    from portrait.core.config import Conf
    from portrait.gates.reports import GateFailed

    started = time.perf_counter()
    quiet_third_party_logs()
    logging.getLogger("portrait").setLevel(logging.INFO)
    if step == GATE:
        gates.preload()  # Great Expectations imports (seconds) while the engine starts
    dt = _context_date(context)
    lake, remote = resolve_lake(), resolve_remote()
    use_s3_connection(lake)
    where = remote.split(";")[0] if remote else (os.environ.get("PORTRAIT_ENGINE") or "sail")
    log.info("portrait %s.%s for business date %s on lake %s, engine %s", stage, step, dt, lake, where)
    rows, outcome = None, "failed"
    try:
        from portrait.clean.landing import require_landing_zone

        require_landing_zone(lake)  # a wrong lake Variable is refused, never created
        spark = engine.get_spark(None, remote)
        where = engine.current_engine() or where
        ctx = pipeline.RunContext(spark, lake, dt, Conf())
        if step == BUILD:
            manifest = pipeline.build_staged(ctx, stage)
            rows = _staged_rows(ctx, manifest["staged_versions"])
            outcome = "ok"
            return {"dt": str(dt), "staged": manifest["staged_versions"], "notes": _jsonable(manifest["notes"])}
        if step == GATE:
            reports = pipeline.audit_staged(ctx, stage)
            for report in reports:
                log.info("%s", report.summary())
            rows = _staged_rows(ctx, load_staged_versions(ctx, stage))
            outcome = "ok"
            return {"dt": str(dt), "gates": {r.table: f"passed ({len(r.results)} expectations)" for r in reports}}
        if step == PUBLISH:
            versions = pipeline.publish_staged(ctx, stage)
            rows = _published_rows(ctx, versions)
            outcome = "ok"
            return {"dt": str(dt), "published": versions}
        raise ValueError(f"unknown step {step!r}")
    except GateFailed as exc:
        outcome = "gate failed"
        for report in exc.reports:
            (log.error if not report.success else log.info)("%s", report.summary())
        docs = _render_failed_gate_docs(ctx, exc)
        raise AirflowFailException(
            f"{exc}\n(no retry: the data failed its gate; findings in ops.gate_results"
            + (f", data docs {docs}" if docs else "")
            + f", staged rows in {ctx.staging_dir})"
        ) from exc
    except _deterministic_errors() as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}\n(no retry: a rerun would fail the same way)") from exc
    finally:
        engine.stop()  # client session first, then the in-process server: otherwise the task never exits
        seconds = time.perf_counter() - started
        log.info("portrait %s.%s dt=%s engine=%s rows=%s seconds=%.1f %s", stage, step, dt, where, rows, seconds, outcome)


def load_staged_versions(ctx, stage: str) -> dict:
    from portrait.core.pipeline import load_manifest

    return load_manifest(ctx, stage)["staged_versions"]


def _staged_rows(ctx, staged_versions: dict) -> int | None:
    """Rows of the staged copy (from the Delta logs, no scan); None if they cannot be counted."""
    try:
        from portrait.core.pipeline import staging_catalog

        staging = staging_catalog(ctx)
        return sum(staging.rows_stored(table, version) for table, version in staged_versions.items())
    except Exception:  # noqa: BLE001 - a figure for the log line only
        log.debug("could not count staged rows", exc_info=True)
        return None


def _published_rows(ctx, versions: dict) -> int | None:
    """Rows the publish commits wrote (from the Delta logs)."""
    try:
        return sum(ctx.catalog.rows_written(table, version) for table, version in versions.items() if version is not None)
    except Exception:  # noqa: BLE001 - a figure for the log line only
        log.debug("could not count published rows", exc_info=True)
        return None


def _render_failed_gate_docs(ctx, exc) -> str | None:
    """Great Expectations data docs of the tables that failed, for on-call; None if they cannot be rendered."""
    try:
        from portrait.core.pipeline import staging_catalog
        from portrait.gates.data_docs import data_docs_dir, render_data_docs

        staging = staging_catalog(ctx)
        frames = {report.table: staging.read(ctx.spark, report.table) for report in exc.failed}
        return render_data_docs(ctx.spark, frames, ctx.dt, data_docs_dir(ctx.lake), ctx.conf)
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
        from portrait.core.config import Conf
        from portrait.core.pipeline import TASK_FAILURES, record_task_failure

        row = {**row, "failed_at": datetime.now(UTC), "dt": dt}
        lake = resolve_lake(metadata_db)
        use_s3_connection(lake)
        version = record_task_failure(lake, Conf(), row)
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
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "stage": stage,
            "step": step or None,
            "try_number": ti.try_number,
            "state": state,
            "kind": failure_kind(exc),
            "error": _error_text(exc),
            "log_url": log_url,
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
        "dag_id": getattr(dag_run, "dag_id", DAG_ID),
        "run_id": getattr(dag_run, "run_id", None),
        "task_id": "-",
        "stage": None,
        "step": "dag_run",
        "try_number": 0,
        "state": "failed",
        "kind": "dag_run",
        "error": str(context.get("reason") or "run failed"),
        "log_url": None,
    }
    _record(row, _context_date(context), metadata_db=True)


def record_maintenance_failure(context) -> None:
    """on_failure_callback of the maintenance DAG: one row in ops.task_failures; never raises."""
    ti, exc = context["ti"], context.get("exception")
    row = {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "stage": None,
        "step": "maintenance",
        "try_number": ti.try_number,
        "state": "failed",
        "kind": "maintenance",
        "error": _error_text(exc),
        "log_url": ti.log_url,
    }
    _record(row, _context_date(context))
