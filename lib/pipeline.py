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

import importlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from portrait.lib.config import Conf
from portrait.lib.tables import Catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    entry_point: str  # "module:function", imported only when the stage runs
    description: str
    after: tuple[str, ...] = ()  # stages whose published output this one reads


#: The daily pipeline, in dependency order (a stage comes after everything in
#: its ``after``). Plain data, no imports of jobs: the DAG file reads it at parse time.
STAGES: tuple[Stage, ...] = (
    Stage("clean", "portrait.jobs.clean:run", "landing zone -> silver tables + quarantine"),
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
    stage: str = "adhoc"  # set by run_stage

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.lake, self.conf)

    @property
    def staging_dir(self) -> Path:
        return Path(self.lake) / "_staging" / self.stage / str(self.dt)

    def materialize(self, df, name: str):
        """Write an intermediate result to the stage's scratch space and read it back.

        Cuts the query plan: a result used several times (counted, then split
        into tables) is computed once, and later plans stay small - the engine's
        planning time grows quickly with plan size. Removed with the staging copy.
        """
        path = str(self.staging_dir / "_scratch" / name)
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


def publish(ctx: RunContext, stage: str, outputs: list[Output]) -> dict[str, int]:
    """Stage, audit, then publish ``outputs``; raises ``GateFailed`` before publishing anything."""
    from portrait.lib import gates

    staging = Catalog(str(ctx.staging_dir / "tables"), ctx.conf)
    shutil.rmtree(staging.lake, ignore_errors=True)
    for output in outputs:
        staging.write(ctx.spark, output.df, output.table, "append")
    declared = ctx.conf.gates
    reports = [
        gates.run_gate(ctx.spark, output.table, staging.read(ctx.spark, output.table), ctx.dt, ctx.conf, gate_name=stage)
        for output in outputs
        if output.table in declared
    ]
    gates.record(ctx.spark, ctx.catalog, reports, ctx.dt)
    gates.check(reports)
    versions = {
        output.table: ctx.catalog.write(
            ctx.spark, staging.read(ctx.spark, output.table), output.table, output.mode, output.partition_value
        )
        for output in outputs
    }
    shutil.rmtree(ctx.staging_dir, ignore_errors=True)
    return versions


def run_stage(ctx: RunContext, stage_name: str) -> StageResult:
    """Run one stage for ``ctx.dt``: job, gate, publish."""
    stage = next((s for s in STAGES if s.name == stage_name), None)
    if stage is None:
        raise KeyError(f"unknown stage {stage_name!r}; stages are {', '.join(stage_names())}")
    module_name, function_name = stage.entry_point.split(":")
    job = getattr(importlib.import_module(module_name), function_name)
    ctx.stage = stage.name
    shutil.rmtree(ctx.staging_dir, ignore_errors=True)
    started = time.perf_counter()
    outputs = job(ctx)
    versions = publish(ctx, stage.name, outputs)
    seconds = time.perf_counter() - started
    log.info("stage %s for %s published %s in %.1fs", stage.name, ctx.dt, versions, seconds)
    return StageResult(stage.name, ctx.dt, seconds, versions, dict(ctx.notes))


def stages_from(first: str | None = None) -> list[str]:
    """Stage names from ``first`` (inclusive) to the end; all of them when None."""
    names = stage_names()
    if first is None:
        return names
    if first not in names:
        raise KeyError(f"unknown stage {first!r}; stages are {', '.join(names)}")
    return names[names.index(first):]
