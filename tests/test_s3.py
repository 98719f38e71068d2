"""The lake on object storage: a real S3-compatible server (moto's standalone server) on 127.0.0.1.

moto_server comes from PyPI with the install step (``moto[server]`` in
requirements.lock): no Docker, no JVM, starts in about a second, and answers
conditional PUTs (``If-None-Match`` / ``If-Match``), multipart uploads and,
with ``INITIAL_NO_AUTH_ACTION_COUNT=0``, checks credentials. One small lake
(150 users, two dates) goes through the CLI in subprocesses, each with its own
embedded Sail, as an operator would run it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from portrait.core import storage
from portrait.core.config import Conf
from portrait.core.pipeline import RunContext, stage_lock
from portrait.core.tables import Catalog
from test_dags import with_negative_amounts

pytestmark = [pytest.mark.s3, pytest.mark.slow]

PYTHON = sys.executable
D1, D2 = date(2026, 11, 2), date(2026, 11, 3)
SECRET = "sEcReT-portrait-s3-Key-9f3a"
BUCKET = "portrait-lake"
MOTO = str(Path(sys.executable).with_name("moto_server"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_moto(log: Path, **env) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    handle = log.open("w")
    proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **env})
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"moto_server did not listen on {port}; see {log}")


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A moto S3 server with one bucket; the AWS_* variables set for this process and its children."""
    import boto3

    root = tmp_path_factory.mktemp("s3")
    proc, endpoint = _start_moto(root / "moto.log")
    settings = {
        "AWS_ACCESS_KEY_ID": "portrait-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield {"endpoint": endpoint, "root": root, "settings": settings}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(timeout=10)


def _portrait(*args, env=None, cwd=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "portrait.cli", *args], capture_output=True, text=True, env=env or dict(os.environ), cwd=cwd, timeout=timeout
    )


@pytest.fixture(scope="module")
def lake(s3):
    """150 users generated straight into the bucket; D1 cleaned and summed (the history a daily run finds), D2 run through the whole pipeline."""
    uri = f"s3://{BUCKET}/lakes/daily"
    work = s3["root"] / "cwd"
    work.mkdir()
    logs = []
    generated = _portrait("generate", "--lake", uri, "--users", "150", "--days", "2", "--end", str(D2), "--seed", "3", cwd=work)
    logs.append(generated.stdout + generated.stderr)
    assert generated.returncode == 0, generated.stderr[-2000:]
    assert not any(work.iterdir()), "the generator streamed to the bucket without a local copy"
    started = time.perf_counter()
    for run in (("--date", str(D1), "--to", "aggregate"), ("--date", str(D2))):
        done = _portrait("run", "--lake", uri, *run, cwd=work)
        logs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr[-3000:]
    print(f"history date and daily run on S3: {time.perf_counter() - started:.0f}s (load {os.getloadavg()[0]:.1f})")
    return {"uri": uri, "logs": logs, "work": work}


def _catalog(uri: str) -> Catalog:
    return Catalog(uri, Conf())


def _rows(uri: str, table: str, column: str | None = None, value=None) -> list[dict]:
    from deltalake import DeltaTable

    catalog = _catalog(uri)
    if not catalog.exists(table):
        return []
    path = catalog.spec(table).path
    filters = [(column, "=", value)] if column else None
    return DeltaTable(path, storage_options=storage.delta_options(path)).to_pyarrow_table(filters=filters).to_pylist()


def _versions(uri: str) -> dict[str, int]:
    catalog = _catalog(uri)
    return {name: catalog.version(name) for name in catalog.names() if catalog.exists(name)}


def _fingerprint(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in rows)


def test_daily_run_publishes_every_layer_on_the_bucket(lake):
    uri = lake["uri"]
    for dt in (D1, D2):
        assert _rows(uri, "silver.events", "landing_dt", dt)
        assert _rows(uri, "dws.user_events_daily", "landing_dt", dt)
    assert _rows(uri, "gold.profile_snapshot", "dt", D2) and _rows(uri, "gold.segment_members", "dt", D2)
    staged = [
        name for stage in storage.list_dir(storage.join(uri, "_staging")) for name in storage.list_dir(storage.join(uri, "_staging", stage))
    ]
    assert not staged, f"staged copies and locks are removed after publishing: {staged}"
    assert storage.is_file(storage.join(uri, "truth", "users.parquet"))


def test_show_and_segment_count_read_the_bucket(lake):
    shown = _portrait("show", "--sample", "--lake", lake["uri"], "--date", str(D2))
    assert shown.returncode == 0, shown.stderr[-2000:]
    profile = json.loads(shown.stdout)
    assert profile["ID"].startswith("u")
    listed = _portrait("segment", "list", "--lake", lake["uri"])
    assert listed.returncode == 0, listed.stderr[-2000:]
    counted = _portrait("segment", "count", "potential_users", "--lake", lake["uri"], "--date", str(D2))
    assert counted.returncode == 0, counted.stderr[-2000:]
    assert counted.stdout.strip().isdigit()
    lake["logs"] += [shown.stderr, listed.stdout + listed.stderr, counted.stderr]


def test_a_second_run_of_a_stage_is_refused_naming_the_holder(lake):
    uri = lake["uri"]
    ctx = RunContext(None, uri, D1, Conf())
    with stage_lock(ctx, "monitor"):
        refused = _portrait("run", "--lake", uri, "--date", str(D1), "--from", "monitor", "--to", "monitor")
        assert refused.returncode == 1
        line = refused.stderr.strip().splitlines()[-1]
        assert "stage monitor for 2026-11-02 is refused: stage monitor is already running" in line and f"pid {os.getpid()}" in line, line
        holder = json.loads(storage.read_bytes(storage.join(uri, "_staging", "monitor.lock")))
        assert holder["holder"].startswith(f"pid {os.getpid()} on ")
    assert not storage.is_file(storage.join(uri, "_staging", "monitor.lock")), "released at the end"


def test_an_expired_lease_is_taken_over_and_only_by_one(s3):
    path = f"s3://{BUCKET}/locks/expired.lock"
    with storage.exclusive(path, lease_seconds=30):
        with pytest.raises(storage.LockHeld, match=f"pid {os.getpid()}"):
            with storage.exclusive(path):
                pass
    storage.write_bytes(path, json.dumps({"holder": "pid 1 on a-dead-host", "expires_at": time.time() - 1}).encode())
    won, lost = [], []
    barrier = threading.Barrier(4)

    def take():
        barrier.wait()
        try:
            with storage.exclusive(path, lease_seconds=30):
                won.append(1)
                time.sleep(3)
        except storage.LockHeld as busy:
            lost.append(busy.holder)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) >= 1 and len(won) + len(lost) == 4
    # the takers overlap in time (each holds for 3 s), so only one can have held it at once
    assert len(won) == 1, f"{len(won)} takers held the lock at once"


def test_a_failed_gate_publishes_nothing_and_a_rerun_changes_no_other_date(lake):
    uri = lake["uri"]
    folder = storage.join(uri, "landing", "orders", f"dt={D2}")
    files = [storage.join(folder, name) for name in storage.list_dir(folder)]
    backup = {path: storage.read_bytes(path) for path in files}
    broken = 0
    for path, data in backup.items():
        text, count = with_negative_amounts(data.decode())
        storage.write_text(path, text)
        broken += count
    assert broken
    before = _versions(uri)
    failed = _portrait("rerun", "--lake", uri, "--date", str(D2))
    assert failed.returncode == 1 and "GateFailed" in failed.stderr, failed.stderr[-2000:]
    after = _versions(uri)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed <= {"ops.gate_results"}, f"published tables changed despite the failed gate: {changed}"

    for path, data in backup.items():
        storage.write_bytes(path, data)
    catalog = _catalog(uri)
    partitioned = [name for name in catalog.names() if catalog.exists(name) and catalog.spec(name).run_partition]
    d1_before = {name: _fingerprint(_rows(uri, name, catalog.spec(name).run_partition, D1)) for name in partitioned}
    rerun = _portrait("run", "--lake", uri, "--date", str(D2), "--to", "aggregate")  # the stages the fixed input feeds first
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    d1_after = {name: _fingerprint(_rows(uri, name, catalog.spec(name).run_partition, D1)) for name in partitioned}
    assert not [name for name in partitioned if d1_before[name] != d1_after[name]], "the rerun of D2 changed D1 rows"
    assert _rows(uri, "silver.orders", "landing_dt", D2)
    lake["logs"] += [failed.stdout + failed.stderr, rerun.stdout + rerun.stderr]


def test_lake_errors_are_one_line_naming_the_lake_and_no_secret(s3, tmp_path):
    env = dict(os.environ)
    missing = _portrait("tables", "--lake", f"s3://no-such-bucket-{os.getpid()}/x", env=env, timeout=60)
    unreachable = _portrait(
        "tables", "--lake", f"s3://{BUCKET}/x", env={**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}, timeout=60
    )
    proc, endpoint = _start_moto(tmp_path / "moto-auth.log", INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        denied = _portrait("tables", "--lake", f"s3://{BUCKET}/x", env={**env, "AWS_ENDPOINT_URL": endpoint}, timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for done, lake, reason in (
        (missing, f"s3://no-such-bucket-{os.getpid()}/x", "does not exist"),
        (unreachable, f"s3://{BUCKET}/x", "cannot be reached"),
        (denied, f"s3://{BUCKET}/x", "access denied"),
    ):
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith(f"portrait tables: lake {lake}: ") and reason in lines[0], lines[0]
        assert SECRET not in done.stderr + done.stdout


def test_the_secret_is_in_no_log_and_no_object(lake, s3):
    import boto3

    assert lake["logs"] and not [log for log in lake["logs"] if SECRET in log]
    client = boto3.client("s3")
    keys = [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET) for obj in page.get("Contents", [])]
    assert any("_delta_log" in key for key in keys) and any("manifest" in key or "landing" in key for key in keys)
    leaked = [key for key in keys if SECRET.encode() in client.get_object(Bucket=BUCKET, Key=key)["Body"].read()]
    assert not leaked, f"the secret is stored in {leaked}"


@pytest.mark.airflow
def test_dags_test_runs_one_date_with_the_lake_on_s3(s3, tmp_path):
    """The DAG of tests/test_dags.py, its Variable naming an s3:// lake, the store's settings in the connection portrait_s3."""
    import test_dags as dags  # the Airflow driver and helpers of the local-disk DAG tests
    from portrait.devtools.generate import generate

    uri = f"s3://{BUCKET}/lakes/airflow"
    home = tmp_path / "home"
    home.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(dags.DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PORTRAIT_", "AWS_"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__DAGS_FOLDER=str(dags.DAGS), PORTRAIT_LAKE=uri)
    settings = s3["settings"]  # the tasks get the store's settings from the Airflow connection portrait_s3 only
    env["AIRFLOW_CONN_PORTRAIT_S3"] = json.dumps(
        {
            "conn_type": "aws",
            "login": settings["AWS_ACCESS_KEY_ID"],
            "password": settings["AWS_SECRET_ACCESS_KEY"],
            "extra": {"region_name": settings["AWS_REGION"], "endpoint_url": settings["AWS_ENDPOINT_URL"]},
        }
    )
    generate(uri, users=150, days=2, seed=3, end_date=dags.D2)
    state = {"root": tmp_path, "lake": uri, "env": env, "driver": driver, "logs": tmp_path / "logs"}
    state["logs"].mkdir()
    dags._driver(state, "setup", uri)
    run = dags._dag_test(state, dags.D1)
    not_ok = {task_id: st for task_id, st in run["tis"].items() if st[0] != "success"}
    assert run["state"] == "success" and not not_ok, f"tasks not successful: {not_ok}"
    assert _rows(uri, "silver.events", "landing_dt", dags.D1) and _rows(uri, "gold.profile_snapshot", "dt", dags.D1)
    assert not _rows(uri, "ops.task_failures", "dt", dags.D1)
    logs = "".join(path.read_text(errors="replace") for path in state["logs"].rglob("*") if path.is_file())
    assert SECRET not in logs


def check_stale_staging_cleanup(lake: str) -> None:
    """Staged copies older than the retention go, fresher ones and the lock files stay (local disk or bucket)."""
    from portrait.core.maintenance import remove_stale_staging

    old = storage.join(lake, "_staging", "clean", "2026-11-01")
    other = storage.join(lake, "_staging", "models", "2026-11-01")
    storage.write_text(storage.join(old, "manifest.json"), "{}")
    storage.write_bytes(storage.join(other, "tables", "profile", "model_tags", "part-0.parquet"), b"x")
    lock = storage.join(lake, "_staging", "clean", "2026-11-02.lock")
    storage.write_text(lock, "held by a test")
    assert remove_stale_staging(lake, hours=1) == []
    assert storage.is_dir(old) and storage.is_dir(other)
    two_hours_on = time.time() + 2 * 3600
    assert remove_stale_staging(lake, hours=3, now=two_hours_on) == []
    assert sorted(remove_stale_staging(lake, hours=1, now=two_hours_on)) == sorted([old, other])
    assert not storage.is_dir(old) and not storage.is_dir(other)
    assert storage.is_file(lock), "a lock file is the lock's business, not maintenance's"


def test_maintenance_removes_stale_staged_copies_on_the_bucket(s3):
    check_stale_staging_cleanup(f"s3://{BUCKET}/lakes/staging-cleanup")


JVM_UPSERTS = """
import sys
from datetime import datetime

from portrait.core import engine
from portrait.core.config import Conf
from portrait.core.tables import Catalog

spark = engine.get_spark("spark")
assert "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions")
catalog = Catalog(sys.argv[1], Conf())
ddl = catalog.spec("silver.users").ddl
def users(rows, hour):
    at = datetime(2026, 11, 2, hour)
    return spark.createDataFrame([(u, n, "f", 1990, at, "app", "Hangzhou", True, at, at.date()) for u, n in rows], ddl)
catalog.write(spark, users([("u1", "A"), ("u2", "B")], 1), "silver.users", "upsert")
catalog.write(spark, users([("u2", "B2"), ("u3", "C")], 2), "silver.users", "upsert")
print(sorted((r.user_id, r.name) for r in catalog.read(spark, "silver.users").collect()))
engine.stop()
"""


@pytest.mark.jvm
def test_the_jvm_engine_writes_and_reads_delta_on_the_bucket(s3, tmp_path):
    """Classic JVM Spark with delta-spark and hadoop-aws (s3a from the AWS_* variables): upserts on the bucket, read back by delta-rs."""
    from deltalake import DeltaTable

    from portrait.core import servers

    servers.s3_jars()  # a clear error if `make jars` did not bring them
    uri = f"s3://{BUCKET}/lakes/jvm"
    started = time.perf_counter()
    done = subprocess.run([PYTHON, "-c", JVM_UPSERTS, uri], capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    print(f"JVM session + two Delta upserts on S3: {time.perf_counter() - started:.0f}s (load {os.getloadavg()[0]:.1f})")
    assert done.stdout.strip().splitlines()[-1] == "[('u1', 'A'), ('u2', 'B2'), ('u3', 'C')]"
    assert SECRET not in done.stdout + done.stderr
    rows = _rows(uri, "silver.users")
    assert sorted((r["user_id"], r["name"]) for r in rows) == [("u1", "A"), ("u2", "B2"), ("u3", "C")]
    path = _catalog(uri).spec("silver.users").path
    history = DeltaTable(path, storage_options=storage.delta_options(path)).history()
    # the data commits; SET TBLPROPERTIES (personal columns kept out of the log's statistics) is delta-rs's
    writes = [commit for commit in history if commit.get("operation") != "SET TBLPROPERTIES"]
    assert len(writes) >= 3, history  # create, two merges
    assert all("Delta-Lake" in str(commit.get("engineInfo", "")) for commit in writes), f"not all committed by delta-spark: {writes}"
