"""Table maintenance through the ``deltalake`` package (delta-rs).

Sail has no DESCRIBE HISTORY / OPTIMIZE / VACUUM in SQL, and warehouse
consumers without Spark read the same paths with delta-rs, so history,
compaction, vacuum and rollback all go through it here.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from deltalake import DeltaTable

from portrait.core import storage
from portrait.core.config import Conf
from portrait.core.tables import Catalog

log = logging.getLogger(__name__)


def _table(catalog: Catalog, name: str) -> DeltaTable:
    if not catalog.exists(name):
        raise FileNotFoundError(f"table {name} has not been written yet ({catalog.spec(name).path})")
    return DeltaTable(catalog.spec(name).path, storage_options=storage.delta_options(catalog.spec(name).path))


def history(catalog: Catalog, name: str, limit: int | None = None) -> list[dict]:
    """Commits, newest first: version, timestamp, operation and its parameters."""
    return _table(catalog, name).history(limit)


def compact(catalog: Catalog, name: str) -> dict:
    """Bin-pack small files (the daily partition writes leave many)."""
    return _table(catalog, name).optimize.compact()


def vacuum(catalog: Catalog, name: str, retention_hours: int, dry_run: bool = False) -> list[str]:
    """Delete files no version younger than ``retention_hours`` needs; time travel keeps that far."""
    return _table(catalog, name).vacuum(retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False)


def restore(catalog: Catalog, name: str, version: int) -> dict:
    """Roll a table back to an earlier version (a new commit; history is kept)."""
    return _table(catalog, name).restore(version)


DEFAULT_TIME_TRAVEL_DAYS = 30


def retention_hours(conf) -> int:
    days = (conf.pipeline.get("maintenance") or {}).get("time_travel_days", DEFAULT_TIME_TRAVEL_DAYS)
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"conf/pipeline.yaml maintenance.time_travel_days must be a positive integer, got {days!r}")
    return days * 24


def _remove_stale_staging(lake: str, conf: Conf, folder: Path) -> None:
    """Remove a staged copy older than the retention: its manifest and scratch, and its copies inside the tables."""
    from datetime import date

    from portrait.core import pipeline

    try:
        ctx = pipeline.RunContext(None, lake, date.fromisoformat(folder.name), conf)
    except ValueError:  # not a date folder: not ours to interpret
        shutil.rmtree(folder, ignore_errors=True)
        return
    ctx.stage = folder.parent.name
    pipeline.remove_leftovers(ctx)  # the next run of the stage would do the same
    log.info("removed stale staged copy %s", folder)


def maintain(lake: str, conf=None, hours: int | None = None) -> dict:
    """Compact and vacuum every declared table of ``lake``; returns what was done per table."""

    conf = conf or Conf()
    hours = retention_hours(conf) if hours is None else hours
    catalog = Catalog(lake, conf)
    done, failed = {}, {}
    for name in catalog.names():
        if not catalog.exists(name):
            continue
        try:
            compacted = compact(catalog, name)
            removed = vacuum(catalog, name, retention_hours=hours)
            done[name] = {
                "files_added": compacted.get("numFilesAdded"),
                "files_removed": compacted.get("numFilesRemoved"),
                "vacuumed": len(removed),
                "version": catalog.version(name),
            }
            log.info("%s: %s", name, done[name])
        except Exception as exc:  # noqa: BLE001 - one table's trouble must not stop the others
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.exception("maintenance of %s failed", name)
    staging = Path(lake) / "_staging"
    cutoff = time.time() - hours * 3600
    for folder in staging.glob("*/*") if staging.is_dir() else ():  # TODO(issue 15): stale staged copies on object storage
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            _remove_stale_staging(lake, conf, folder)
    if failed:
        raise RuntimeError("maintenance failed for " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return done
