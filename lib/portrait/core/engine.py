"""The one way every job gets a SparkSession.

Three engines, one job code path (DataFrame API + SQL over Spark Connect):

* ``sail`` (default): an embedded Sail Spark Connect server started in this
  process (``pysail``): no JVM, no cluster.
* ``remote``: any Spark Connect endpoint, ``sc://host:port`` (a Spark 4 cluster
  with Delta, or a Sail cluster). Chosen by ``--remote`` or ``PORTRAIT_REMOTE``.
* ``spark``: classic JVM Spark in local mode, opt-in with ``--engine spark`` /
  ``PORTRAIT_ENGINE=spark``, with delta-spark (the jars ``make jars`` fetched
  into .cache/jars).

The session is a process-wide singleton: the CLI and Airflow tasks run several
jobs in one process and pay the start-up once. ``stop()`` runs at exit and stops
the client session *before* the in-process server (otherwise the process hangs
on exit, see ARCHITECTURE.md).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import threading
import warnings
from dataclasses import dataclass

log = logging.getLogger(__name__)

ENGINES = ("sail", "remote", "spark")
REMOTE_ENV = "PORTRAIT_REMOTE"
ENGINE_ENV = "PORTRAIT_ENGINE"

#: Session settings every engine gets: timestamps are handled in UTC and
#: converted to the business time zone explicitly (see conf/pipeline.yaml).
SESSION_CONF = {"spark.sql.session.timeZone": "UTC"}


class EngineError(RuntimeError):
    """The engine could not be started or reached."""


@dataclass
class _Running:
    spark: object
    engine: str
    server: object | None = None  # the embedded Sail server, if we own one


_lock = threading.Lock()
_running: _Running | None = None


def resolve_engine(engine: str | None = None, remote: str | None = None) -> tuple[str, str | None]:
    """Decide which engine to use from arguments first, then the environment."""
    remote = remote or os.environ.get(REMOTE_ENV) or None
    engine = engine or os.environ.get(ENGINE_ENV) or ("remote" if remote else "sail")
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "remote":
        if not remote:
            raise EngineError(f"engine 'remote' needs --remote sc://host:port or {REMOTE_ENV}")
        if not remote.startswith("sc://"):
            raise EngineError(f"remote endpoint must look like sc://host:port, got {remote!r}")
    return engine, remote


def get_spark(engine: str | None = None, remote: str | None = None):
    """Return the process's SparkSession, starting the engine on first use."""
    global _running
    with _lock:
        if _running is not None:
            return _running.spark
        engine, remote = resolve_engine(engine, remote)
        # pyspark 4.2 warns at each pandas conversion that it is not yet tested with pandas 3; the pin is deliberate.
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        if engine == "sail":
            _running = _start_sail()
        elif engine == "remote":
            _check_reachable(remote)
            _running = _Running(_connect(remote), "remote")
            ship_package(_running.spark)
        else:
            _running = _Running(_start_classic(), "spark")
        atexit.register(stop)
        log.info("engine %s ready", engine)
        return _running.spark


def current_engine() -> str | None:
    """Name of the running engine, or None if none was started."""
    return _running.engine if _running else None


def stop() -> None:
    """Stop the session, then the embedded server (in that order). Safe to call twice."""
    global _running
    with _lock:
        running, _running = _running, None
    if running is None:
        return
    try:
        running.spark.stop()
    finally:
        if running.server is not None:
            running.server.stop()


#: Sail drops a session that sent nothing for ``spark.session_timeout_secs``
#: (900 s by default). The embedded server serves this process alone and dies
#: with it, so a process that leaves its session idle for a while (a test
#: module running subprocesses, a task waiting on a slow peer) must not find it
#: gone ("session ... is not running"). An operator's own setting wins.
SAIL_IDLE_ENV = "SAIL_SPARK__SESSION_TIMEOUT_SECS"
SAIL_IDLE_SECS = 7 * 24 * 3600


#: gRPC's largest message (2 GiB - 1) instead of the client's 128 MB: the server
#: decides how large a result batch is, and at 1M users one batch of the
#: models stage's 8M order lines came back larger than 128 MB and failed with
#: "Decompressed message larger than max".
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1


def _connect(url: str):
    from pyspark.sql.connect.client import DefaultChannelBuilder
    from pyspark.sql.connect.session import SparkSession

    channel = DefaultChannelBuilder(
        url,
        channelOptions=[
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ],
    )
    builder = SparkSession.builder.channelBuilder(channel)
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"  # what builder.remote() sets: pyspark.sql.functions then build Connect columns
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # grpc errors carry pages of detail; keep the cause
        raise EngineError(f"cannot reach Spark Connect endpoint {url}: {exc}") from exc
    _turn_off_dataframe_debugging(spark, url)
    return spark


def _turn_off_dataframe_debugging(spark, url: str) -> None:
    """Turn pyspark's DataFrame debugging off on this session where the server lets a session change it.

    Sail takes it per session; a JVM Connect server fixes it when it starts (a
    static setting: :func:`portrait.core.servers.start_jvm_connect` starts its
    servers with it off). On a server started with it on the run still works,
    only slower: say how to start it.
    """
    from portrait.core import servers

    key, value = next(iter(servers.DATAFRAME_DEBUGGING_OFF.items()))
    if str(spark.conf.get(key, "true")).lower() == value:
        return
    with warnings.catch_warnings(record=True) as refused:
        warnings.simplefilter("always")
        spark.conf.set(key, value)
    if refused:
        log.info(
            "Spark Connect server %s keeps %s on (a static setting); start it with --conf %s=%s to save a stack walk per call",
            url,
            key,
            key,
            value,
        )


SHIP_ENV = "PORTRAIT_SHIP_PACKAGE"


def package_zip(folder: str) -> str:
    """A zip of the ``portrait`` package and the ``jobs`` package in ``folder``, importable from ``sys.path``."""
    import zipfile
    from pathlib import Path

    import jobs
    import portrait

    out = Path(folder) / "portrait_pkg.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in (portrait, jobs):
            root = Path(package.__file__).parent
            for path in sorted(root.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    zf.write(path, Path(root.name, path.relative_to(root)).as_posix())
    return str(out)


def ship_package(spark) -> bool:
    """Send portrait's code with the session, so executors without portrait installed run its pandas functions.

    Spark Connect's ``addArtifacts(pyfile=True)`` puts the zip on the Python
    workers' path. A server that does not take artifacts (Sail runs Python
    functions in its own processes, from the server's environment) is logged,
    not fatal. PORTRAIT_SHIP_PACKAGE=0 turns it off.
    """
    if os.environ.get(SHIP_ENV, "1") == "0":
        return False
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="portrait-artifact-") as folder:  # the client has uploaded it when addArtifacts returns
            spark.addArtifacts(package_zip(folder), pyfile=True)
    except Exception as exc:  # noqa: BLE001 - the server's refusal is reported, the run goes on
        log.warning(
            "the Spark Connect server did not take portrait's code as an artifact (%s); its workers need portrait installed",
            " ".join(str(exc).split())[:200],
        )
        return False
    return True


def _check_reachable(url: str, timeout_seconds: float = 10.0) -> None:
    """Fail in seconds with the address, instead of the client's minutes of silent retries."""
    host, _, port = url[len("sc://") :].split("/")[0].split(";")[0].rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port or 15002)), timeout=timeout_seconds):
            pass
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot reach Spark Connect endpoint {url}: {exc}") from None


def _start_sail() -> _Running:
    # The engine logs every session at INFO; keep its errors only (RUST_LOG=info to see more).
    os.environ.setdefault("RUST_LOG", "error")
    os.environ.setdefault(SAIL_IDLE_ENV, str(SAIL_IDLE_SECS))
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    host, port = server.listening_address
    try:
        spark = _connect(f"sc://{host}:{port}")
    except Exception:
        server.stop()
        raise
    return _Running(spark, "sail", server)


#: Classic JVM Spark settings: the driver is the executor in local mode, so it
#: gets the memory; Arrow for DataFrame <-> pandas as Spark Connect always has;
#: Parquet timestamps as microseconds, the type every Delta reader knows.
CLASSIC_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}
DRIVER_MEMORY_ENV = "PORTRAIT_SPARK_DRIVER_MEMORY"


def _start_classic():
    """Classic JVM Spark in local mode with delta-spark, from the jars ``make jars`` pinned in jvm-jars.txt."""
    from pyspark.sql import SparkSession

    from portrait.core import servers

    try:  # before the environment is touched: a refusal leaves this process as it was
        jars = servers.delta_jars()
    except FileNotFoundError as exc:
        raise EngineError(f"classic JVM Spark needs Delta Lake's jars: {exc}") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python UDF workers: this environment, not PATH's python3
    # A Spark Connect session sets this and child processes inherit it; pyspark would then refuse a classic session.
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
    master = os.environ.get("PORTRAIT_SPARK_MASTER", "local[2]")
    builder = SparkSession.builder.master(master).appName("portrait").config("spark.driver.memory", os.environ.get(DRIVER_MEMORY_ENV, "8g"))
    settings = {
        **CLASSIC_CONF,
        **servers.jvm_s3_settings(),
        **servers.local_shuffle_partitions(master),
        **SESSION_CONF,
        **servers.DATAFRAME_DEBUGGING_OFF,
        **servers.DELTA_CONF,
        **servers.delta_tuning(master),
        "spark.jars": ",".join(jars),
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:
        raise EngineError(f"classic JVM Spark did not start: {exc}") from exc
    spark.sparkContext.setLogLevel(os.environ.get("PORTRAIT_SPARK_LOG_LEVEL", "ERROR"))  # as Sail: errors only
    return spark
