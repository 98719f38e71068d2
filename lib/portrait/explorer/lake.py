"""Reading the lake's Delta tables without Spark (delta-rs + pyarrow), for the explorer.

Every filter is a pyarrow expression built from values (``pc.field(c) == v``):
a value from a URL or a form is bound into the scan, never formatted into a
query string. Table paths come from the declarations in conf/tables only; no
part of a request ever becomes part of a path.
"""

from __future__ import annotations

import threading
from datetime import date, datetime
from functools import reduce
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from portrait.core import storage
from portrait.core.config import Conf
from portrait.core.tables import Catalog


def jsonable(value: Any) -> Any:
    """pyarrow's Python values as JSON values (what ``master.render`` reads): dates as YYYY-MM-DD, maps as dicts."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # a map<k, v>
            return {k: jsonable(v) for k, v in value}
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return None
    return value


def json_rows(data: pa.Table | pa.RecordBatch) -> list[dict]:
    """``[jsonable(r) for r in data.to_pylist()]``, converting only the columns whose type needs it.

    Numbers and strings come out of pyarrow as JSON values already; the
    columns holding dates, timestamps, maps, bytes or nested values are the
    only ones walked. The serving index renders every profile of a snapshot
    this way.
    """
    convert = [field.name for field in data.schema if not _plain(field.type)]
    rows = data.to_pylist()
    for row in rows:
        for name in convert:
            row[name] = jsonable(row[name])
    return rows


def _plain(kind: pa.DataType) -> bool:
    """Whether pyarrow's Python values of ``kind`` are JSON values as they are (numbers, text, booleans, null)."""
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_string(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
        or pa.types.is_large_string(kind)
    )


class Lake:
    """The declared tables of one lake, read with delta-rs; table handles are cached and refreshed per call."""

    def __init__(self, root: str, conf: Conf):
        self.root = root
        self.conf = conf
        self.catalog = Catalog(root, conf)
        self._tables: dict[str, Any] = {}
        self._lock = threading.Lock()

    def exists(self, name: str) -> bool:
        return self.catalog.exists(name)

    def table(self, name: str):
        """The current DeltaTable of a declared table (re-checked for new commits), or None when not written yet."""
        from deltalake import DeltaTable

        if not self.exists(name):
            return None
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                path = self.catalog.spec(name).path
                table = self._tables[name] = DeltaTable(path, storage_options=storage.delta_options(path))
            else:
                table.update_incremental()
            return table

    def version(self, name: str) -> int | None:
        table = self.table(name)
        return None if table is None else table.version()

    def dates(self, name: str) -> list[date]:
        """The snapshot dates (dt partitions) a table holds, oldest first."""
        table = self.table(name)
        if table is None:
            return []
        return sorted({date.fromisoformat(p["dt"]) for p in table.partitions() if p.get("dt")})

    def scan(self, name: str, columns: list[str] | None = None, **equal) -> pa.Table:
        """Rows of ``name`` where each column equals its value (bound, not formatted); empty when the table is missing.

        A value may be a list or tuple (column in values) or a (low, high) pair
        given as ``slice(low, high)`` (inclusive bounds).
        """
        table = self.table(name)
        if table is None:
            return pa.table({c: pa.array([], pa.string()) for c in columns or []})
        dataset = table.to_pyarrow_dataset()
        conditions = []
        for column, value in equal.items():
            field = pc.field(column)
            if isinstance(value, slice):
                conditions += [field >= pa.scalar(value.start), field <= pa.scalar(value.stop)]
            elif isinstance(value, (list, tuple, set)):
                conditions.append(field.isin(pa.array(list(value))))
            else:
                conditions.append(field == pa.scalar(value))
        where = reduce(lambda a, b: a & b, conditions) if conditions else None
        return dataset.to_table(columns=columns, filter=where)

    def rows(self, name: str, columns: list[str] | None = None, **equal) -> list[dict]:
        return self.scan(name, columns, **equal).to_pylist()

    def columns(self, name: str) -> list[str]:
        return list(self.catalog.spec(name).columns)
