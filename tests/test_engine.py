"""The engine: embedded Sail by default, any Spark Connect endpoint on request, JVM Spark opt-in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from portrait.core import engine, servers

PY = sys.executable


def run_python(code: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-c", textwrap.dedent(code)], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def test_embedded_sail_answers_queries(spark):
    assert engine.current_engine() == "sail"
    assert spark.range(10).selectExpr("sum(id) AS total").first().total == 45
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.python.sql.dataFrameDebugging.enabled") == "false", "a stack walk per DataFrame call"


def test_process_exits_promptly_without_an_explicit_stop():
    """Stopping the client before the in-process server is what lets the process exit."""
    done = run_python(
        """
        from portrait.core import engine
        spark = engine.get_spark()
        print(spark.range(3).count(), engine.current_engine())
        """,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "sail"]


def test_the_embedded_session_outlives_sails_idle_timeout():
    """Sail drops a session idle for its timeout (900 s by default, which cost a CI run once): the embedded engine lifts it."""
    code = textwrap.dedent(
        """
        import os, time
        from portrait.core import engine
        spark = engine.get_spark()
        spark.range(1).count()
        time.sleep(4)
        try:
            print(os.environ[engine.SAIL_IDLE_ENV], spark.range(3).count())
        except Exception as exc:
            print(os.environ[engine.SAIL_IDLE_ENV], "lost:", exc)
        """
    )
    env = {key: value for key, value in os.environ.items() if key != engine.SAIL_IDLE_ENV}
    runs = {
        "default": subprocess.Popen([PY, "-c", code], env=env, stdout=subprocess.PIPE, text=True),
        "two seconds": subprocess.Popen([PY, "-c", code], env={**env, engine.SAIL_IDLE_ENV: "2"}, stdout=subprocess.PIPE, text=True),
    }
    printed = {name: run.communicate(timeout=120)[0].strip() for name, run in runs.items()}
    assert printed["default"] == f"{engine.SAIL_IDLE_SECS} 3"
    assert printed["two seconds"].startswith("2 lost:") and "is not running" in printed["two seconds"]


def test_stop_then_start_again():
    done = run_python(
        """
        from portrait.core import engine
        first = engine.get_spark(); first.range(1).count(); engine.stop(); engine.stop()
        second = engine.get_spark(); print(second.range(2).count(), first is not second)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "True"]


def test_remote_endpoint_from_environment():
    """A separate Spark Connect server plays the cluster; the job process only connects to it."""
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    try:
        host, port = server.listening_address
        done = run_python(
            """
            from portrait.core import engine
            spark = engine.get_spark()
            print(engine.current_engine(), spark.range(5).count())
            """,
            env={engine.REMOTE_ENV: f"sc://{host}:{port}"},
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["remote", "5"]


def test_unreachable_remote_is_one_clear_error():
    done = run_python(
        """
        from portrait.core import engine
        try:
            engine.get_spark(remote="sc://127.0.0.1:9")
        except engine.EngineError as exc:
            print(exc)
        """,
        timeout=60,
    )
    assert done.stdout.startswith("cannot reach Spark Connect endpoint sc://127.0.0.1:9"), done.stdout + done.stderr[-1000:]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"engine": "flink"}, "unknown engine 'flink'"),
        ({"engine": "remote"}, "needs --remote"),
        ({"remote": "http://host:15002"}, "must look like sc://host:port"),
    ],
)
def test_engine_choice_errors(kwargs, message, monkeypatch):
    monkeypatch.delenv(engine.REMOTE_ENV, raising=False)
    monkeypatch.delenv(engine.ENGINE_ENV, raising=False)
    with pytest.raises(engine.EngineError, match=message):
        engine.resolve_engine(**kwargs)


@pytest.mark.parametrize(
    "master, partitions",
    [
        ("local", "4"),
        ("local[2]", "8"),
        ("local[4,3]", "16"),
        ("local-cluster[2,1,2048]", "8"),
        ("local-cluster[3, 2, 1024]", "24"),
        ("spark://host:7077", None),
        ("yarn", None),
    ],
)
def test_jvm_spark_gets_four_shuffle_partitions_per_local_core(master, partitions):
    assert servers.local_shuffle_partitions(master).get("spark.sql.shuffle.partitions") == partitions


def test_classic_jvm_spark_without_the_delta_jars_says_which_folder_and_command(tmp_path, monkeypatch):
    """No plain-Parquet fallback: a classic session without delta-spark's jars would write tables no reader trusts."""
    from portrait.core import servers

    monkeypatch.setenv(servers.JARS_ENV, str(tmp_path))
    with pytest.raises(
        engine.EngineError, match=rf"classic JVM Spark needs Delta Lake's jars: no delta-spark jar in {tmp_path}.*make jars"
    ):
        engine._start_classic()
    assert os.environ.get("SPARK_CONNECT_MODE_ENABLED") == "1"  # this process's Connect session still builds its columns
