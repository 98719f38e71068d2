"""One business date of ``portrait_daily`` under a real Airflow scheduler, timed per task kind.

    python -m portrait.devtools.scheduler_bench --repo . --users 300
    python -m portrait.devtools.scheduler_bench --repo /path/to/an/older/checkout --users 300

``--repo`` is any checkout of portrait with its own ``.venv`` (``make
install``): its Airflow, its DAG folder, its generator, so that two commits
are compared as each one deploys. The bench makes a throw-away
``AIRFLOW_HOME`` (LocalExecutor on SQLite, parallelism 4), the pools and the
lake Variable (both ``portrait`` and the older ``portrait_gates`` pool, so an
older commit schedules too), generates a lake of ``--users`` users and
``--days`` landing days ending on the date the scheduler creates next,
starts scheduler, dag-processor and api-server, unpauses the DAG and waits
for the run. It prints one JSON document: the run's wall time (first task
start to last task end), per task kind (build, gate, publish) the count,
mean, max and summed seconds, and the load average before and after. Every
process it started is stopped (its process group).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

PROBE = """
import sys
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.timetables.base import TimeRestriction
dag = DagBag(dag_folder=sys.argv[1]).get_dag("portrait_daily")
info = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
    last_automated_data_interval=None, restriction=TimeRestriction(dag.start_date, None, False))
print("DATE", info.logical_date.date())
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _db(home: Path, query: str) -> list[tuple]:
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        return db.execute(query).fetchall()


def _seconds(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


def airflow_env(bin_dir: Path, home: Path, dags: Path, lake: Path, port: int) -> dict[str, str]:
    """The environment of a throw-away Airflow on loopback: LocalExecutor on SQLite, parallelism 4, the DAGs paused.

    This environment's own AIRFLOW* and PORTRAIT_* variables are left out; the
    lake is ``PORTRAIT_LAKE``. The real-scheduler test (tests/test_dags.py) uses it too.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PORTRAIT_"))}
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(16),
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT="600",
        PORTRAIT_LAKE=str(lake),
    )
    return env


def write_local_settings(home: Path) -> Path:
    """``$AIRFLOW_HOME/config/airflow_local_settings.py`` as docs/airflow.md has it (portrait.orchestration.preload)."""
    path = home / "config" / "airflow_local_settings.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("import portrait.orchestration.preload  # noqa: F401 - heavy imports paid once, not per task\n")
    return path


def stop_groups(procs: list[subprocess.Popen]) -> None:
    """Stop each process started with ``start_new_session`` and all its children: SIGTERM, after 30 s SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(repo: Path, users: int, days: int, timeout: float, work: Path) -> dict:
    venv = repo / ".venv" / "bin"
    home, lake, logs = work / "home", work / "lake", work / "logs"
    for folder in (home, logs):
        folder.mkdir(parents=True)
    port = _free_port()
    env = airflow_env(venv, home, repo / "dags", lake, port)

    def sh(*argv: str) -> str:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=work)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        return proc.stdout

    if (repo / "lib" / "portrait" / "orchestration" / "preload.py").is_file():  # older commits have none
        write_local_settings(home)
    airflow = str(venv / "airflow")
    sh(airflow, "db", "migrate")
    sh(airflow, "pools", "set", "portrait", "2", "portrait")
    sh(airflow, "pools", "set", "portrait_gates", "1", "portrait gates (older commits)")
    sh(airflow, "variables", "set", "portrait_lake", str(lake))
    found = sh(str(venv / "python"), "-c", textwrap.dedent(PROBE), str(repo / "dags"))
    day = next(line.split()[1] for line in found.splitlines() if line.startswith("DATE "))
    env["PORTRAIT_FIRST_DATE"] = day  # an older commit catches up from it: one run either way
    sh(str(venv / "portrait"), "generate", "--lake", str(lake), "--users", str(users), "--days", str(days), "--end", day, "--seed", "5")

    procs: list[subprocess.Popen] = []
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        for name in ("scheduler", "dag-processor", "api-server"):
            out = (logs / f"{name}.log").open("w")
            procs.append(subprocess.Popen([airflow, name], env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + timeout
        while not _db(home, "SELECT 1 FROM dag WHERE dag_id = 'portrait_daily'"):
            if time.monotonic() > deadline:
                raise TimeoutError("the DAG was not parsed")
            time.sleep(2)
        sh(airflow, "dags", "unpause", "portrait_daily")
        state = None
        while state not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the run did not finish in {timeout}s (logs in {logs})")
            time.sleep(2)
            rows = _db(home, "SELECT state FROM dag_run WHERE dag_id = 'portrait_daily'")
            state = rows[0][0] if rows else None
        tasks = _db(
            home, "SELECT task_id, state, start_date, end_date, duration, try_number FROM task_instance WHERE dag_id = 'portrait_daily'"
        )
    finally:
        stop_groups(procs)
    starts = [_seconds(t[2]) for t in tasks if t[2]]
    ends = [_seconds(t[3]) for t in tasks if t[3]]
    kinds: dict[str, list[float]] = {}
    for task_id, _, _, _, duration, _ in tasks:
        kinds.setdefault(task_id.rsplit(".", 1)[-1], []).append(duration or 0.0)
    return {
        "repo": str(repo),
        "commit": subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "users": users,
        "date": day,
        "state": state,
        "tasks": len(tasks),
        "failed_tasks": sorted(t[0] for t in tasks if t[1] != "success"),
        "retried_tasks": sorted(t[0] for t in tasks if (t[5] or 1) > 1),  # a retry's back-off is in run_seconds
        "run_seconds": round(max(ends) - min(starts), 1) if starts and ends else None,
        "boot_and_run_seconds": round(time.monotonic() - started, 1),
        "per_kind": {
            kind: {"tasks": len(v), "mean_s": round(sum(v) / len(v), 1), "max_s": round(max(v), 1), "sum_s": round(sum(v), 1)}
            for kind, v in sorted(kinds.items())
        },
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scheduler_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".", help="a portrait checkout with its .venv (default: this one)")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="scheduler-bench-"))
    print(json.dumps(run(Path(args.repo).resolve(), args.users, args.days, args.timeout, work), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
