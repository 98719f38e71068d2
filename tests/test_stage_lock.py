"""One run of a stage at a time, any date: a second one fails at once, naming the holder, and touches nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import date

import pytest

from portrait.core.pipeline import RunContext, StagingError, run_stage, stage_lock

HOLD = """
import sys, time
from datetime import date
from portrait.core.pipeline import RunContext, stage_lock
with stage_lock(RunContext(None, {lake!r}, date(2026, 9, 30)), "clean"):
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes it
"""


def test_a_second_run_of_the_same_stage_fails_naming_the_holder_whatever_its_date(tmp_path):
    lake = str(tmp_path / "lake")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD.format(lake=lake))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        ctx = RunContext(None, lake, date(2026, 9, 30))
        staged = tmp_path / "lake" / "_staging" / "clean" / "2026-09-30" / "manifest.json"
        staged.parent.mkdir(parents=True)
        staged.write_text("{}")  # the holder's staged copy
        with pytest.raises(
            StagingError, match=rf"stage clean for 2026-09-30 is refused: stage clean is already running \(pid {holder.pid} on "
        ):
            run_stage(ctx, "clean")
        assert staged.read_text() == "{}"  # refused before it removed anything
        with pytest.raises(StagingError, match=r"stage clean for 2026-09-29 is refused: stage clean is already running"):
            with stage_lock(RunContext(None, lake, date(2026, 9, 29)), "clean"):
                pass  # another date of the same stage (a backfill beside the daily run): refused at once
        with stage_lock(ctx, "models"):
            pass  # another stage: free
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with stage_lock(ctx, "clean"), stage_lock(ctx, "clean"):  # released when its holder ended; re-entrant
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    lake = str(tmp_path / "lake")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD.format(lake=lake))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "holding"
    holder.kill()
    holder.wait(timeout=60)
    with stage_lock(RunContext(None, lake, date(2026, 9, 30)), "clean"):
        pass


def test_maintenance_removes_stale_staged_copies_on_local_disk(tmp_path):
    from test_s3 import check_stale_staging_cleanup

    check_stale_staging_cleanup(str(tmp_path / "lake"))
