"""Table maintenance through the ``deltalake`` package (delta-rs).

Sail has no DESCRIBE HISTORY / OPTIMIZE / VACUUM in SQL, and warehouse
consumers without Spark read the same paths with delta-rs, so history,
compaction, vacuum and rollback all go through it here.
"""
from __future__ import annotations

from deltalake import DeltaTable

from portrait.lib.tables import Catalog


def _table(catalog: Catalog, name: str) -> DeltaTable:
    if not catalog.exists(name):
        raise FileNotFoundError(f"table {name} has not been written yet ({catalog.spec(name).path})")
    return DeltaTable(catalog.spec(name).path)


def history(catalog: Catalog, name: str, limit: int | None = None) -> list[dict]:
    """Commits, newest first: version, timestamp, operation and its parameters."""
    return _table(catalog, name).history(limit)


def compact(catalog: Catalog, name: str) -> dict:
    """Bin-pack small files (the daily partition writes leave many)."""
    return _table(catalog, name).optimize.compact()


def vacuum(catalog: Catalog, name: str, retention_hours: int, dry_run: bool = False) -> list[str]:
    """Delete files no version younger than ``retention_hours`` needs; time travel keeps that far."""
    return _table(catalog, name).vacuum(
        retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False
    )


def restore(catalog: Catalog, name: str, version: int) -> dict:
    """Roll a table back to an earlier version (a new commit; history is kept)."""
    return _table(catalog, name).restore(version)
