"""Table maintenance through the ``deltalake`` package (delta-rs).

Sail has no DESCRIBE HISTORY / OPTIMIZE / VACUUM in SQL, and warehouse
consumers without Spark read the same paths with delta-rs, so history,
compaction, vacuum and rollback all go through it here.
"""

from __future__ import annotations

import logging
import time

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


def remove_stale_staging(lake: str, hours: int, now: float | None = None, conf: Conf | None = None) -> list[str]:
    """Delete staged copies (``_staging/{stage}/{dt}/``) nothing under which changed for ``hours``.

    A run that died between write and publish leaves its copy behind: its
    manifest and scratch here, its staged tables inside the published tables'
    folders; the next run of that stage and date removes the same
    (``pipeline.remove_leftovers``), so an old one is only space. Works the same
    on local disk and object storage (where a folder is a prefix and its age
    that of its newest object); lock files are left to the lock.
    """
    from portrait.core import pipeline

    conf = conf or Conf()
    staging = storage.join(lake, "_staging")
    cutoff = (time.time() if now is None else now) - hours * 3600
    removed = []
    for stage in storage.list_dir(staging):
        for name in storage.list_dir(storage.join(staging, stage)):
            folder = storage.join(staging, stage, name)
            if not storage.is_dir(folder):
                continue
            changed = storage.modified_at(folder)
            if changed is None or changed >= cutoff:
                continue
            pipeline.remove_staged_folder(lake, conf, stage, name)
            removed.append(folder)
            log.info("removed stale staged copy %s", folder)
    return removed


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
    from portrait.privacy.erasure import purge_pending

    try:  # erasures recorded with --no-purge: their old versions go now
        purged = purge_pending(lake, conf)
        if purged:
            done["erasure_purge"] = purged
    except Exception as exc:  # noqa: BLE001 - reported with the tables' failures
        failed["erasure_purge"] = f"{type(exc).__name__}: {exc}"
        log.exception("the pending erasure purge failed")
    remove_stale_staging(lake, hours, conf=conf)
    if failed:
        raise RuntimeError("maintenance failed for " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return done
