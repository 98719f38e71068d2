"""Crashes never yield a wrong table: SIGKILL at named points of build, gate and publish, then a retry or rerun.

One tiny generated lake (100 users, 2 dates). Date 1 is run whole; date 2's
clean and consumption are killed at the points ``pipeline.fault_point`` names
(``PORTRAIT_FAULT_POINT``), each trial in its own process started from a copy
of the lake taken just before the step that holds the point. After each kill:
a stage reading a half-published one refuses to start, ``portrait tables``
shows it, and the retry of the killed step (Airflow's retry; a rerun of the
stage for a build) leaves every table equal to the uninterrupted run's
(order-independent digest) and nothing of the dead run in staging.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest

from portrait.core import pipeline, storage
from portrait.core.config import Conf
from portrait.core.pipeline import RunContext, StagingError
from portrait.core.tables import STAGED_FOLDER, Catalog
from portrait.devtools.generate import generate

D1, D2 = date(2026, 9, 29), date(2026, 9, 30)
CLEAN_TABLES = [
    "silver.users_history",
    "silver.users",
    "silver.addresses",
    "silver.orders",
    "silver.order_items",
    "silver.events",
    "silver.device_map",
    "quarantine.records",
    "ops.reconciliation",
]
UNCOMPARED = {"ops.stage_runs", "ops.task_failures"}  # the publish records themselves; failure callbacks
VOLATILE = {"ops.gate_results": ["checked_at"]}

CHILD = """
import sys
from datetime import date
from portrait.core import engine, pipeline
from portrait.core.config import Conf
spark = engine.get_spark(None, sys.argv[4])
ctx = pipeline.RunContext(spark, sys.argv[1], date.fromisoformat(sys.argv[2]), Conf())
for step in sys.argv[5:]:
    getattr(pipeline, step)(ctx, sys.argv[3])
engine.stop()
"""


def digest(lake: str, conf: Conf) -> dict[str, str]:
    """{table: sha256 of its rows, sorted} for every stored table (read with delta-rs, no engine)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    catalog = Catalog(lake, conf)
    found = {}
    for name in catalog.names():
        if name in UNCOMPARED or not catalog.exists(name):
            continue
        table = pa.table(DeltaTable(catalog.spec(name).path).to_pyarrow_table())
        table = table.drop_columns([c for c in VOLATILE.get(name, []) if c in table.column_names])
        rows = sorted(json.dumps(row, sort_keys=True, default=str) for row in table.to_pylist())
        found[name] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return found


def leftovers(lake: str, conf: Conf, stage: str) -> list[str]:
    """Staged copies of ``stage`` still holding a log, and its staging folder, after a finished run."""
    catalog = Catalog(lake, conf)
    left = []
    for name in catalog.names():
        folder = Path(catalog.spec(name).path, STAGED_FOLDER, stage)
        left += [str(log.parent) for log in folder.glob("*/*/_delta_log")]
    if storage.is_dir(storage.join(lake, "_staging", stage)):
        left += [p for p in storage.list_dir(storage.join(lake, "_staging", stage)) if not p.endswith(".lock")]
    return left


def restore(template: Path, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)


def kill_at(work: Path, point: str, stage: str, steps: list[str], remote: str, dt: date = D2) -> None:
    """Run ``steps`` of ``stage`` in a process of its own (a client of the shared engine ``remote``), killed at ``point``."""
    env = {**os.environ, pipeline.FAULT_POINT_ENV: point}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(work), str(dt), stage, remote, *steps],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, f"fault point {point} was not reached (rc {done.returncode}): {done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """One Sail server the killed processes are clients of: each trial then pays no engine start."""
    from portrait.core.servers import start_sail_server

    server = start_sail_server(tmp_path_factory.mktemp("sail") / "sail.log")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def lakes(spark, tmp_path_factory):
    """Templates (copies of the lake before each step of date 2) and the uninterrupted run's digests."""
    root = tmp_path_factory.mktemp("faults")
    conf = Conf()
    work = root / "lake"
    generate(str(work), users=100, days=2, seed=11, end_date=D2)
    for stage in ("clean", "consumption"):
        pipeline.run_stage(RunContext(spark, str(work), D1, conf), stage)
    templates = {}

    def keep(name):
        templates[name] = root / name
        shutil.copytree(work, templates[name])

    ctx, reference = RunContext(spark, str(work), D2, conf), {}
    for stage in ("clean", "consumption"):
        for phase, step in (("build", pipeline.build_staged), ("gate", pipeline.audit_staged), ("publish", pipeline.publish_staged)):
            keep(f"{stage}.{phase}")  # the lake as the step finds it: where a trial killed at that step restarts
            step(ctx, stage)
        reference[stage] = digest(str(work), conf)
    assert reference["clean"]["silver.orders"] == reference["consumption"]["silver.orders"]
    return work, templates, reference, conf


#: Retry after a kill in each phase: the step killed and those after it (the build's retry is a rerun).
STEPS = {
    "build": ["build_staged", "audit_staged", "publish_staged"],
    "gate": ["audit_staged", "publish_staged"],
    "publish": ["publish_staged"],
}


def points(stage: str, tables: list[str]) -> list[tuple[str, str]]:
    """(phase, point) of ``stage``: build after each staged table, gate, publish before, between and after the commits."""
    found = [("build", f"{stage}:staged:{t}") for t in dict.fromkeys([tables[0], tables[len(tables) // 2], tables[-1]])]
    found += [("gate", f"{stage}:audited"), ("publish", f"{stage}:publishing")]
    found += [("publish", f"{stage}:published:{t}") for t in tables]
    return [*found, ("publish", f"{stage}:recorded")]


TRIALS = [("clean", *p) for p in points("clean", CLEAN_TABLES)] + [
    ("consumption", *p) for p in points("consumption", ["profile.consumption"])
]


@pytest.mark.slow
def test_a_kill_at_any_point_is_repaired_by_the_retry_and_no_later_stage_runs_in_between(spark, lakes, remote, capsys):
    work, templates, reference, conf = lakes
    assert len(TRIALS) >= 20 and len(set(TRIALS)) == len(TRIALS)
    started, seen = time.perf_counter(), []
    for stage, phase, point in TRIALS:
        restore(templates[f"{stage}.{phase}"], work)
        kill_at(work, point, stage, STEPS[phase], remote)
        half = {(row["stage"], str(row["dt"])) for row in pipeline.half_published(str(work), conf)}
        midway = phase == "publish" and not point.endswith(":recorded")
        assert ((stage, str(D2)) in half) == midway, f"{point}: half-published shown {half}"
        if stage == "clean" and not point.endswith(":recorded"):
            with pytest.raises(StagingError, match="stage clean (is half-published|has not been published) for 2026-09-30"):
                pipeline.check_inputs_published(RunContext(None, str(work), D2, conf), pipeline.stage_named("consumption"))
        ctx = RunContext(spark, str(work), D2, conf)
        if phase == "build":
            pipeline.run_stage(ctx, stage)  # a rerun removes the dead run's staged copies first
        else:
            for step in STEPS[phase]:
                getattr(pipeline, step)(ctx, stage)
        assert digest(str(work), conf) == reference[stage], f"{point}: tables differ from the uninterrupted run"
        assert leftovers(str(work), conf, stage) == [], f"{point}: the dead run left staged copies"
        assert pipeline.half_published(str(work), conf) == []
        seen.append(point)
    with capsys.disabled():
        print(f"\n{len(seen)} fault points killed and repaired in {time.perf_counter() - started:.0f}s: " + ", ".join(seen))


def test_defect_1_a_stage_killed_mid_publish_is_refused_downstream_shown_and_finished_by_the_retry(spark, lakes, remote):
    """Issue 17 defect 1: killed after silver.orders was committed, clean is half-published."""
    work, templates, reference, conf = lakes
    restore(templates["clean.publish"], work)
    catalog = Catalog(str(work), conf)
    before = {t: catalog.version(t) for t in CLEAN_TABLES}
    kill_at(work, "clean:published:silver.orders", "clean", ["publish_staged"], remote)
    after = {t: catalog.version(t) for t in CLEAN_TABLES}
    moved = [t for t in CLEAN_TABLES if after[t] != before[t]]
    assert moved == CLEAN_TABLES[: CLEAN_TABLES.index("silver.orders") + 1]  # tables before it committed, the rest untouched
    tables = subprocess.run(
        [str(Path(sys.executable).parent / "portrait"), "tables", "--lake", str(work)], capture_output=True, text=True, timeout=120
    )
    assert "HALF-PUBLISHED: stage clean for 2026-09-30" in tables.stdout, tables.stdout + tables.stderr
    for later in ("consumption", "behavior"):
        with pytest.raises(StagingError, match=rf"stage {later} for 2026-09-30 cannot start: stage clean is half-published"):
            pipeline.run_stage(RunContext(spark, str(work), D2, conf), later)
    versions = pipeline.publish_staged(RunContext(spark, str(work), D2, conf), "clean")  # the publish task's retry
    assert {t: v for t, v in versions.items() if t in moved} == {t: after[t] for t in moved}  # committed ones left as they were
    assert digest(str(work), conf) == reference["clean"]
    assert pipeline.half_published(str(work), conf) == []


def test_staged_files_are_published_as_they_are_and_a_retried_append_adds_them_once(spark, lakes, tmp_path):
    """No rewrite: the published partition is the staged files themselves; the same run's append commits once."""
    from deltalake import DeltaTable

    work, templates, _, conf = lakes
    restore(templates["consumption.publish"], work)
    catalog = Catalog(str(work), conf)
    ctx = RunContext(spark, str(work), D2, conf)
    staged = pipeline.staging_catalog(ctx, pipeline.load_manifest(ctx, "consumption")["run"])
    staged_files, _ = staged.add_actions("profile.consumption", relative_to=catalog.spec("profile.consumption").path)
    pipeline.publish_staged(ctx, "consumption")
    table = DeltaTable(catalog.spec("profile.consumption").path)
    published = {a.path for a in staged_files}
    assert published and published <= set(_relative_files(table))
    assert all(path.startswith(f"{STAGED_FOLDER}/consumption/{D2}/") for path in published)

    # append mode (ops tables written by a stage): the transaction makes a retried publish a no-op
    lake = str(tmp_path / "lake")
    appender = Catalog(lake, conf)
    rows = catalog.read(spark, "ops.reconciliation").where(f"dt = DATE'{D2}'")
    copy = pipeline.StagedCatalog(lake, conf, stage="adhoc", dt=str(D2), run=42)
    copy.write(spark, rows, "ops.reconciliation", "append")
    first = appender.publish_staged(spark, copy, "ops.reconciliation", "append", None, "portrait:adhoc:x", 42)
    again = appender.publish_staged(spark, copy, "ops.reconciliation", "append", None, "portrait:adhoc:x", 42)
    assert again == first
    assert appender.read(spark, "ops.reconciliation").count() == rows.count() > 0


def _relative_files(table):
    import pyarrow as pa

    return pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()


def test_the_next_run_of_a_stage_removes_what_a_dead_run_staged(spark, lakes):
    """Issue 17: leftovers of a dead run in staging (inside the tables too) go with the next run of that stage."""
    work, templates, reference, conf = lakes
    restore(templates["consumption.gate"], work)  # consumption staged for D2, then the process died
    dead = leftovers(str(work), conf, "consumption")
    assert any(STAGED_FOLDER in path for path in dead) and "2026-09-30" in dead
    pipeline.run_stage(RunContext(spark, str(work), D2, conf), "consumption")
    assert leftovers(str(work), conf, "consumption") == []
    assert not any(Path(path).exists() for path in dead if STAGED_FOLDER in path)  # never published: removed whole
    assert digest(str(work), conf) == reference["consumption"]
