"""The Airflow DAGs, with real Airflow: a SQLite metadata DB in a temporary AIRFLOW_HOME.

Airflow runs in subprocesses (a driver script below) so that its configuration,
ORM and the embedded engine of each ``dag.test()`` stay out of the pytest
process, and so that a run that does not exit (the Sail hang) fails the test
instead of hanging it. The tests read results from the lake with ``deltalake``.

The tests of this module build on each other, in file order: one date runs end
to end, a second date with broken input fails at its gate, and the same date
succeeds after the input is fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

from portrait.core.config import Conf
from portrait.core.pipeline import STAGES
from portrait.core.tables import Catalog

pytestmark = pytest.mark.airflow  # real Airflow: dags test, the CLI, parsing

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
DAG_FILE = DAGS / "portrait_daily.py"
PYTHON = sys.executable
D1, D2 = date(2026, 7, 1), date(2026, 7, 2)
STEPS = ("build", "gate", "publish")
#: What a failing gate may change: the gate's own findings and the failure log.
AUDIT_LOGS = {"ops.gate_results", "ops.task_failures"}
RUN_TIMEOUT = (
    900  # seconds; a dag.test that does not exit (engine not stopped) fails here (a whole run of 15 stages takes 2-7 min on 2 loaded cores)
)

DRIVER = textwrap.dedent(
    '''
    """Runs inside a subprocess with AIRFLOW_HOME etc. set; writes its findings as JSON to argv[2]."""
    import json, sys, time

    mode, out = sys.argv[1], sys.argv[2]
    result = {}
    if mode == "setup":  # what `airflow db migrate`, `airflow pools set` and `airflow variables set` do
        from airflow.models.pool import Pool
        from airflow.models.variable import Variable
        from airflow.utils import db

        db.upgradedb()
        Pool.create_or_update_pool("portrait", 2, "portrait engine processes", include_deferred=False)
        Variable.set("portrait_lake", sys.argv[3])
        result["ok"] = True
    elif mode == "graph":
        import os

        from airflow.dag_processing.dagbag import DagBag
        from airflow.serialization.encoders import coerce_to_core_timetable
        from airflow.timetables.base import TimeRestriction

        started = time.perf_counter()
        bag = DagBag(dag_folder=sys.argv[3])
        result["parse_seconds"] = time.perf_counter() - started
        result["import_errors"] = {str(k): str(v) for k, v in bag.import_errors.items()}
        result["dag_ids"] = sorted(bag.dag_ids)
        dag = bag.get_dag("portrait_daily")
        result["tasks"] = {
            t.task_id: {
                "downstream": sorted(t.downstream_task_ids), "pool": t.pool, "retries": t.retries,
                "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                "backoff": t.retry_exponential_backoff, "callbacks": len(t.on_failure_callback or ()),
            }
            for t in dag.tasks
        }
        result["dag"] = {
            "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
            "dagrun_timeout": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
            "start_date": dag.start_date.isoformat(), "has_failure_callback": bool(dag.on_failure_callback),
        }
        timetable = coerce_to_core_timetable(dag.timetable)
        info, runs = None, []
        for _ in range(3):
            info = timetable.next_dagrun_info(
                last_automated_data_interval=info.data_interval if info else None,
                restriction=TimeRestriction(dag.start_date, None, True),
            )
            runs.append({"logical_date": info.logical_date.isoformat(), "run_after": info.run_after.isoformat()})
        result["first_runs"] = runs
        module = next(m for name, m in sys.modules.items() if name.endswith("portrait_daily"))  # as DagBag loaded it
        import pendulum
        result["business_dates"] = {
            "scheduled": str(module.business_date(pendulum.parse(runs[0]["logical_date"]))),
            "shanghai_midnight": str(module.business_date(pendulum.datetime(2026, 7, 1, tz="Asia/Shanghai"))),
            "no_logical_date": str(module.business_date(None, pendulum.datetime(2026, 7, 2, 2, 5, tz="Asia/Shanghai"))),
        }
        os.environ.update(AIRFLOW_VAR_PORTRAIT_LAKE="/from/the/variable", PORTRAIT_LAKE="/from/the/env",
                          AIRFLOW_VAR_PORTRAIT_SPARK_REMOTE="sc://spark.example:15002")
        result["lake"] = module.resolve_lake()
        result["remote"] = module.resolve_remote()
        os.environ["AIRFLOW_VAR_PORTRAIT_SPARK_REMOTE"] = "sail"
        result["remote_sail"] = module.resolve_remote()
        del os.environ["AIRFLOW_VAR_PORTRAIT_SPARK_REMOTE"]
        os.environ["AIRFLOW_CONN_PORTRAIT_SPARK_REMOTE"] = json.dumps(
            {"conn_type": "spark_connect", "host": "spark.example", "port": 15002, "password": "secret-token"})
        result["remote_connection"] = module.resolve_remote()
        del os.environ["AIRFLOW_CONN_PORTRAIT_SPARK_REMOTE"]

        # which errors are retried: run steps that must fail, and see how they fail
        from portrait.core import engine

        os.environ["AIRFLOW_VAR_PORTRAIT_LAKE"] = sys.argv[4]
        context = {"logical_date": pendulum.datetime(2026, 7, 9, tz="UTC"), "dag_run": None}
        outcomes = {}
        for name, remote in (("publish_unstaged", "sail"), ("engine_unreachable", "sc://127.0.0.1:9")):
            os.environ["AIRFLOW_VAR_PORTRAIT_SPARK_REMOTE"] = remote
            try:
                module.run_step("clean", "publish", context)
                outcomes[name] = ["no error"]
            except Exception as exc:
                outcomes[name] = [type(exc).__name__, type(exc.__cause__).__name__ if exc.__cause__ else None,
                                  module.failure_kind(exc), engine.current_engine()]
        result["outcomes"] = outcomes
    elif mode == "maintain":
        from portrait.core.maintenance import maintain

        result["done"] = maintain(sys.argv[4])
    elif mode == "test":
        import pendulum
        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(dag_folder=sys.argv[3]).get_dag("portrait_daily")
        started = time.perf_counter()
        run = dag.test(logical_date=pendulum.parse(sys.argv[4], tz="UTC"))
        result["seconds"] = time.perf_counter() - started
        result["state"] = str(run.state)
        result["tis"] = {ti.task_id: [str(ti.state), ti.try_number] for ti in run.get_task_instances()}
    with open(out, "w") as handle:
        json.dump(result, handle)
    '''
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def af(tmp_path_factory):
    """A migrated Airflow home, the pools and the lake Variable; a generated landing zone."""
    from portrait.devtools.generate import generate

    root = tmp_path_factory.mktemp("airflow")
    lake = root / "lake"
    home = root / "home"
    home.mkdir()
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PORTRAIT_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        # the Variable portrait_lake (set below) names the lake; the env fallback is the
        # same lake because the DAG-level failure callback of dag.test() runs outside a task
        PORTRAIT_LAKE=str(lake),
    )
    generate(lake, users=150, days=2, seed=3, end_date=D2)
    state = {"root": root, "lake": lake, "env": env, "driver": driver, "logs": root / "logs"}
    state["logs"].mkdir()
    _driver(state, "setup", str(lake))
    (root / "probe-lake" / "landing").mkdir(parents=True)  # an empty lake: a path with no landing zone is refused first
    state["graph"] = _driver(state, "graph", str(DAGS), str(root / "probe-lake"))
    return state


def _run(cmd, state, name, timeout=RUN_TIMEOUT):
    log = state["logs"] / f"{name}.log"
    with log.open("w") as handle:
        try:
            proc = subprocess.run(cmd, env=state["env"], cwd=state["root"], stdout=handle, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name}: did not exit within {timeout}s (see {log}); tail:\n{_tail(log)}")
    if proc.returncode != 0:
        pytest.fail(f"{name}: exit {proc.returncode}; tail of {log}:\n{_tail(log)}")
    return log


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _driver(state, mode, *args, timeout=RUN_TIMEOUT) -> dict:
    name = f"{len(list(state['logs'].iterdir())):02d}-{mode}"
    out = state["logs"] / f"{name}.json"
    _run([PYTHON, str(state["driver"]), mode, str(out), *args], state, name, timeout)
    return json.loads(out.read_text())


def _dag_test(state, dt: date) -> dict:
    return _driver(state, "test", str(DAGS), dt.isoformat())


def _catalog(lake) -> Catalog:
    return Catalog(str(lake), Conf())


def _versions(lake) -> dict[str, int]:
    catalog = _catalog(lake)
    return {name: catalog.version(name) for name in catalog.names() if catalog.exists(name)}


def _rows(lake, table: str, column: str | None = None, value=None) -> list[dict]:
    from deltalake import DeltaTable

    path = _catalog(lake).spec(table).path
    if not Path(path, "_delta_log").is_dir():
        return []
    filters = [(column, "=", value)] if column else None
    return DeltaTable(path).to_pyarrow_table(filters=filters).to_pylist()


def _fingerprint(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in rows)


def _expected_task_ids() -> set[str]:
    return {f"{stage.name}.{step}" for stage in STAGES for step in STEPS}


# --------------------------------------------------------------------------- the DAG file


def test_dag_file_is_thin(tmp_path):
    """Importing the DAG file starts no engine, imports no pyspark, touches no lake, takes well under a second."""
    lake = tmp_path / "must-not-exist"
    probe = textwrap.dedent(
        f"""
        import importlib.util, json, os, sys, time
        started = time.perf_counter()
        import airflow.sdk  # Airflow itself: already loaded in the DAG processor
        airflow_seconds = time.perf_counter() - started
        before = set(sys.modules)
        started = time.perf_counter()
        spec = importlib.util.spec_from_file_location("portrait_daily_probe", {str(DAG_FILE)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag_seconds = time.perf_counter() - started
        heavy = ("pyspark", "pysail", "great_expectations", "deltalake", "pandas", "pyarrow", "jobs", "portrait.gates")
        loaded = sorted(m for m in set(sys.modules) - before if m.startswith(heavy))
        print(json.dumps({{"airflow": airflow_seconds, "dag_file": dag_seconds, "loaded": loaded,
                          "pyspark": "pyspark" in sys.modules, "tasks": len(module.dag.tasks)}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PORTRAIT_"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "home"), AIRFLOW__CORE__LOAD_EXAMPLES="False", PORTRAIT_LAKE=str(lake))
    proc = subprocess.run([PYTHON, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"import airflow.sdk {found['airflow']:.2f}s, then the DAG file {found['dag_file']:.3f}s")
    assert not found["pyspark"], "importing the DAG file imported pyspark"
    assert found["loaded"] == [], f"the DAG file imported heavy modules: {found['loaded']}"
    assert found["dag_file"] < 0.5, f"the DAG file took {found['dag_file']:.2f}s to import"
    assert found["tasks"] == len(STAGES) * len(STEPS)
    assert not lake.exists(), "importing the DAG file touched the lake"


def test_dagbag_imports_and_task_graph_is_stages_with_their_gates(af):
    graph = af["graph"]  # parsed by DagBag in the fixture's Airflow home
    print(f"DagBag parsed the dags/ folder in {graph['parse_seconds']:.2f}s")
    assert graph["import_errors"] == {}
    assert "portrait_daily" in graph["dag_ids"]
    tasks = graph["tasks"]
    assert set(tasks) == _expected_task_ids()

    # edges: build -> gate -> publish inside a stage; publish of each `after` stage -> build
    expected = {task_id: set() for task_id in _expected_task_ids()}
    for stage in STAGES:
        expected[f"{stage.name}.build"].add(f"{stage.name}.gate")
        expected[f"{stage.name}.gate"].add(f"{stage.name}.publish")
        for upstream in stage.after:
            expected[f"{upstream}.publish"].add(f"{stage.name}.build")
    assert {task_id: set(t["downstream"]) for task_id, t in tasks.items()} == expected

    for task_id, t in tasks.items():
        assert t["pool"] == "portrait", f"{task_id}: one pool; gates run in parallel"
        assert t["retries"] >= 1 and t["backoff"] > 1, f"{task_id}: engine errors must be retried with back-off"
        assert t["timeout"] and t["timeout"] <= 3600, f"{task_id}: needs an execution_timeout"
        assert t["callbacks"] >= 1, f"{task_id}: needs an on_failure_callback"
    dag = graph["dag"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1 and dag["dagrun_timeout"] and dag["has_failure_callback"]

    # one run per business date: logical date = D 00:00 UTC, fired at 02:00 Shanghai on D+1
    assert graph["first_runs"][:2] == [
        {"logical_date": "2026-07-01T00:00:00+00:00", "run_after": "2026-07-01T18:00:00+00:00"},
        {"logical_date": "2026-07-02T00:00:00+00:00", "run_after": "2026-07-02T18:00:00+00:00"},
    ]
    assert graph["business_dates"] == {"scheduled": "2026-07-01", "shanghai_midnight": "2026-07-01", "no_logical_date": "2026-07-01"}
    assert graph["lake"] == "/from/the/variable"  # the Variable wins over PORTRAIT_LAKE
    assert graph["remote"] == "sc://spark.example:15002"
    assert graph["remote_sail"] is None  # embedded engine
    assert graph["remote_connection"] == "sc://spark.example:15002/;token=secret-token"


def test_deterministic_errors_fail_at_once_and_engine_errors_are_retried(af):
    """A step that cannot succeed on retry raises AirflowFailException; an unreachable engine is retried.

    Either way the engine is stopped when the step ends (else the task process hangs on exit).
    """
    outcomes = af["graph"]["outcomes"]
    assert outcomes["publish_unstaged"] == ["AirflowFailException", "StagingError", "data_or_code", None]
    assert outcomes["engine_unreachable"] == ["EngineError", None, "transient", None]


# --------------------------------------------------------------------------- runs


def test_dag_test_runs_one_date_end_to_end(af):
    run = _dag_test(af, D1)
    print(f"dag.test {D1}: {run['state']} in {run['seconds']:.0f}s")
    not_ok = {task_id: state for task_id, state in run["tis"].items() if state[0] != "success"}
    assert run["state"] == "success" and not not_ok, f"tasks not successful: {not_ok}"
    assert set(run["tis"]) == _expected_task_ids()

    lake = af["lake"]
    catalog = _catalog(lake)
    assert _rows(lake, "silver.events", "landing_dt", D1), "no events published for the date"
    assert _rows(lake, "silver.orders", "landing_dt", D1), "no orders published for the date"
    gate_rows = _rows(lake, "ops.gate_results", "dt", D1)
    gates = {row["gate"] for row in gate_rows}
    assert "clean" in gates and gates <= {stage.name for stage in STAGES}
    assert not [r for r in gate_rows if not r["success"] and not str(r["observed"]).startswith("[")], "a critical expectation failed"
    assert not _rows(lake, "ops.task_failures", "dt", D1)
    assert not list((lake / "_staging").glob(f"*/{D1}")), "staged copies are removed after publishing"
    assert catalog.exists("ops.reconciliation")


def with_negative_amounts(text: str) -> tuple[str, int]:
    """Landing lines with every order's amount made negative (the gate must refuse them), and how many were."""
    lines, broken = [], 0
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        if isinstance(record, dict) and isinstance(record.get("amount"), (int, float)):
            record["amount"] = -abs(record["amount"]) - 1
            broken += 1
        lines.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(lines) + "\n", broken


def test_broken_input_fails_at_the_gate_and_publishes_nothing(af):
    """Every order of D2 has a negative amount: all quarantined, so the clean gate's quarantine ratio fails."""
    lake = af["lake"]
    folder = lake / "landing" / "orders" / f"dt={D2}"
    af["orders_backup"] = {path: path.read_bytes() for path in folder.glob("*.jsonl")}
    broken = 0
    for path, data in af["orders_backup"].items():
        text, count = with_negative_amounts(data.decode("utf-8"))
        path.write_text(text, encoding="utf-8")
        broken += count
    assert broken > 0
    before = _versions(lake)

    run = _dag_test(af, D2)
    tis = run["tis"]
    assert run["state"] == "failed"
    assert tis["clean.build"][0] == "success"
    assert tis["clean.gate"] == ["failed", 1], "a failed gate must fail at once, without retries"
    assert tis["clean.publish"][0] == "upstream_failed"
    assert {task_id for task_id, (state, _) in tis.items() if state == "upstream_failed"} == _expected_task_ids() - {
        "clean.build",
        "clean.gate",
    }

    after = _versions(lake)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed <= AUDIT_LOGS, f"published tables changed despite the failed gate: {changed - AUDIT_LOGS}"
    assert not _rows(lake, "silver.orders", "landing_dt", D2) and not _rows(lake, "silver.events", "landing_dt", D2)

    findings = [r for r in _rows(lake, "ops.gate_results", "dt", D2) if not r["success"]]
    assert any(r["table_name"] == "ops.reconciliation" and r["column_name"] == "quarantine_ratio_within_limit" for r in findings), findings
    failures = _rows(lake, "ops.task_failures", "dt", D2)
    gate_failure = [r for r in failures if r["task_id"] == "clean.gate"]
    assert gate_failure and gate_failure[0]["kind"] == "gate" and gate_failure[0]["state"] == "failed"
    assert "quarantine_ratio_within_limit" in gate_failure[0]["error"]
    assert "data docs" in gate_failure[0]["error"] and (lake / "ops" / "data_docs" / "index.html").is_file()
    assert any(r["step"] == "dag_run" for r in failures)
    manifest = json.loads((lake / "_staging" / "clean" / str(D2) / "manifest.json").read_text())
    assert manifest["audit"]["passed"] is False  # the staged rows stay for inspection


def test_rerun_after_fixing_the_input_succeeds_and_leaves_other_dates_untouched(af):
    lake = af["lake"]
    assert "orders_backup" in af, "needs the broken run before it"
    for path, data in af["orders_backup"].items():
        path.write_bytes(data)
    catalog = _catalog(lake)
    partitioned = [name for name in catalog.names() if catalog.exists(name) and catalog.spec(name).run_partition]
    d1_before = {name: _fingerprint(_rows(lake, name, catalog.spec(name).run_partition, D1)) for name in partitioned}

    run = _dag_test(af, D2)  # dag.test clears the date's task instances and runs them again
    print(f"dag.test {D2} after the fix: {run['state']} in {run['seconds']:.0f}s")
    not_ok = {task_id: state for task_id, state in run["tis"].items() if state[0] != "success"}
    assert run["state"] == "success" and not not_ok, f"tasks not successful: {not_ok}"

    d1_after = {name: _fingerprint(_rows(lake, name, catalog.spec(name).run_partition, D1)) for name in partitioned}
    touched = [name for name in partitioned if d1_before[name] != d1_after[name]]
    assert not touched, f"rerunning {D2} changed {D1} rows of {touched}"
    assert _rows(lake, "silver.orders", "landing_dt", D2)
    clean_gate = [r for r in _rows(lake, "ops.gate_results", "dt", D2) if r["gate"] == "clean"]
    assert clean_gate and all(r["success"] or str(r["observed"]).startswith("[") for r in clean_gate)
    assert not list((lake / "_staging").glob(f"*/{D2}"))


def test_weekly_maintenance_compacts_and_vacuums_keeping_time_travel(af):
    """dags/portrait_maintenance.py: same rows after compaction, earlier versions still readable."""
    from deltalake import DeltaTable

    lake = af["lake"]
    assert "portrait_maintenance" in af["graph"]["dag_ids"]
    catalog = _catalog(lake)
    tables = [name for name in catalog.names() if catalog.exists(name)]
    before = {name: (_fingerprint(_rows(lake, name)), catalog.version(name)) for name in tables}
    done = _driver(af, "maintain", str(DAGS / "portrait_maintenance.py"), str(lake))["done"]
    assert set(done) == set(tables)
    for name in tables:
        rows, version = before[name]
        assert _fingerprint(_rows(lake, name)) == rows, f"compaction changed the rows of {name}"
        DeltaTable(catalog.spec(name).path, version=version).to_pyarrow_table()  # time travel to before the compaction


# --------------------------------------------------------------------------- publish refuses what was not audited


def test_publish_refuses_a_staged_copy_that_was_not_audited_failed_or_changed(tmp_path):
    """Forcing a publish task (e.g. marking its gate success in the UI) cannot publish unaudited rows."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from portrait.core.pipeline import RunContext, StagingError, publish_staged, staging_catalog

    ctx = RunContext(spark=None, lake=str(tmp_path), dt=D1, conf=Conf())  # refused before any engine work
    with pytest.raises(StagingError, match="no staged copy"):
        publish_staged(ctx, "clean")

    ctx.stage = "clean"
    path = staging_catalog(ctx, 1).spec("ops.reconciliation").path
    write_deltalake(path, pa.table({"source": ["orders"]}))
    manifest = {
        "stage": "clean",
        "dt": str(D1),
        "run": 1,
        "outputs": [{"table": "ops.reconciliation", "mode": "partition", "partition_value": str(D1)}],
        "staged_versions": {"ops.reconciliation": 0},
        "notes": {},
        "audit": None,
    }
    write = lambda: (Path(ctx.staging_dir) / "manifest.json").write_text(json.dumps(manifest))  # noqa: E731
    Path(ctx.staging_dir).mkdir(parents=True)
    write()
    with pytest.raises(StagingError, match="not audited"):
        publish_staged(ctx, "clean")
    manifest["audit"] = {"passed": False, "staged_versions": {"ops.reconciliation": 0}}
    write()
    with pytest.raises(StagingError, match="failed its gate"):
        publish_staged(ctx, "clean")
    manifest["audit"] = {"passed": True, "staged_versions": {"ops.reconciliation": 0}}
    write()
    write_deltalake(path, pa.table({"source": ["events"]}), mode="append")  # re-staged after the audit: version 1
    with pytest.raises(StagingError, match="changed after its audit"):
        publish_staged(ctx, "clean")
    assert not _catalog(tmp_path).exists("ops.reconciliation")


# --------------------------------------------------------------------------- under a real scheduler

AIRFLOW = str(Path(PYTHON).with_name("airflow"))
DOC = REPO / "docs" / "airflow.md"
SCHEDULER_TIMEOUT = 900  # seconds for one run of the tiny lake under the scheduler (about 2 min idle; 300 s ran out at load 25-40)


#: Commands docs/airflow.md names in the text but that are no steps to run: the processes and the one never to use.
NOT_STEPS = {"airflow scheduler", "airflow dag-processor", "airflow api-server", "airflow triggerer", "airflow standalone",
             "airflow dags trigger --logical-date D"}  # fmt: skip


def _doc_commands() -> tuple[dict[str, list[str]], set[str]]:
    """The `airflow` commands of docs/airflow.md's code blocks by test block (``<!-- airflow-test: NAME -->``; else
    "untested"), and those named inline in the text."""
    import re

    blocks: dict[str, list[str]] = {}
    text = DOC.read_text()
    for match in re.finditer(r"(?:<!-- airflow-test: (\w+) -->\n)?```bash\n(.*?)```", text, re.S):
        name, body = match.group(1) or "untested", match.group(2).replace("\\\n", " ")
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("airflow "):
                blocks.setdefault(name, []).append(line)
    inline = {" ".join(c.split()) for c in re.findall(r"`(airflow\s[^`]+)`", text)}
    return blocks, inline


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _db(home: Path, query: str, *args) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        return db.execute(query, args).fetchall()


def _latest_scheduled_date(env) -> date:
    """The business date the scheduler creates on unpausing (catch-up off): asked of the DAG's own timetable."""
    probe = textwrap.dedent(
        f"""
        import sys
        from airflow.dag_processing.dagbag import DagBag
        from airflow.serialization.encoders import coerce_to_core_timetable
        from airflow.timetables.base import TimeRestriction
        dag = DagBag(dag_folder={str(DAGS)!r}).get_dag("portrait_daily")
        info = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
            last_automated_data_interval=None, restriction=TimeRestriction(dag.start_date, None, dag.catchup))
        print("DATE", info.logical_date.date(), dag.catchup)
        """
    )
    proc = subprocess.run([PYTHON, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("DATE "))
    _, found, catchup = line.split()
    assert catchup == "False", "catch-up must be off by default"
    return date.fromisoformat(found)


@pytest.mark.airflow
@pytest.mark.slow
def test_real_scheduler_runs_reruns_and_backfills_a_date(tmp_path):
    """scheduler + dag-processor + api-server (LocalExecutor, SQLite): every command of docs/airflow.md, for real.

    Unpausing schedules the latest business date only (catch-up off), it runs
    to success; clearing ``clean.build`` with downstream reruns it to success;
    the backfill commands of the doc create what they say. Every process
    started is stopped (its process group).
    """
    import time as clock

    from portrait.devtools.generate import generate
    from portrait.devtools.scheduler_bench import airflow_env, stop_groups, write_local_settings

    blocks, inline = _doc_commands()
    assert "untested" not in blocks, f"docs/airflow.md has airflow commands no test runs: {blocks.get('untested')}"
    steps = {" ".join(c.split()) for commands in blocks.values() for c in commands}
    assert inline - NOT_STEPS <= steps, f"docs/airflow.md names airflow commands no test runs: {inline - NOT_STEPS - steps}"
    home, lake, logs = tmp_path / "home", tmp_path / "lake", tmp_path / "logs"
    home.mkdir(), logs.mkdir()
    port = _free_port()
    env = airflow_env(Path(PYTHON).parent, home, DAGS, lake, port)
    env.update(LAKE=str(lake), TOKEN="not-a-real-token")
    write_local_settings(home)  # as the deployment guide has it: heavy imports paid once in the scheduler

    def run_block(name: str) -> list[str]:
        outputs = []
        for command in blocks[name]:
            proc = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=180)
            assert proc.returncode == 0, f"docs/airflow.md ({name}): `{command}` exit {proc.returncode}\n{proc.stderr[-3000:]}"
            outputs.append(proc.stdout)
        return outputs

    def wait_for(what: str, predicate, timeout: float):
        deadline = clock.monotonic() + timeout
        while clock.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            for proc in procs:
                assert proc.poll() is None, f"{proc.args} exited ({proc.returncode}) while waiting for {what}; see {logs}"
            clock.sleep(2)
        pytest.fail(f"timed out after {timeout}s waiting for {what}; logs in {logs}")

    def run_states():
        return _db(home, "SELECT logical_date, state, run_type FROM dag_run WHERE dag_id = 'portrait_daily' ORDER BY logical_date")

    def task_times(run_id=None):
        rows = _db(home, "SELECT task_id, state, duration, try_number FROM task_instance WHERE dag_id = 'portrait_daily'")
        return {task_id: (state, duration, tries) for task_id, state, duration, tries in rows}

    started = clock.monotonic()
    setup_out = run_block("setup")
    d = _latest_scheduled_date(env)
    env.update(D=str(d), D1=str(d.fromordinal(d.toordinal() - 1)))
    generate(lake, users=100, days=2, seed=5, end_date=d)
    assert "portrait" in setup_out[2] and str(lake) in setup_out[4]
    connection = json.loads(setup_out[-1])
    assert connection[0]["conn_type"] == "spark_connect" and connection[0]["host"] == "spark-connect.internal"

    procs = []
    try:
        for name in ("scheduler", "dag-processor", "api-server"):
            out = (logs / f"{name}.log").open("w")
            procs.append(
                subprocess.Popen([AIRFLOW, name], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            )
        wait_for("the DAG to be parsed", lambda: _db(home, "SELECT 1 FROM dag WHERE dag_id = 'portrait_daily'"), 120)
        booted = clock.monotonic()

        run_block("start")  # unpause: catch-up off, so only the latest date is scheduled
        wait_for("the scheduled run to finish", lambda: [r for r in run_states() if r[1] in ("success", "failed")], SCHEDULER_TIMEOUT)
        first = clock.monotonic()
        runs = run_states()
        assert len(runs) == 1 and runs[0][0].startswith(str(d)) and runs[0][2] == "scheduled", runs
        times = task_times()
        assert runs[0][1] == "success", {t: s for t, s in times.items() if s[0] != "success"}
        assert len(times) == len(_expected_task_ids())
        _print_timings("first run", times, first - booted)
        assert _rows(lake, "silver.orders", "landing_dt", d)
        gate_rows = _rows(lake, "ops.gate_results", "dt", d)
        assert {r["gate"] for r in gate_rows} == {s.name for s in STAGES if s.name in {r["gate"] for r in gate_rows}}
        assert "clean" in {r["gate"] for r in gate_rows}
        task_log = next(home.glob("logs/**/task_id=clean.build/**/*.log"), None)
        if task_log is not None:
            text = task_log.read_text(errors="replace")
            assert "Skipping registering function" not in text
            assert f"portrait clean.build dt={d} engine=sail rows=" in text, "the one-line summary of the task"

        run_block("rerun")  # clear clean.build and everything downstream
        wait_for("the cleared tasks to be picked up", lambda: task_times()["clean.build"][2] >= 2, 60)
        wait_for("the rerun to finish", lambda: [r for r in run_states() if r[1] in ("success", "failed")], SCHEDULER_TIMEOUT)
        rerun = clock.monotonic()
        times = task_times()
        assert run_states()[0][1] == "success", {t: s for t, s in times.items() if s[0] != "success"}
        assert all(tries >= 2 for _, _, tries in times.values()), "clean.build with downstream is every task"
        _print_timings("rerun after clear", times, rerun - first)

        dry = run_block("backfill")[0] + run_block("reprocess")[0]
        assert str(env["D1"]) in dry and str(d) in dry, dry
        print(f"under the scheduler: boot {booted - started:.0f}s, total {clock.monotonic() - started:.0f}s")
    finally:
        stop_groups(procs)


def _print_timings(what: str, times: dict, seconds: float) -> None:
    kinds: dict[str, list[float]] = {}
    for task_id, (_, duration, _) in times.items():
        kinds.setdefault(task_id.rsplit(".", 1)[1], []).append(duration or 0.0)
    per_kind = ", ".join(f"{k} {len(v)}x mean {sum(v) / len(v):.1f}s max {max(v):.1f}s" for k, v in sorted(kinds.items()))
    print(f"{what}: {seconds:.0f}s wall; {per_kind}; load {os.getloadavg()[0]:.2f}")
