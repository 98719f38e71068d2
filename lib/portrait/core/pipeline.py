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
import json
import logging
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date

from portrait.core import storage
from portrait.core.config import Conf
from portrait.core.tables import Catalog, StagedCatalog

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
            "aggregate",
            "jobs.aggregate:run",
            "silver rows of the landing date -> dws daily aggregates per user, business date and landing date",
            after=("clean",),
        ),
        Stage(
            "consumption",
            "jobs.subprofiles:run_consumption",
            "dws + silver -> profile.consumption (lifecycle, spend windows, VIP, RFM)",
            after=("aggregate",),
        ),
        Stage(
            "behavior",
            "jobs.subprofiles:run_behavior",
            "dws + silver -> profile.behavior (activity, app opens, reviews, hours)",
            after=("aggregate",),
        ),
        Stage(
            "interest",
            "jobs.subprofiles:run_interest",
            "dws + silver -> profile.interest (decayed category weights, top-N)",
            after=("aggregate",),
        ),
        Stage(
            "social",
            "jobs.subprofiles:run_social",
            "dws + silver -> profile.social (reported demographics, common addresses)",
            after=("aggregate",),
        ),
        Stage(
            "product_line",
            "jobs.subprofiles:run_product_line",
            "dws + silver -> profile.product_line (usage, intensity, status per line)",
            after=("aggregate",),
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
        Stage(
            "campaigns",
            "jobs.campaigns:run",
            "segment members + consent -> gold.campaign_assignments (treatment/holdout), ops.campaign_results (conf/campaigns.yaml)",
            after=("segments",),
        ),
        Stage(
            "deliveries",
            "jobs.campaigns:run_deliveries",
            "gold.campaign_assignments -> the channels (webhook, SMTP, file drop), ops.campaign_deliveries as the outbox",
            after=("campaigns",),
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
    # Rows a job gathers while it builds and returns as outputs at its end, so they pass the stage's gate
    # and publish with it (the models stage: ops.model_registry, ops.model_metrics): {table: [row tuples]}
    collected: dict = field(default_factory=dict)

    def __post_init__(self):
        from portrait.core.validate import validate_once

        validate_once(self.conf)  # a run checks every conf file before it touches a table

    @property
    def catalog(self) -> Catalog:
        """The lake's catalog; one per context (its tag dictionary is parsed once), renewed if lake or conf change."""
        cached = self.__dict__.get("_catalog")
        if cached is None or cached.lake != self.lake or cached.conf is not self.conf or cached.tables_read is not self.tables_read:
            cached = self.__dict__["_catalog"] = Catalog(self.lake, self.conf, tables_read=self.tables_read)
        return cached

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
    """Hold the lock of ``stage``: one run of a stage at a time, whatever its date.

    A second run of the same date (a manual rerun while Airflow runs it) would
    delete the first one's staged copy under it; a second date (a backfill
    beside the daily run) would read the first date's tables half-written (a
    date reads the dates before it: dedup look-back, stitching, day-over-day
    monitoring) and race on the whole-table outputs (``gold.user_index`` hands
    out bitmap positions, the upserted tables are read-merge-written). So it
    is refused at once, naming the holder (docs/reliability.md). On local
    disk ``flock`` is released by the OS when a holder dies; on object storage
    the lock is a lease (``storage.exclusive``), so a killed run leaves it
    behind for at most ``storage.LOCK_LEASE_SECONDS``. Re-entrant within a thread.
    """
    import threading

    path = storage.join(ctx.lake, "_staging", f"{stage}.lock")
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
            f"stage {stage} for {ctx.dt} is refused: stage {stage} is already running ({busy.holder}); "
            "one run of a stage at a time, any date: wait for it to end or stop it, then run again"
        ) from None


def _locked(step):
    """Run ``step(ctx, stage, ...)`` holding the stage's lock for ``ctx.dt``."""

    @functools.wraps(step)
    def locked(ctx: RunContext, stage: str, *args, **kwargs):
        with stage_lock(ctx, stage):
            return step(ctx, stage, *args, **kwargs)

    return locked


FAULT_POINT_ENV = "PORTRAIT_FAULT_POINT"


def fault_point(name: str) -> None:
    """Test hook: SIGKILL this process at the point named by ``$PORTRAIT_FAULT_POINT``.

    Points (``tests/test_faults.py`` kills runs at each): ``{stage}:staged:{table}``
    (build, after that table's staged copy is written), ``{stage}:audited``
    (gate ran and was recorded, verdict not yet saved), ``{stage}:publishing``
    (publish record "publishing" written, no table committed), ``{stage}:published:{table}``
    (after that table's commit) and ``{stage}:recorded`` (publish record written,
    staged copy not yet dropped). Unset in production: one environment lookup.
    """
    if os.environ.get(FAULT_POINT_ENV) == name:
        log.warning("fault point %s: killing process %s (test hook %s)", name, os.getpid(), FAULT_POINT_ENV)
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- publish records
#
# Delta has no multi-table transaction. Each stage publish appends to
# ops.stage_runs a row "publishing" before its first table commit and a row
# "published" (with the versions it published) after its last. A stage whose
# latest row for D is "publishing" is half-published: the stages that read it
# refuse to start for D until it is finished (publish step retried) or rerun.

STAGE_RUNS = "ops.stage_runs"


def publish_app_id(stage: str, dt) -> str:
    """The Delta transaction id of a stage's publish for a date (its version: the staged run)."""
    return f"portrait:{stage}:{dt}"


def _record_stage_run(ctx: RunContext, stage: str, run: int, status: str, versions: dict) -> None:
    from datetime import datetime

    append_rows(
        ctx.lake,
        ctx.conf,
        STAGE_RUNS,
        [
            {
                "stage": stage,
                "run_id": run,
                "status": status,
                "versions": json.dumps(versions, sort_keys=True),
                "recorded_at": datetime.now(UTC),
                "dt": ctx.dt,
            }
        ],
    )


def stage_status(lake: str, conf: Conf, dt=None) -> dict[tuple[str, str], dict]:
    """{(stage, dt): latest ops.stage_runs row} (of ``dt`` only if given); {} if the table was never written."""
    import pyarrow as pa
    from deltalake import DeltaTable

    catalog = Catalog(lake, conf)
    if not catalog.exists(STAGE_RUNS):
        return {}
    path = catalog.spec(STAGE_RUNS).path
    table = DeltaTable(path, storage_options=storage.delta_options(path))
    rows = pa.table(table.to_pyarrow_table(partitions=[("dt", "=", str(dt))] if dt is not None else None)).to_pylist()
    latest: dict[tuple[str, str], dict] = {}
    for row in sorted(rows, key=lambda r: (r["recorded_at"], r["status"] == "published")):
        latest[(row["stage"], str(row["dt"]))] = row
    return latest


def half_published(lake: str, conf: Conf) -> list[dict]:
    """The latest publish record of every (stage, date) whose publish began and did not finish."""
    return [row for row in stage_status(lake, conf).values() if row["status"] != "published"]


def _upstream(stage: Stage) -> list[str]:
    """Every stage ``stage`` depends on, directly or through others, nearest first: a sub-profile reads the
    aggregates and, for what they do not hold (anonymous events, unbuilt landing dates), silver itself."""
    found: list[str] = []
    frontier = list(stage.after)
    while frontier:
        name = frontier.pop(0)
        if name not in found:
            found.append(name)
            frontier += list(stage_named(name).after)
    return found


def check_inputs_published(ctx: RunContext, stage: Stage) -> None:
    """Refuse to start ``stage`` for ``ctx.dt`` unless every stage it reads, directly or not, is wholly published for that date.

    A stage with no publish record on this lake at all (tables written before
    publish records existed, or put there by hand, as some tests do) is not
    checked; one recorded for other dates but not for ``ctx.dt`` is missing.
    """
    needed_stages = _upstream(stage)
    if not needed_stages:
        return
    status = stage_status(ctx.lake, ctx.conf)
    recorded = {name for name, _ in status}
    problems = []
    for needed in needed_stages:
        row = status.get((needed, str(ctx.dt)))
        if row is None:
            if needed in recorded:
                problems.append(f"stage {needed} has not been published for {ctx.dt}")
            else:
                log.warning("stage %s has no publish record in %s: not checked for %s", needed, ctx.lake, ctx.dt)
        elif row["status"] != "published":
            problems.append(
                f"stage {needed} is half-published for {ctx.dt} (run {row['run_id']} began publishing at {row['recorded_at']} "
                f"and did not finish): retry its publish step or rerun it (portrait run --date {ctx.dt} --from {needed} --to {needed})"
            )
    if problems:
        raise StagingError(f"stage {stage.name} for {ctx.dt} cannot start: " + "; ".join(problems))


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


def staging_catalog(ctx: RunContext, run: int | None = None) -> StagedCatalog:
    """The staged copy of ``ctx.stage`` for ``ctx.dt`` (run ``run``, default the manifest's), as a catalog of the declared tables.

    Each table's copy lies inside the published table's folder (tables.StagedCatalog), same storage.
    """
    if run is None:
        run = load_manifest(ctx, ctx.stage)["run"]
    return StagedCatalog(ctx.lake, ctx.conf, stage=ctx.stage, dt=str(ctx.dt), run=run)


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
    """(stage, its job function), with ``ctx`` set to the stage and any earlier staged copy of ``ctx.dt`` removed.

    Refuses (StagingError) a stage whose inputs are not wholly published for ``ctx.dt``.
    """
    stage = stage_named(stage_name)
    check_inputs_published(ctx, stage)
    module_name, function_name = stage.entry_point.split(":")
    job = getattr(importlib.import_module(module_name), function_name)
    ctx.stage = stage.name
    remove_leftovers(ctx)
    return stage, job


def remove_leftovers(ctx: RunContext, scratch: bool = True) -> None:
    """Remove what an earlier run of ``ctx.stage`` for ``ctx.dt`` left in staging (a dead or failed run).

    The staged copies inside each published table go too, except the files a
    table references (those of a publish that committed it: only their staged
    log goes; vacuum removes the files once a later version replaces them).
    """
    path = storage.join(ctx.staging_dir, MANIFEST)
    if storage.is_file(path):
        try:
            old = json.loads(storage.read_text(path))
        except ValueError:  # a manifest cut short by a kill: its copies are found by listing below
            old = {}
        _drop_copies(ctx, old.get("run"), {o["table"]: o["mode"] for o in old.get("outputs", [])})
        storage.remove(path)
    if scratch:
        storage.remove_tree(ctx.staging_dir)


def remove_staged_folder(lake: str, conf: Conf, stage: str, name: str) -> None:
    """Remove ``_staging/{stage}/{name}`` and, for a date folder, the staged copies its manifest names (``remove_leftovers``)."""
    from datetime import date

    try:
        dt = date.fromisoformat(name)
    except ValueError:  # not a date folder: nothing a stage reads
        storage.remove_tree(storage.join(lake, "_staging", stage, name))
        return
    ctx = RunContext(None, lake, dt, conf)
    ctx.stage = stage
    remove_leftovers(ctx)


def _drop_copies(ctx: RunContext, run: int | None, modes: dict[str, str]) -> None:
    from deltalake import DeltaTable

    if run is None:
        return
    catalog = ctx.catalog
    staged = staging_catalog(ctx, run)
    app = publish_app_id(ctx.stage, ctx.dt)
    for table, mode in modes.items():
        committed = False
        if catalog.exists(table):
            path = catalog.spec(table).path
            committed = DeltaTable(path, storage_options=storage.delta_options(path)).transaction_version(app) == run
        staged.drop(table, published=committed and mode != "upsert")
        staged.merged().drop(table, published=committed and mode == "upsert")


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
    """Write ``outputs`` to the staging copy and its manifest (nothing is audited or published).

    The manifest is saved first (run id and outputs, no staged versions yet),
    so the next run of the stage finds and removes what a killed one staged.
    """
    ctx.stage = stage
    remove_leftovers(ctx, scratch=False)  # an earlier staged copy of this date (the scratch the job's rows come from stays)
    run = time.time_ns() // 1000  # microseconds: the staged copies' folder and the publish's Delta transaction version
    staging = staging_catalog(ctx, run)
    manifest = {
        "stage": stage,
        "dt": str(ctx.dt),
        "run": run,
        "outputs": [
            {"table": o.table, "mode": o.mode, "partition_value": None if o.partition_value is None else str(o.partition_value)}
            for o in outputs
        ],
        "staged_versions": None,
        "notes": {},
        "audit": None,
    }
    _save_manifest(ctx, manifest)
    staged, rows = {}, {}
    for output in outputs:
        staged[output.table] = staging.write(ctx.spark, output.df, output.table, "append")
        rows[output.table] = rows.get(output.table, 0) + staging.rows_written(output.table, staged[output.table])
        fault_point(f"{stage}:staged:{output.table}")
    ctx.notes["staged_rows"] = rows  # what the stage produced, per table, whatever the publish mode rewrites
    if ctx.tables_read is not None:  # what it read: each published table's snapshot (its own date filters scan fewer)
        ctx.notes["rows_read"] = {table: ctx.catalog.rows_stored(table, version) for table, version in ctx.tables_read.items()}
    manifest["staged_versions"] = staged
    manifest["notes"] = ctx.notes
    _save_manifest(ctx, manifest)
    return manifest


@_locked
def audit_staged(ctx: RunContext, stage: str) -> list:
    """Audit: run the gate on the staged copy, record it in ops.gate_results, raise GateFailed if it fails."""
    from datetime import datetime

    from portrait import gates

    manifest = load_manifest(ctx, stage)
    if manifest.get("staged_versions") is None:
        raise StagingError(
            f"stage {stage} for {ctx.dt}: the staged copy was not finished (its build was stopped); run its build step again"
        )
    staging = staging_catalog(ctx, manifest["run"])
    declared = ctx.conf.gates
    tables = [o["table"] for o in manifest["outputs"]]
    ungated = [t for t in dict.fromkeys(tables) if t not in declared and ctx.conf.tables.get(t, {}).get("gate") != "none"]
    if ungated:  # conf load refuses this (validate.gate_problems); a conf changed under a run must not slip through
        raise StagingError(f"stage {stage} for {ctx.dt}: no gate declared for {', '.join(ungated)}; nothing published")
    reports = [
        gates.run_gate(ctx.spark, table, staging.read(ctx.spark, table), ctx.dt, ctx.conf, gate_name=stage, lake=ctx.lake)
        for table in dict.fromkeys(tables)
        if table in declared
    ]
    gates.record(ctx.spark, ctx.catalog, reports, ctx.dt)
    fault_point(f"{stage}:audited")
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
    """Publish: commit the audited staged files to the published tables (one commit per table), then drop the copy.

    Nothing is read back or rewritten (an upsert writes its merged rows once,
    as before). Each commit carries the Delta transaction (stage and date, run):
    retried after a crash, it skips the tables already committed and finishes
    the rest from the same audited copy. ops.stage_runs says "publishing"
    before the first commit and "published" after the last.
    """
    manifest = load_manifest(ctx, stage)
    audit = manifest.get("audit")
    if not audit:
        raise StagingError(f"stage {stage} for {ctx.dt}: the staged copy was not audited; run its gate step first")
    if not audit["passed"]:
        raise StagingError(f"stage {stage} for {ctx.dt}: the staged copy failed its gate (see ops.gate_results); nothing published")
    run = manifest["run"]
    staging = staging_catalog(ctx, run)
    current = {table: staging.version(table) for table in audit["staged_versions"]}
    if current != audit["staged_versions"]:
        raise StagingError(
            f"stage {stage} for {ctx.dt}: the staged copy changed after its audit "
            f"({audit['staged_versions']} audited, {current} now); run the gate step again"
        )
    writes: dict[str, tuple[str, str | None]] = {}
    for output in manifest["outputs"]:
        how = (output["mode"], output["partition_value"])
        if writes.setdefault(output["table"], how) != how:
            raise StagingError(
                f"stage {stage} for {ctx.dt}: table {output['table']} is written twice, as {writes[output['table']]} and {how}"
            )
    _record_stage_run(ctx, stage, run, "publishing", {})
    fault_point(f"{stage}:publishing")
    app = publish_app_id(stage, ctx.dt)
    versions = {}
    for table, (mode, partition_value) in writes.items():
        versions[table] = ctx.catalog.publish_staged(ctx.spark, staging, table, mode, partition_value, app, run)
        fault_point(f"{stage}:published:{table}")
    publish_artefacts(
        ctx, stage
    )  # after the tables, before the record: a failed build leaves the stage half-published, its retry builds again
    _record_stage_run(ctx, stage, run, "published", versions)
    fault_point(f"{stage}:recorded")
    _drop_copies(ctx, run, {table: mode for table, (mode, _) in writes.items()})
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
            raise ValueError(f"conf/pipeline.yaml artefacts.{name}.gate: {artefact['gate']!r}; only none (with a gate_reason) is supported")
        started = time.perf_counter()
        module_name, function_name = artefact["build"].split(":")
        built[name] = getattr(importlib.import_module(module_name), function_name)(ctx, artefact)
        seconds = time.perf_counter() - started
        log.info(
            "%s for %s: published artefact %s %s in %.1fs, ungated: %s",
            stage or source,
            ctx.dt,
            name,
            built[name],
            seconds,
            artefact["gate_reason"],
        )
    return built


TASK_FAILURES = "ops.task_failures"
_ARROW_TYPES = {"string": "string", "bigint": "int64", "int": "int32", "double": "float64", "boolean": "bool_", "date": "date32"}


def record_task_failure(lake: str, conf: Conf, row: dict) -> int:
    """Append one row to ops.task_failures; returns the table's new version.

    Written with delta-rs (``deltalake``), not through the engine: failure
    callbacks must work when the engine is what failed, and Airflow may run
    them outside the task process.
    """
    return append_rows(lake, conf, TASK_FAILURES, [row])


def append_rows(lake: str, conf: Conf, table: str, rows: list[dict]) -> int:
    """Append ``rows`` (dicts of declared columns; missing ones null) to ``table`` with delta-rs; its new version.

    For small operational logs written where no engine runs (failure callbacks, the campaign outbox).
    """
    import pyarrow as pa
    from deltalake import write_deltalake

    spec = Catalog(lake, conf).spec(table)
    fields = []
    for column, kind in spec.columns.items():
        kind = str(kind).strip().lower()
        fields.append(pa.field(column, pa.timestamp("us", tz="UTC") if kind == "timestamp" else getattr(pa, _ARROW_TYPES[kind])()))
    schema = pa.schema(fields)
    unknown = sorted({column for row in rows for column in row} - set(spec.columns))
    if unknown:
        raise ValueError(f"{table} has no column {', '.join(unknown)}")
    arrow = pa.Table.from_pylist([{name: row.get(name) for name in spec.columns} for row in rows], schema=schema)
    write_deltalake(
        spec.path, arrow, mode="append", partition_by=list(spec.partition_by) or None, storage_options=storage.delta_options(spec.path)
    )
    return Catalog(lake, conf).version(table)


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
