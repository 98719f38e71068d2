"""The daily run: its stages in order, and write-audit-publish for each.

Every stage is a job entry point ``run(ctx) -> list[Output]``: it reads the
layer below, transforms, and returns what it wants written. ``publish`` then
writes those outputs to a staging copy, runs the layer's quality gate on the
staged rows, records the findings in ``ops.gate_results``, and only if the gate
passes writes them to the published tables. A failed gate leaves every
published table at the version it had. The CLI and the Airflow DAG both call
``run_stage`` - one code path.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date

from portrait.core import parquet_commit, storage
from portrait.core.config import Conf
from portrait.core.tables import Catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    entry_point: str  # "module:function", imported only when the stage runs
    description: str
    after: tuple[str, ...] = ()  # stages whose published output this one reads


def in_dependency_order(stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """``stages`` unchanged if each comes after every stage in its ``after``; else ValueError naming the stage.

    STAGES goes through this at import, so a stage listed before one it reads
    from, naming a stage that does not exist, or listed twice fails at once.
    """
    seen: list[str] = []
    names = [stage.name for stage in stages]
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"stage {stage.name!r} is listed twice in STAGES")
        for needed in stage.after:
            if needed not in names:
                raise ValueError(f"stage {stage.name!r} runs after {needed!r}, which is not a stage; stages are {', '.join(names)}")
            if needed not in seen:
                raise ValueError(
                    f"stage {stage.name!r} is listed before {needed!r}, which it runs after: move it below {needed!r} in STAGES"
                )
        seen.append(stage.name)
    return stages


#: The daily pipeline, in dependency order (a stage comes after everything in
#: its ``after``; checked at import). Plain data, no imports of jobs: the DAG file reads it at parse time.
STAGES: tuple[Stage, ...] = in_dependency_order(
    (
        Stage("clean", "jobs.clean:run", "landing zone -> silver tables + quarantine"),
        Stage(
            "consumption",
            "jobs.subprofiles:run_consumption",
            "silver -> profile.consumption (lifecycle, spend windows, VIP, RFM)",
            after=("clean",),
        ),
        Stage(
            "behavior",
            "jobs.subprofiles:run_behavior",
            "silver -> profile.behavior (activity, app opens, reviews, hours)",
            after=("clean",),
        ),
        Stage(
            "interest", "jobs.subprofiles:run_interest", "silver -> profile.interest (decayed category weights, top-N)", after=("clean",)
        ),
        Stage(
            "social", "jobs.subprofiles:run_social", "silver -> profile.social (reported demographics, common addresses)", after=("clean",)
        ),
        Stage(
            "product_line",
            "jobs.subprofiles:run_product_line",
            "silver -> profile.product_line (usage, intensity, status per line)",
            after=("clean",),
        ),
        Stage(
            "models",
            "jobs.models:run",
            "silver + sub-profiles -> profile.model_tags (churn, P(alive), gender, occupation, taste, sensitivity)",
            after=("consumption", "behavior", "interest", "social"),
        ),
        Stage(
            "master",
            "jobs.master:run",
            "sub-profiles + model tags -> gold.profile_snapshot (per date) and gold.profile (upsert)",
            after=("consumption", "behavior", "interest", "social", "product_line", "models"),
        ),
        Stage(
            "monitor",
            "jobs.monitor:run",
            "gold.profile_snapshot -> ops.tag_monitoring (coverage, distribution, day-over-day change per tag)",
            after=("master",),
        ),
        Stage(
            "segments",
            "jobs.segments:run",
            "gold.profile_snapshot -> segment members, bitmaps, group analysis (conf/segments.yaml)",
            after=("master",),
        ),
    )
)


def stage_names() -> list[str]:
    return [stage.name for stage in STAGES]


@dataclass
class RunContext:
    """What a job needs to run one date."""

    spark: object
    lake: str
    dt: date
    conf: Conf = field(default_factory=Conf)
    notes: dict = field(default_factory=dict)  # figures a stage reports (e.g. reconciliation)
    tables_read: dict | None = None  # given a dict (as the bench does), the job's reads are noted and counted
    stage: str = "adhoc"  # set by run_stage
    # Landing cut-off of the silver reads (SilverAsOf), default dt. Churn training builds a past snapshot S
    # that has no published partition with dt=S and known_on=D: the rows of business date <= S as landed by D,
    # so a history landed at once (an export) still has its past (issue 14).
    known_on: date | None = None

    def __post_init__(self):
        from portrait.core.validate import validate_once

        validate_once(self.conf)  # a run checks every conf file before it touches a table

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.lake, self.conf, tables_read=self.tables_read)

    @property
    def staging_dir(self) -> str:
        return storage.join(self.lake, "_staging", self.stage, str(self.dt))

    def materialize(self, df, name: str):
        """Write an intermediate result to the stage's scratch space and read it back.

        Cuts the query plan: a result used several times (counted, then split
        into tables) is computed once, and later plans stay small - the engine's
        planning time grows quickly with plan size. Removed with the staging copy.
        """
        path = storage.join(self.staging_dir, "_scratch", name)
        if not parquet_commit.native_delta(self.spark):
            return parquet_commit.materialize(self.spark, df, path)
        df.write.format("delta").mode("overwrite").save(path)  # Delta keeps the schema of an empty result
        return self.spark.read.format("delta").load(path)


@dataclass
class Output:
    """One table write a job asks for."""

    table: str
    df: object
    mode: str  # append | partition | upsert
    partition_value: date | None = None


@dataclass
class StageResult:
    stage: str
    dt: date
    seconds: float
    versions: dict[str, int]
    notes: dict


class StagingError(RuntimeError):
    """A staged copy is missing, was not audited, failed its audit or changed after it."""


_held_locks: set[tuple[int, str]] = set()  # (thread, lock path) this process holds


@contextmanager
def stage_lock(ctx: RunContext, stage: str):
    """Hold the lock of ``stage`` for ``ctx.dt``: one run of a stage for a date at a time.

    A second run (a manual rerun while Airflow runs the date) would delete the
    first one's staged copy under it; it fails at once instead, naming the
    holder. On local disk ``flock`` is released by the OS when a holder dies;
    on object storage the lock is a lease (``storage.exclusive``), so a killed
    run leaves it behind for at most ``storage.LOCK_LEASE_SECONDS``.
    Re-entrant within a thread.
    """
    import threading

    path = storage.join(ctx.lake, "_staging", stage, f"{ctx.dt}.lock")
    held = (threading.get_ident(), path)
    if held in _held_locks:
        yield
        return
    try:
        with storage.exclusive(path):
            _held_locks.add(held)
            try:
                yield
            finally:
                _held_locks.discard(held)
    except storage.LockHeld as busy:
        raise StagingError(
            f"stage {stage} for {ctx.dt} is already running ({busy.holder}); wait for it to end or stop it, then run again"
        ) from None


def _locked(step):
    """Run ``step(ctx, stage, ...)`` holding the stage's lock for ``ctx.dt``."""

    @functools.wraps(step)
    def locked(ctx: RunContext, stage: str, *args, **kwargs):
        with stage_lock(ctx, stage):
            return step(ctx, stage, *args, **kwargs)

    return locked


@_locked
def publish(ctx: RunContext, stage: str, outputs: list[Output]) -> dict[str, int]:
    """Stage, audit, then publish ``outputs``; raises ``GateFailed`` before publishing anything.

    The three steps are the functions below; the Airflow DAG runs each as its own task.
    """
    write_staged(ctx, stage, outputs)
    audit_staged(ctx, stage)
    return publish_staged(ctx, stage)


# --------------------------------------------------------------------------- write, audit, publish as steps
#
# The staged copy of a stage lives on the lake, so the three steps can run in
# different processes (one Airflow task each): {lake}/_staging/{stage}/{dt}/
# holds tables/ (the staged Delta tables), _scratch/ and manifest.json, which
# records what to publish and how, and the audit verdict together with the
# staged table versions it was given for. publish_staged publishes only a copy
# whose audit passed and that has not changed since.

MANIFEST = "manifest.json"


def stage_named(name: str) -> Stage:
    stage = next((s for s in STAGES if s.name == name), None)
    if stage is None:
        raise KeyError(f"unknown stage {name!r}; stages are {', '.join(stage_names())}")
    return stage


def staging_catalog(ctx: RunContext) -> Catalog:
    """The staged copy of ``ctx.stage`` for ``ctx.dt``, as a catalog of the declared tables."""
    return Catalog(storage.join(ctx.staging_dir, "tables"), ctx.conf)


def _save_manifest(ctx: RunContext, manifest: dict) -> None:
    import json

    storage.write_text(storage.join(ctx.staging_dir, MANIFEST), json.dumps(manifest, indent=2, default=str))


def load_manifest(ctx: RunContext, stage: str) -> dict:
    """The manifest of ``stage``'s staged copy for ``ctx.dt``; StagingError if there is none."""
    import json

    ctx.stage = stage
    path = storage.join(ctx.staging_dir, MANIFEST)
    if not storage.is_file(path):
        raise StagingError(f"stage {stage} has no staged copy for {ctx.dt} ({path}); run its build step first")
    return json.loads(storage.read_text(path))


def _fresh_job(ctx: RunContext, stage_name: str):
    """(stage, its job function), with ``ctx`` set to the stage and any earlier staged copy of ``ctx.dt`` removed."""
    stage = stage_named(stage_name)
    module_name, function_name = stage.entry_point.split(":")
    job = getattr(importlib.import_module(module_name), function_name)
    ctx.stage = stage.name
    storage.remove_tree(ctx.staging_dir)
    return stage, job


@_locked
def build_staged(ctx: RunContext, stage_name: str) -> dict:
    """Write: run the stage's job for ``ctx.dt`` and write its outputs to the staging copy only."""
    stage, job = _fresh_job(ctx, stage_name)
    started = time.perf_counter()
    manifest = write_staged(ctx, stage.name, job(ctx))
    log.info("stage %s for %s staged %s in %.1fs", stage.name, ctx.dt, manifest["staged_versions"], time.perf_counter() - started)
    return manifest


@_locked
def write_staged(ctx: RunContext, stage: str, outputs: list[Output]) -> dict:
    """Write ``outputs`` to the staging copy and its manifest (nothing is audited or published)."""
    ctx.stage = stage
    staging = staging_catalog(ctx)
    storage.remove_tree(staging.lake)
    storage.remove(storage.join(ctx.staging_dir, MANIFEST))
    staged, rows = {}, {}
    for output in outputs:
        staged[output.table] = staging.write(ctx.spark, output.df, output.table, "append")
        rows[output.table] = rows.get(output.table, 0) + staging.rows_written(output.table, staged[output.table])
    ctx.notes["staged_rows"] = rows  # what the stage produced, per table, whatever the publish mode rewrites
    if ctx.tables_read is not None:  # what it read: each published table's snapshot (its own date filters scan fewer)
        ctx.notes["rows_read"] = {table: ctx.catalog.rows_stored(table, version) for table, version in ctx.tables_read.items()}
    manifest = {
        "stage": stage,
        "dt": str(ctx.dt),
        "outputs": [
            {"table": o.table, "mode": o.mode, "partition_value": None if o.partition_value is None else str(o.partition_value)}
            for o in outputs
        ],
        "staged_versions": staged,
        "notes": ctx.notes,
        "audit": None,
    }
    _save_manifest(ctx, manifest)
    return manifest


@_locked
def audit_staged(ctx: RunContext, stage: str) -> list:
    """Audit: run the gate on the staged copy, record it in ops.gate_results, raise GateFailed if it fails."""
    from datetime import datetime

    from portrait import gates

    manifest = load_manifest(ctx, stage)
    staging = staging_catalog(ctx)
    declared = ctx.conf.gates
    tables = [o["table"] for o in manifest["outputs"]]
    reports = [
        gates.run_gate(ctx.spark, table, staging.read(ctx.spark, table), ctx.dt, ctx.conf, gate_name=stage, lake=ctx.lake)
        for table in tables
        if table in declared
    ]
    gates.record(ctx.spark, ctx.catalog, reports, ctx.dt)
    manifest["audit"] = {
        "passed": all(report.success for report in reports),
        "staged_versions": {table: staging.version(table) for table in dict.fromkeys(tables)},
        "gated_tables": [report.table for report in reports],
        "checked_at": datetime.now(UTC).isoformat(),
    }
    _save_manifest(ctx, manifest)
    gates.check(reports)
    return reports


@_locked
def publish_staged(ctx: RunContext, stage: str) -> dict[str, int]:
    """Publish: write the audited staged copy to the published tables, then drop the copy."""
    manifest = load_manifest(ctx, stage)
    audit = manifest.get("audit")
    if not audit:
        raise StagingError(f"stage {stage} for {ctx.dt}: the staged copy was not audited; run its gate step first")
    if not audit["passed"]:
        raise StagingError(f"stage {stage} for {ctx.dt}: the staged copy failed its gate (see ops.gate_results); nothing published")
    staging = staging_catalog(ctx)
    current = {table: staging.version(table) for table in audit["staged_versions"]}
    if current != audit["staged_versions"]:
        raise StagingError(
            f"stage {stage} for {ctx.dt}: the staged copy changed after its audit "
            f"({audit['staged_versions']} audited, {current} now); run the gate step again"
        )
    versions = {
        output["table"]: ctx.catalog.write(
            ctx.spark, staging.read(ctx.spark, output["table"]), output["table"], output["mode"], output["partition_value"]
        )
        for output in manifest["outputs"]
    }
    publish_artefacts(ctx, stage)  # before the staged copy goes: a failed build fails this step, and its retry builds again
    storage.remove_tree(ctx.staging_dir)
    return versions


def publish_artefacts(ctx: RunContext, stage: str | None = None, source: str | None = None) -> dict[str, dict]:
    """Build the derived artefacts (conf/pipeline.yaml ``artefacts``) of ``stage``, or those built from table ``source``.

    A stage's publish step calls it for the stage; ``portrait rollback`` for
    the table it restored, so no artefact outlives the rows it was built from.
    """
    built = {}
    for name, artefact in (ctx.conf.load("pipeline").get("artefacts") or {}).items():
        if artefact["stage"] != stage and artefact["source"] != source:
            continue
        if artefact["gate"] != "none":  # the schema allows no other value yet: a file has no GX suite
            raise ValueError(f"conf/pipeline.yaml artefacts.{name}.gate: {artefact['gate']!r}; only none (with a reason) is supported")
        started = time.perf_counter()
        module_name, function_name = artefact["build"].split(":")
        built[name] = getattr(importlib.import_module(module_name), function_name)(ctx, artefact)
        log.info("%s for %s: published artefact %s %s in %.1fs", stage or source, ctx.dt, name, built[name], time.perf_counter() - started)
    return built


TASK_FAILURES = "ops.task_failures"
_ARROW_TYPES = {"string": "string", "bigint": "int64", "int": "int32", "double": "float64", "boolean": "bool_", "date": "date32"}


def record_task_failure(lake: str, conf: Conf, row: dict) -> int:
    """Append one row to ops.task_failures; returns the table's new version.

    Written with delta-rs (``deltalake``) in the declared schema, not through
    the engine: failure callbacks must work when the engine is what failed, and
    Airflow may run them outside the task process.
    """
    import pyarrow as pa
    from deltalake import write_deltalake

    spec = Catalog(lake, conf).spec(TASK_FAILURES)
    fields = []
    for name, kind in spec.columns.items():
        kind = str(kind).strip().lower()
        fields.append(pa.field(name, pa.timestamp("us", tz="UTC") if kind == "timestamp" else getattr(pa, _ARROW_TYPES[kind])()))
    schema = pa.schema(fields)
    unknown = sorted(set(row) - set(spec.columns))
    if unknown:
        raise ValueError(f"{TASK_FAILURES} has no column {', '.join(unknown)}")
    table = pa.Table.from_pylist([{name: row.get(name) for name in spec.columns}], schema=schema)
    write_deltalake(
        spec.path, table, mode="append", partition_by=list(spec.partition_by) or None, storage_options=storage.delta_options(spec.path)
    )
    return Catalog(lake, conf).version(TASK_FAILURES)


@_locked
def run_stage(ctx: RunContext, stage_name: str) -> StageResult:
    """Run one stage for ``ctx.dt``: job, gate, publish."""
    stage, job = _fresh_job(ctx, stage_name)
    started = time.perf_counter()
    from portrait import gates

    gates.preload()  # the gate's import overlaps the job
    outputs = job(ctx)
    versions = publish(ctx, stage.name, outputs)
    seconds = time.perf_counter() - started
    log.info("stage %s for %s published %s in %.1fs", stage.name, ctx.dt, versions, seconds)
    return StageResult(stage.name, ctx.dt, seconds, versions, dict(ctx.notes))


def stages_between(first: str | None = None, last: str | None = None) -> list[str]:
    """Stage names from ``first`` to ``last`` (both inclusive; None means the ends)."""
    names = stage_names()
    for name in (first, last):
        if name is not None and name not in names:
            raise KeyError(f"unknown stage {name!r}; stages are {', '.join(names)}")
    start = names.index(first) if first else 0
    stop = names.index(last) + 1 if last else len(names)
    if start >= stop:
        raise ValueError(f"stage {first!r} comes after {last!r}")
    return names[start:stop]
