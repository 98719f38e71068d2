"""Who took personal data out of the lake: ``ops.exports``, and the personal columns an export may carry."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, date, datetime

from portrait.core import storage
from portrait.core.tables import Catalog
from portrait.privacy.erasure import append_rows, requester, rows_of

EXPORTS = "ops.exports"
SNAPSHOT = "gold.profile_snapshot"


def requested_by(conf) -> str:
    """The first of conf privacy.requester_env that is set, else the OS account."""
    for env in conf.pipeline["privacy"]["requester_env"]:
        if os.environ.get(env):
            return os.environ[env]
    return requester()


def record(catalog: Catalog, command: str, subject: str, dt: date, rows: int, with_pii: bool, pii_columns, destination: str) -> None:
    append_rows(
        catalog,
        EXPORTS,
        [
            {
                "export_id": uuid.uuid4().hex,
                "requested_by": requested_by(catalog.conf),
                "command": command,
                "subject": subject,
                "dt": dt,
                "rows": rows,
                "with_pii": with_pii,
                "pii_columns": list(pii_columns),
                "destination": destination,
                "exported_at": datetime.now(UTC),
            }
        ],
    )


def member_columns(catalog: Catalog, dt: date, user_ids: list[str]) -> tuple[list[str], dict[str, dict]]:
    """(personal columns, {user_id: {column: value}}) of the members in the master snapshot of ``dt``: `segment export --with-pii`.

    The columns are the snapshot's scalar ``pii: true`` columns (nested ones, the
    common addresses, stay in the profile export)."""
    from deltalake import DeltaTable

    spec = catalog.spec(SNAPSHOT)
    scalar = [c for c in spec.pii if not spec.columns[c].startswith(("array", "struct", "map"))]
    if not user_ids or not catalog.exists(SNAPSHOT):
        return scalar, {}
    table = rows_of(
        DeltaTable(spec.path, storage_options=storage.delta_options(spec.path)), ["user_id", *scalar], user_ids, [("dt", "=", dt)]
    )
    return scalar, {row["user_id"]: {c: row[c] for c in scalar} for row in table.to_pylist()}
