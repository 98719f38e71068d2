"""A backfill as one command (`portrait run --date D1 --until D2`): memory bounded, whatever the number of dates.

The embedded engine's native memory grows with every date one process cleans
(70-90 MB a date, ARCHITECTURE.md), so a long range runs ``--dates-per-process``
dates per child process: the memory after the last date is what the first
chunk took, not a sum over the range.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date, timedelta

import pytest
from deltalake import DeltaTable

from portrait.devtools.backfill_memory import growth_per_date
from portrait.devtools.generate import SOURCES, generate

END = date(2026, 9, 6)
DATES = 6
PER_PROCESS = 2
#: What the last date of a long backfill may hold beyond the last date of the first chunk (MiB):
#: unchunked, four more dates would add 300-350 MiB (about 80 a date).
BOUND_MB = 150
REPORTED = re.compile(r"^(\d{4}-\d\d-\d\d) clean published \d+ tables in [\d.]+s, rss ([\d,]+) MiB$", re.MULTILINE)


@pytest.mark.slow  # six small dates cleaned in three processes: about a minute
def test_a_long_backfill_runs_in_chunks_of_processes_and_its_memory_stays_bounded(tmp_path):
    lake = tmp_path / "lake"
    generate(lake, users=100, days=DATES, seed=4, end_date=END)
    first = END - timedelta(days=DATES - 1)
    done = subprocess.run(
        [sys.executable, "-m", "portrait.cli", "run", "--date", str(first), "--until", str(END), "--to", "clean"]
        + ["--lake", str(lake), "--dates-per-process", str(PER_PROCESS)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rss = {date.fromisoformat(day): float(mb.replace(",", "")) for day, mb in REPORTED.findall(done.stdout)}
    assert sorted(rss) == [first + timedelta(days=n) for n in range(DATES)], done.stdout[-3000:]
    after = [rss[day] for day in sorted(rss)]
    print("rss after each date (MiB):", after)  # shown with -s / -rA
    assert after[-1] <= after[PER_PROCESS - 1] + BOUND_MB, after  # the 6th date against the 2nd
    assert max(after) <= max(after[:PER_PROCESS]) + BOUND_MB, after
    # every date cleaned once, each balanced, as a date-by-date run leaves them
    reconciliation = DeltaTable(str(lake / "ops" / "reconciliation")).to_pandas()
    assert sorted(set(reconciliation["dt"])) == sorted(rss)
    sources = set(reconciliation["source"])
    assert sources == set(SOURCES)  # every landing source, once a date
    assert reconciliation.groupby("dt").size().eq(len(SOURCES)).all() and reconciliation["balanced"].all()


def test_a_failed_chunk_stops_the_backfill_and_names_the_dates(tmp_path):
    nobody = "sc://127.0.0.1:1"  # no Spark Connect server there: the first child process fails
    (tmp_path / "lake" / "landing").mkdir(parents=True)  # a lake (an empty one): run refuses a path that is none
    done = subprocess.run(
        [sys.executable, "-m", "portrait.cli", "run", "--date", "2026-09-01", "--until", "2026-09-05", "--to", "clean"]
        + ["--lake", str(tmp_path / "lake"), "--dates-per-process", "2", "--remote", nobody],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "the dates 2026-09-01 .. 2026-09-02 failed; dates before 2026-09-01 are done" in done.stderr
    assert "2026-09-03" not in done.stderr  # the next chunk never started


def test_growth_per_date_is_the_slope_after_the_first_dates():
    rows = [{"dates": n, "rss_mb": 500 + 80 * n} for n in range(12)]
    assert growth_per_date(rows) == pytest.approx(80)
    flat = [{"dates": n, "rss_mb": 500 + (n % 3) * 10} for n in range(12)]
    assert abs(growth_per_date(flat)) < 5
    with pytest.raises(ValueError, match="at least 5 dates"):
        growth_per_date(rows[:4])
