"""The benchmark command at a small size, so it cannot rot (the large figures live in docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

pytestmark = pytest.mark.slow  # two small benches (300 users x 4 days) take about two minutes


def bench(lake: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "portrait.cli", "bench", "--users", "300", "--days", "4", "--lake", str(lake), "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=900,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    """One small lake benched twice: a first run on the embedded engine, then a rerun of the date through
    ``--remote`` on a Sail server in its own process (how the driver's own memory is measured).

    Returns its directory, the stdout of both runs and the figures of both runs.
    """
    from portrait.core.servers import start_sail_server

    tmp_path = tmp_path_factory.mktemp("bench")
    first = bench(tmp_path / "lake", tmp_path / "first.json")
    assert first.returncode == 0, first.stderr[-3000:]
    server = start_sail_server(tmp_path / "sail.log")
    try:
        rerun = bench(tmp_path / "lake", tmp_path / "rerun.json", "--remote", server.url)
    finally:
        server.stop()
    assert rerun.returncode == 0, rerun.stderr[-3000:] + server.log_tail()
    return tmp_path, (first.stdout, rerun.stdout), *(json.loads((tmp_path / f"{run}.json").read_text()) for run in ("first", "rerun"))


def test_small_bench_prints_and_writes_figures_per_stage(small_bench):
    tmp_path, (stdout, rerun_stdout), report, rerun = small_bench
    from portrait.core.pipeline import stage_names

    assert [s["stage"] for s in report["stages"]] == stage_names()
    clean = report["stages"][0]
    assert clean["rows_in"] > 300 and clean["rows_out"] > 0 and clean["seconds"] > 0
    assert all(s["rows_out"] >= 0 and s["peak_rss_mb"] > 100 for s in report["stages"])
    # every later stage reads published tables; deliveries reads only the day's assignments, which a lake
    # this short may not have (no churn model yet, no lapsed or second-order users)
    assert all(s["rows_in"] > 0 for s in report["stages"] if s["stage"] != "deliveries")
    assert report["total_seconds"] >= sum(s["seconds"] for s in report["stages"]) - 0.05
    # the floor: the same reads and writes with pyarrow alone, per stage and in total, and the run as a multiple of it
    for s in report["stages"]:
        assert 0 < s["floor_seconds"] < s["seconds"], s
        assert s["times_floor"] == pytest.approx(s["seconds"] / s["floor_seconds"], rel=0.05, abs=0.1), s
    assert report["floor_seconds"] == pytest.approx(sum(s["floor_seconds"] for s in report["stages"]), abs=0.01)
    assert report["times_floor"] == pytest.approx(report["total_seconds"] / report["floor_seconds"], rel=0.05)
    assert "floor" in stdout and f"({report['times_floor']:,.1f}x the floor)" in stdout
    assert "total" in stdout and "clean" in stdout
    assert rerun["generate_seconds"] < 1.0  # the rerun reused the landing zone and the cleaned history
    # the rerun ran on the Sail server, its meter saw this client alone, and it produced what the embedded run did
    assert report["engine"] == "sail" and report["remote"] is None
    assert rerun["engine"] == "remote" and rerun["remote"].startswith("sc://127.0.0.1:")
    assert f"engine remote {rerun['remote']} (peak memory: this client process only)" in rerun_stdout
    # Rows in may differ: the first run's models stage added this date's versions to the registry the rerun reads.
    # Segments' rows out too: the first run gave the snapshot's users their bitmap indices, a rerun has none to add.
    assert [(s["stage"], s["rows_out"]) for s in rerun["stages"] if s["stage"] != "segments"] == [
        (s["stage"], s["rows_out"]) for s in report["stages"] if s["stage"] != "segments"
    ]
    assert rerun["stages"][0]["rows_in"] == clean["rows_in"]
    # and the lake it leaves holds profiles `portrait show` can print
    shown = subprocess.run(
        [sys.executable, "-m", "portrait.cli", "show", "--sample", "--lake", str(tmp_path / "lake")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    profile = json.loads(shown.stdout)
    assert profile["快照日期"] == report["date"] and profile["ID"].startswith("u")
    assert {"性别", "社会属性", "消费", "行为", "产品线"} <= set(profile)
    missing = subprocess.run(
        [sys.executable, "-m", "portrait.cli", "show", "nobody", "--lake", str(tmp_path / "lake")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        missing.returncode == 1
        and missing.stderr.strip() == f"portrait show: ProfileNotFound: user nobody has no profile on {report['date']}"
    )
    # and `portrait export --with-pii` writes every user of the snapshot as one JSON line (as `show` has it), saying where
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "portrait.cli",
            "export",
            "--with-pii",
            "--lake",
            str(tmp_path / "lake"),
            "--out",
            str(tmp_path / "all.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    lines = (tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines()
    snapshot = DeltaTable(str(tmp_path / "lake" / "gold" / "profile_snapshot")).to_pandas(columns=["user_id", "dt"])
    users = int((snapshot["dt"].astype(str) == report["date"]).sum())
    assert len(lines) == users and f"wrote {users:,} profiles of {report['date']} to {tmp_path / 'all.jsonl'}" in exported.stdout
    assert profile in [json.loads(line) for line in lines]


def snapshot_of(lake: Path, table: str, dt: str) -> pd.DataFrame:
    rows = DeltaTable(str(lake / table.replace(".", "/"))).to_pandas(filters=[("dt", "=", date.fromisoformat(dt))])
    return rows.sort_values("user_id").reset_index(drop=True)


@pytest.mark.jvm
def test_jvm_spark_with_delta_computes_the_same_consumption_profile(small_bench):
    """`--engine spark`: the bench's JVM peer (local[2], delta-spark from the pinned jars) reruns consumption on the
    bench's lake and publishes what Sail did, through the same gate and writer. One stage, not the whole run: the
    JVM's whole daily run is tests/test_clusters.py's (on a Connect server); its figures, docs/performance.md's."""
    tmp_path, _, _, sail = small_bench
    lake = tmp_path / "lake"
    consumption = snapshot_of(lake, "profile.consumption", sail["date"])
    done = subprocess.run(
        [sys.executable, "-m", "portrait.cli", "run", "--date", sail["date"], "--from", "consumption", "--to", "consumption"]
        + ["--engine", "spark", "--lake", str(lake)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{sail['date']} consumption published 1 tables" in done.stderr + done.stdout
    # the JVM wrote the partition's files (the publish commit that adds them is delta-rs's, as on every engine)
    table = DeltaTable(str(lake / "profile" / "consumption"))
    files = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    paths = [path for path, dt in zip(files["path"], files["partition.dt"]) if str(dt) == sail["date"]]
    written_by = {pq.ParquetFile(lake / "profile" / "consumption" / path).metadata.created_by.split(" ")[0] for path in paths}
    assert written_by == {"parquet-mr"}, written_by
    pd.testing.assert_frame_equal(snapshot_of(lake, "profile.consumption", sail["date"]), consumption, check_exact=False, rtol=1e-9)
