"""Spark Connect servers of several processes, started and stopped from Python (tests, bench, docs).

* :func:`start_jvm_connect`: the JVM Spark Connect server of the pyspark wheel
  (``spark-connect_2.13-4.2.0.jar``) with Delta Lake's extension and catalog and
  the jars of ``make jars``; master ``local-cluster[N,C,MB]`` gives N executor
  JVMs, each its own process.
* :func:`start_sail_cluster`: ``sail spark server`` with ``SAIL_MODE=local-cluster``
  (a driver scheduling tasks on worker processes that shuffle between them).

Both listen on 127.0.0.1 on a free port, return once the port answers and stop
the whole process group (executors and workers included).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

JARS_ENV = "PORTRAIT_JARS"


def jars_dir() -> Path:
    """Where ``make jars`` put the JVM jars (PORTRAIT_JARS overrides)."""
    if os.environ.get(JARS_ENV):
        return Path(os.environ[JARS_ENV])
    return Path(__file__).resolve().parents[3] / ".cache" / "jars"


def delta_jars() -> list[str]:
    """The Delta Lake jars, or a clear error naming the folder and the command that fills it."""
    found = sorted(str(p) for p in jars_dir().glob("delta-*.jar"))
    if not any("delta-spark" in Path(p).name for p in found):
        raise FileNotFoundError(f"no delta-spark jar in {jars_dir()} (run `make jars`, or set {JARS_ENV} to a folder holding them)")
    return found


#: The jars of s3a:// (jvm-jars.txt): hadoop-aws, the AWS SDK v2 bundle, the analytics accelerator.
S3_JAR_PREFIXES = ("hadoop-aws-", "bundle-", "analyticsaccelerator-s3-")


def s3_jars() -> list[str]:
    """The s3a jars, or a clear error: a JVM engine cannot reach an object-store lake without them."""
    found = sorted(str(p) for p in jars_dir().glob("*.jar") if p.name.startswith(S3_JAR_PREFIXES))
    missing = [prefix.rstrip("-") for prefix in S3_JAR_PREFIXES if not any(Path(p).name.startswith(prefix) for p in found)]
    if missing:
        raise FileNotFoundError(
            f"no {', '.join(missing)} jar in {jars_dir()}: the JVM engine needs them for an s3:// lake "
            f"(run `make jars`, or set {JARS_ENV} to a folder holding them)"
        )
    return found


def s3a_conf() -> dict[str, str]:
    """Spark settings for s3:// and s3a:// paths from the standard AWS variables (as Sail and delta-rs read them).

    The endpoint (``AWS_ENDPOINT_URL[_S3]``), its region and path-style addressing
    (unless ``AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true``); ``s3://`` is served by
    S3AFileSystem too, so the lake URI is the same for every engine. Credentials
    are NOT put in the settings (they would show in the command line and the
    UI): hadoop-aws's default provider chain reads ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` from the JVM's environment.
    """
    conf = {
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https://")).lower()
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    virtual_hosted = os.environ.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false").lower() == "true"
    conf["spark.hadoop.fs.s3a.path.style.access"] = str(not virtual_hosted).lower()
    return conf


def jvm_s3_settings() -> dict[str, str]:
    """s3a settings and the class path that carries its jars (driver and executors), if the jars are there.

    On the class path, not in ``spark.jars`` / ``--jars``: those are copied to
    every executor at start, and the SDK bundle alone is 686 MB.
    """
    try:
        jars = s3_jars()
    except FileNotFoundError:
        return {}
    path = ":".join(jars)
    return {**s3a_conf(), "spark.driver.extraClassPath": path, "spark.executor.extraClassPath": path}


#: Delta Lake's SQL extension and catalog, as Delta's docs set them.
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


#: delta-spark settings for a lake of many small tables on few cores (``local[N]``, ``local-cluster``).
#: Delta rebuilds a table's snapshot from its log with ``snapshotPartitions``
#: (default 50) tasks, at every first read after a commit; on two cores that is
#: 50 near-empty tasks per table per stage. ``replaceWhere``'s own constraint
#: check scans the rows again: the catalog has already refused any row outside
#: the partition it replaces (tables.Catalog._replace_partition).
DELTA_LOCAL_CONF = {
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.databricks.delta.replaceWhere.constraintCheck.enabled": "false",
}


#: pyspark's DataFrame debugging walks the Python stack and tries to import
#: IPython on every DataFrame call, to name the call site in an error: about 8%
#: of a small daily run's time (3 s of 36 s at 200 users). Our errors name the
#: table and stage themselves. A JVM Connect server only takes it at start.
DATAFRAME_DEBUGGING_OFF = {"spark.python.sql.dataFrameDebugging.enabled": "false"}


def local_shuffle_partitions(master: str) -> dict[str, str]:
    """Four shuffle partitions per core of a one-machine master, as Spark's tuning guide advises, instead of 200.

    ``local[N]`` has N cores, ``local-cluster[W,C,M]`` W workers of C cores; a
    real cluster's master keeps Spark's own setting. On local[2] that cut the
    100k-user daily run from 231 s to 200 s; on a 250-user lake a shuffle of
    200 partitions is 200 near-empty tasks per exchange.
    """
    local = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", master)
    cluster = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*\d+\]", master)
    if local:
        threads = local.group(1)
        cores = 1 if threads is None else (os.cpu_count() or 1) if threads == "*" else int(threads)
    elif cluster:
        cores = int(cluster.group(1)) * int(cluster.group(2))
    else:
        return {}
    return {"spark.sql.shuffle.partitions": str(4 * cores)}


def delta_tuning(master: str) -> dict[str, str]:
    """:data:`DELTA_LOCAL_CONF` on one machine's masters; a real cluster keeps Delta's defaults."""
    return dict(DELTA_LOCAL_CONF) if master.startswith("local") else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and every process it started (its process group)."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)
        except ProcessLookupError:
            pass

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def _start(cmd: list[str], env: dict, port: int, log_path: Path, timeout: float) -> Server:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"sc://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {process.returncode} before answering on port {port}:\n{server.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{cmd[0]} did not answer on port {port} within {timeout:.0f} s:\n{server.log_tail()}")


def start_jvm_connect(
    log_path: Path,
    master: str = "local-cluster[2,1,2048]",
    executor_python: str | None = None,
    conf: dict | None = None,
    timeout: float = 180.0,
) -> Server:
    """A JVM Spark Connect server with Delta Lake; ``executor_python`` is the executors' PYSPARK_PYTHON."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    port = free_port()
    settings = {
        **DELTA_CONF,
        **DATAFRAME_DEBUGGING_OFF,
        **delta_tuning(master),
        **local_shuffle_partitions(master),
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.connect.grpc.maxInboundMessageSize": str(2**31 - 1),
        "spark.ui.enabled": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        **(conf or {}),
    }
    s3 = jvm_s3_settings()
    # executors of local-cluster start from SPARK_HOME's jars only: give them the Delta jars too
    executor_path = [*(delta_jars() if master.startswith("local-cluster") else []), s3.pop("spark.executor.extraClassPath", "")]
    if any(executor_path):
        s3["spark.executor.extraClassPath"] = ":".join(filter(None, executor_path))
    settings = {**s3, **settings}
    cmd = [str(spark_home / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer"]
    cmd += ["--master", master, "--jars", ",".join(delta_jars())]
    for key, value in settings.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd.append("spark-internal")
    python = executor_python or sys.executable
    env = {**os.environ, "SPARK_HOME": str(spark_home), "PYSPARK_PYTHON": python, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    return _start(cmd, env, port, log_path, timeout)


def start_sail_cluster(log_path: Path, workers: int = 2, timeout: float = 60.0) -> Server:
    """Sail in local-cluster mode: a driver and ``workers`` worker processes."""
    port = free_port()
    sail = Path(sys.executable).with_name("sail")
    env = {
        **_sail_env(),
        "SAIL_MODE": "local-cluster",
        "SAIL_CLUSTER__WORKER_INITIAL_COUNT": str(workers),
        "SAIL_CLUSTER__WORKER_MAX_COUNT": str(workers),
        # its own log shows the workers starting (an embedded session in the same process sets RUST_LOG=error)
        "RUST_LOG": "info",
    }
    return _start([str(sail), "spark", "server", "--ip", "127.0.0.1", "--port", str(port)], env, port, log_path, timeout)


def start_sail_server(log_path: Path, timeout: float = 60.0) -> Server:
    """One Sail Spark Connect server process (``sail spark server``), for clients in other processes."""
    port = free_port()
    sail = Path(sys.executable).with_name("sail")
    return _start([str(sail), "spark", "server", "--ip", "127.0.0.1", "--port", str(port)], _sail_env(), port, log_path, timeout)


def _sail_env() -> dict:
    """This environment, with the embedded engine's idle allowance unless one is set (see engine.SAIL_IDLE_SECS)."""
    from portrait.core.engine import SAIL_IDLE_ENV, SAIL_IDLE_SECS

    return {SAIL_IDLE_ENV: str(SAIL_IDLE_SECS), **os.environ}
