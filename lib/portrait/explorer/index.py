"""The serving index: the latest master snapshot as a SQLite file keyed by user id.

A derived artefact, rebuilt from ``gold.profile_snapshot`` at any time
(``portrait index``, or ``portrait serve`` when the snapshot has a newer date
or table version than the index): one row per user with the profile already
rendered (``master.render``, the JSON of ``portrait show``) and the name for
name search. A lookup is one primary-key read of a read-only SQLite file
(WITHOUT ROWID, so the row sits in the key's B-tree page): well under a
millisecond, where a Delta scan of the snapshot takes tens of milliseconds or
more. The file is written beside the old one and renamed over it, so a server
reading it never sees half an index.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from datetime import date
from pathlib import Path

from portrait.explorer.lake import Lake, jsonable
from portrait.master.render import SNAPSHOT, render

BATCH = 5000


def index_path(lake: str) -> Path:
    return Path(lake) / "_explorer" / "index" / "profile.sqlite"


def stored_state(path: Path) -> dict | None:
    """{dt, version, users} the index was built from, or None when there is none (or it is unreadable)."""
    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        return None


def current_state(lake: Lake) -> dict | None:
    dates = lake.dates(SNAPSHOT)
    if not dates:
        return None
    return {"dt": dates[-1].isoformat(), "version": str(lake.version(SNAPSHOT))}


def is_fresh(lake: Lake) -> bool:
    stored, current = stored_state(index_path(lake.root)), current_state(lake)
    return stored is not None and current is not None and all(stored.get(k) == v for k, v in current.items())


def build(lake: Lake, dt: date | None = None) -> dict:
    """Write the index of snapshot ``dt`` (default: the latest); returns its state {dt, version, users}."""
    state = current_state(lake)
    if state is None:
        raise LookupError(f"no master snapshot ({SNAPSHOT}) in {lake.root}: run the pipeline first")
    if dt is not None:
        state["dt"] = dt.isoformat()
    path = index_path(lake.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    db = sqlite3.connect(partial)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("CREATE TABLE profiles (user_id TEXT PRIMARY KEY, name TEXT, profile TEXT NOT NULL) WITHOUT ROWID")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        snapshot = lake.table(SNAPSHOT).to_pyarrow_dataset()
        import pyarrow as pa
        import pyarrow.compute as pc

        users = 0
        for batch in snapshot.to_batches(filter=pc.field("dt") == pa.scalar(date.fromisoformat(state["dt"])), batch_size=BATCH):
            rows = [jsonable(row) for row in batch.to_pylist()]
            db.executemany(
                "INSERT INTO profiles VALUES (?, ?, ?)",
                [(r["user_id"], r.get("name"), json.dumps(render(r), ensure_ascii=False, separators=(",", ":"))) for r in rows],
            )
            users += len(rows)
        if users == 0:
            raise LookupError(f"the snapshot of {state['dt']} is empty")
        db.execute("CREATE INDEX profiles_name ON profiles (name COLLATE NOCASE)")
        state["users"] = str(users)
        db.executemany("INSERT INTO meta VALUES (?, ?)", sorted(state.items()))
        db.commit()
    finally:
        db.close()
    partial.replace(path)
    return state


def ensure(lake: Lake) -> dict | None:
    """Rebuild the index when it is missing or older than the snapshot; its state (None: no snapshot yet)."""
    if current_state(lake) is None:
        return None
    if not is_fresh(lake):
        return build(lake)
    return stored_state(index_path(lake.root))


class Index:
    """Read-only lookups, one SQLite connection per server thread; reopened when the file is replaced."""

    def __init__(self, lake: str):
        self.path = index_path(lake)
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection | None:
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            return None
        local = self._local
        if getattr(local, "inode", None) != inode:
            if getattr(local, "db", None) is not None:
                local.db.close()
            local.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            local.inode = inode
        return local.db

    def state(self) -> dict:
        db = self._db()
        return {} if db is None else dict(db.execute("SELECT key, value FROM meta").fetchall())

    def profile_json(self, user_id: str) -> str | None:
        """The rendered profile (JSON text) of one user on the index's date, or None."""
        db = self._db()
        if db is None:
            return None
        found = db.execute("SELECT profile FROM profiles WHERE user_id = ?", (user_id,)).fetchone()
        return None if found is None else found[0]

    def search_name(self, text: str, limit: int = 50) -> list[tuple[str, str]]:
        """(user_id, name) of users whose name contains ``text`` (case-insensitive; LIKE wildcards in ``text`` are literal)."""
        db = self._db()
        if db is None or not text:
            return []
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return db.execute(
            "SELECT user_id, name FROM profiles WHERE name LIKE ? ESCAPE '\\' ORDER BY user_id LIMIT ?", (pattern, limit)
        ).fetchall()

    def search_id(self, prefix: str, limit: int = 50) -> list[str]:
        """User ids starting with ``prefix`` (a range scan of the key)."""
        db = self._db()
        if db is None or not prefix:
            return []
        return [
            r[0]
            for r in db.execute(
                "SELECT user_id FROM profiles WHERE user_id >= ? AND user_id < ? ORDER BY user_id LIMIT ?",
                (prefix, prefix + "\uffff", limit),
            )
        ]
