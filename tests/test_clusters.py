"""The whole daily run on engines of several processes, table for table against embedded Sail.

One small generated landing zone; copies of it go through the same CLI commands
(clean the history, then every stage of the last date) on

* embedded Sail (the baseline, run once per session),
* a Sail server in ``local-cluster`` mode (a driver and two workers),
* a JVM Spark Connect server (``local-cluster[2,1,2048]``: two executor JVMs)
  with real Delta Lake, whose executors' Python does not have portrait installed:
  the package reaches them with the session (``addArtifacts``).

Every published table is compared: schema, an order-independent digest per
partition and the rows themselves.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from portrait.core import servers
from portrait.core.config import Conf
from portrait.core.tables import Catalog

END = date(2026, 9, 30)
DAYS = 4
USERS = 250
RUN_TIMEOUT = 1800

#: Columns that hold when or how long something ran, not what it computed.
RUN_COLUMNS = {
    "run_id",
    "started_at",
    "finished_at",
    "seconds",
    "written_at",
    "created_at",
    "trained_at",
    "checked_at",
    "recorded_at",
    "built_at",
    "attempted_at",
    "at",
}


def portrait(lake: Path, *args: str, remote: str | None = None, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "portrait.cli", *args, "--lake", str(lake)] + (["--remote", remote] if remote else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    refused = [line for line in done.stderr.splitlines() if "Failed to set" in line]  # a session setting the server refused
    assert not refused, refused


def daily_run(history: Path, lake: Path, remote: str | None = None, env: dict | None = None) -> Path:
    """A copy of the lake whose history is cleaned (as the demo's), then the whole daily run of the last date."""
    shutil.copytree(history, lake)
    portrait(lake, "run", "--date", END.isoformat(), remote=remote, env=env)
    return lake


def _value(value, lake: str):
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.9g}")
    if isinstance(value, str) and "/landing/dt=" in value:
        return value[value.index("/landing/dt=") :]  # quarantine's source_file holds the lake's path
    if isinstance(value, str) and value.startswith(lake):
        return "<lake>" + value[len(lake) :]  # the model registry's artifact_path too
    if isinstance(value, str) and value[:1] in "{[":
        try:  # JSON held in a string (model params, metrics): its floats get the same 9 digits
            return json.dumps(_value(json.loads(value), lake), sort_keys=True)
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _value(v, lake) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_value(v, lake) for v in value]
    return value


def published(lake: Path) -> dict[str, dict]:
    """Every published table: its schema, digest per partition and rows (as sorted JSON lines)."""
    from deltalake import DeltaTable

    catalog = Catalog(str(lake), Conf())
    tables = {}
    for name in catalog.names():
        spec = catalog.spec(name)
        if not Path(spec.path, "_delta_log").is_dir():
            continue
        data = DeltaTable(spec.path).to_pyarrow_table()
        keep = [c for c in data.column_names if c not in RUN_COLUMNS]
        rows = [json.dumps(_value(row, str(lake)), sort_keys=True, default=str) for row in data.select(keep).to_pylist()]
        parts: dict[str, list[str]] = {}
        for row, raw in zip(rows, data.select(list(spec.partition_by)).to_pylist() if spec.partition_by else [{}] * len(rows)):
            parts.setdefault(json.dumps(raw, default=str), []).append(row)
        tables[name] = {
            "schema": [(f.name, str(f.type)) for f in data.schema],
            "digests": {p: hashlib.sha256("\n".join(sorted(r)).encode()).hexdigest() for p, r in parts.items()},
            "rows": sorted(rows),
        }
    return tables


def assert_same_tables(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        # the same columns and types; their stored order may differ: Sail stores partition columns last, delta-spark
        # in the declared order (dws.landings: landing_dt, built_at), and Catalog.read gives the declared order either way
        assert sorted(got[name]["schema"]) == sorted(want[name]["schema"]), name
        assert got[name]["digests"].keys() == want[name]["digests"].keys(), name
        differ = [p for p in want[name]["digests"] if got[name]["digests"][p] != want[name]["digests"][p]]
        if differ:
            extra = sorted(set(got[name]["rows"]) - set(want[name]["rows"]))[:3]
            missing = sorted(set(want[name]["rows"]) - set(got[name]["rows"]))[:3]
            pytest.fail(f"{name}: partitions {differ[:5]} differ; only here: {extra}; only embedded: {missing}")
        assert got[name]["rows"] == want[name]["rows"], name


@pytest.fixture(scope="session")
def history(tmp_path_factory) -> Path:
    """The generated landing zone, its days before the last cleaned on embedded Sail (shared by every engine)."""
    from portrait.devtools.generate import generate

    lake = tmp_path_factory.mktemp("cluster-history") / "lake"
    generate(lake, users=USERS, days=DAYS, seed=5, end_date=END)
    first = END - timedelta(days=DAYS - 1)
    portrait(lake, "run", "--date", first.isoformat(), "--until", (END - timedelta(days=1)).isoformat(), "--to", "clean")
    return lake


@pytest.fixture(scope="session")
def embedded(history, tmp_path_factory) -> dict:
    lake = daily_run(history, tmp_path_factory.mktemp("embedded") / "lake")
    tables = published(lake)
    assert {"gold.profile", "profile.model_tags", "gold.segment_members"} <= set(tables)
    return tables


@pytest.fixture(scope="session")
def sail_cluster(tmp_path_factory):
    server = servers.start_sail_cluster(tmp_path_factory.mktemp("sail-cluster") / "server.log", workers=2)
    yield server
    server.stop()


@pytest.mark.cluster
@pytest.mark.slow
def test_daily_run_on_sail_local_cluster_equals_embedded(history, embedded, sail_cluster, tmp_path):
    lake = daily_run(history, tmp_path / "lake", remote=sail_cluster.url)
    log = sail_cluster.log_tail(10**7)
    assert "starting worker 1" in log.lower() or "worker 1" in log.lower(), log[-2000:]
    assert_same_tables(published(lake), embedded)


def venv_without_portrait(root: Path) -> Path:
    """A virtualenv seeing this environment's packages (pandas, pyarrow, scikit-learn, ...) but not portrait.

    Its site-packages holds one .pth line naming ours: the packages there import,
    while the .pth files inside (portrait's editable install, the checkout for
    ``jobs``) are not processed, so neither portrait nor jobs can be imported.
    """
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True, check=True
    )
    Path(site.stdout.strip(), "engine-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    probe = subprocess.run(
        [str(python), "-c", "import pandas, pyarrow, sklearn, scipy\ntry:\n import portrait\nexcept ImportError:\n print('ok')"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
    )
    assert probe.stdout.strip() == "ok", probe.stdout + probe.stderr
    return python


@pytest.fixture(scope="session")
def jvm_connect(tmp_path_factory):
    root = tmp_path_factory.mktemp("jvm-connect")
    python = venv_without_portrait(root / "executor-venv")
    server = servers.start_jvm_connect(root / "server.log", master="local-cluster[2,1,2048]", executor_python=str(python))
    yield server
    server.stop()


@pytest.mark.cluster
@pytest.mark.jvm
@pytest.mark.slow
def test_daily_run_on_jvm_spark_connect_with_delta_equals_embedded(history, embedded, jvm_connect, tmp_path):
    lake = daily_run(history, tmp_path / "lake", remote=jvm_connect.url)
    assert Path(lake, "gold", "profile", "_delta_log").is_dir()
    assert_same_tables(published(lake), embedded)


def test_the_shipped_zip_imports_portrait_where_it_is_not_installed(tmp_path):
    """What addArtifacts sends: portrait and jobs import from the zip alone, in a Python without them."""
    from portrait.core import engine

    python = venv_without_portrait(tmp_path / "venv")
    package = engine.package_zip(str(tmp_path))
    probe = (
        f"import sys; sys.path.insert(0, {package!r}); import portrait.clean.records, portrait.models, jobs.clean; print(portrait.__file__)"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith(package)


def test_missing_jars_name_the_folder_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv(servers.JARS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no delta-spark jar in .* \(run `make jars`"):
        servers.delta_jars()
