"""The benchmark command at a small size, so it cannot rot (the large figures live in the README)."""
from __future__ import annotations

import json
import subprocess
import sys

from deltalake import DeltaTable


def test_small_bench_prints_and_writes_figures_per_stage(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "portrait.lib.cli", "bench", "--users", "300", "--days", "4",
         "--lake", str(tmp_path / "lake"), "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    from portrait.lib.pipeline import stage_names

    assert [s["stage"] for s in report["stages"]] == stage_names()
    clean = report["stages"][0]
    assert clean["rows_in"] > 300 and clean["rows_out"] > 0 and clean["seconds"] > 0
    assert all(s["rows_out"] >= 0 and s["peak_rss_mb"] > 100 for s in report["stages"])
    assert report["total_seconds"] >= sum(s["seconds"] for s in report["stages"]) - 0.05
    assert "total" in done.stdout and "clean" in done.stdout
    # a second run reuses the landing zone and the cleaned history
    again = subprocess.run(
        [sys.executable, "-m", "portrait.lib.cli", "bench", "--users", "300", "--days", "4",
         "--lake", str(tmp_path / "lake"), "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(out.read_text())["generate_seconds"] < 1.0
    # and the lake it leaves holds profiles `portrait show` can print
    shown = subprocess.run(
        [sys.executable, "-m", "portrait.lib.cli", "show", "--sample", "--lake", str(tmp_path / "lake")],
        capture_output=True, text=True, timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    profile = json.loads(shown.stdout)
    assert profile["快照日期"] == report["date"] and profile["ID"].startswith("u")
    assert {"性别", "社会属性", "消费", "行为", "产品线"} <= set(profile)
    missing = subprocess.run(
        [sys.executable, "-m", "portrait.lib.cli", "show", "nobody", "--lake", str(tmp_path / "lake")],
        capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode == 1 and missing.stderr.strip() == f"portrait show: ProfileNotFound: user nobody has no profile on {report['date']}"
    # and `portrait export` writes every user of the snapshot as one JSON line, saying where
    exported = subprocess.run(
        [sys.executable, "-m", "portrait.lib.cli", "export", "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "all.jsonl")],
        capture_output=True, text=True, timeout=300,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    lines = (tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines()
    snapshot = DeltaTable(str(tmp_path / "lake" / "gold" / "profile_snapshot")).to_pandas(columns=["user_id", "dt"])
    users = int((snapshot["dt"].astype(str) == report["date"]).sum())
    assert len(lines) == users and f"wrote {users:,} profiles of {report['date']} to {tmp_path / 'all.jsonl'}" in exported.stdout
    assert profile in [json.loads(line) for line in lines]
