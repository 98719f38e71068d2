"""The serving index: the latest master snapshot as a SQLite file keyed by user id.

A derived artefact the master stage publishes (conf/pipeline.yaml
``artefacts.explorer_index``): its publish step, right after writing
``gold.profile_snapshot``, calls ``publish``, which writes one row per user of
the latest snapshot date with the profile already rendered (``master.render``,
the JSON of ``portrait show``) and the name for name search. ``portrait
index`` rebuilds it at any time. A lookup is one primary-key read of a
read-only SQLite file: about 0.03 ms on 1M profiles, where a Delta scan of
the snapshot takes tens of milliseconds or more. The profiles live in an
ordinary rowid table beside the key's own index: a rendered profile (1-3 KB)
is far larger than the twentieth of a page SQLite's WITHOUT ROWID layout
wants, and that layout made the 1M-profile file 4.7 GB (2.1 GB now) and each
lookup three to five times slower. The file is written beside the old one and
renamed over it, so a server reading it never sees half an index; the server
reopens it when the file is replaced.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from datetime import date
from pathlib import Path

from portrait.core import storage
from portrait.core.config import Conf
from portrait.explorer.lake import Lake, json_rows
from portrait.master.render import SNAPSHOT, render

BATCH = 5000
ARTEFACT = "explorer_index"
REOPEN_CHECK_SECONDS = 1.0  # how often a server looks for a replaced index file


def declaration(conf: Conf) -> dict:
    """The index's declaration in conf/pipeline.yaml (``artefacts.explorer_index``)."""
    found = (conf.load("pipeline").get("artefacts") or {}).get(ARTEFACT)
    if found is None:
        raise KeyError(f"conf/pipeline.yaml declares no artefacts.{ARTEFACT} (the explorer's serving index)")
    return found


def index_path(lake: str, conf: Conf | None = None) -> Path:
    """The index file of a lake on local disk (conf/pipeline.yaml ``artefacts.explorer_index.path``)."""
    return Path(lake) / declaration(conf or Conf())["path"]


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
    stored, current = stored_state(index_path(lake.root, lake.conf)), current_state(lake)
    return stored is not None and current is not None and all(stored.get(k) == v for k, v in current.items())


def build(lake: Lake, dt: date | None = None, target: Path | None = None) -> dict:
    """Write the index of snapshot ``dt`` (default: the latest) to ``target`` (default: the lake's index path).

    Returns its state {dt, version, users}; LookupError when there is no such
    snapshot, or when the index would not hold exactly the users of its
    partition (then nothing replaces the old file). A large snapshot is
    rendered by several processes (the declaration's ``settings``), each into
    a file of its own that this one then copies in.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    state = current_state(lake)
    if state is None:
        raise LookupError(f"no master snapshot ({SNAPSHOT}) in {lake.root}: run the pipeline first")
    if dt is not None:
        state["dt"] = dt.isoformat()
    path = target or index_path(lake.root, lake.conf)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    expected = lake.table(SNAPSHOT).to_pyarrow_dataset().count_rows(filter=pc.field("dt") == pa.scalar(date.fromisoformat(state["dt"])))
    parts = _processes(declaration(lake.conf), expected)
    shards = [partial.with_name(f"{partial.name}.{part}") for part in range(1, parts)]
    try:
        with ProcessPoolExecutor(parts - 1, mp_context=multiprocessing.get_context("spawn")) if parts > 1 else nullcontext() as pool:
            pending = [
                pool.submit(_render_part_of, lake.root, str(lake.conf.dir), state["dt"], part, parts, shard, BATCH)
                for part, shard in enumerate(shards, 1)
            ]
            users = render_part(lake, state["dt"], 0, parts, partial, BATCH)
            users += sum(job.result() for job in pending)
        db = sqlite3.connect(partial)
        try:
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            for shard in shards:
                db.execute("ATTACH DATABASE ? AS shard", (str(shard),))
                try:
                    db.execute("INSERT INTO profiles SELECT * FROM shard.profiles")
                except sqlite3.IntegrityError:
                    raise LookupError(
                        f"serving index of {state['dt']}: a user id is in two render processes' parts; not published"
                    ) from None
                db.commit()
                db.execute("DETACH DATABASE shard")
            if users == 0:
                raise LookupError(f"the snapshot of {state['dt']} is empty")
            stored = db.execute("SELECT count(*) FROM profiles").fetchone()[0]
            if stored != users or stored != expected:  # a duplicate user id would have failed the insert
                raise LookupError(f"serving index of {state['dt']}: {stored} profiles for {expected} snapshot rows; not published")
            db.execute("CREATE INDEX profiles_name ON profiles (name COLLATE NOCASE)")
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            state["users"] = str(users)
            db.executemany("INSERT INTO meta VALUES (?, ?)", sorted(state.items()))
            db.commit()
        finally:
            db.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        for shard in shards:
            shard.unlink(missing_ok=True)
    partial.replace(path)
    return state


def _processes(declared: dict, rows: int) -> int:
    """How many processes render a snapshot of ``rows`` profiles (the declaration's ``settings``)."""
    settings = declared.get("settings") or {}
    if "rows_per_process" not in settings:  # not declared: the caller renders everything
        return 1
    wanted = settings.get("processes") or os.cpu_count() or 1
    return max(1, min(wanted, rows // max(1, settings["rows_per_process"])))


def _render_part_of(root: str, conf_dir: str, dt: str, part: int, parts: int, target: Path, batch_size: int) -> int:
    """``render_part`` in a spawned process, which inherits nothing of the caller's engine session or threads: it opens the lake again."""
    return render_part(Lake(root, Conf(conf_dir)), dt, part, parts, target, batch_size)


def render_part(lake: Lake, dt: str, part: int, parts: int, target: Path, batch_size: int) -> int:
    """Render every ``parts``-th batch of snapshot ``dt``, starting at batch ``part``, into a new SQLite file ``target``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    target.unlink(missing_ok=True)
    db = sqlite3.connect(target)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("CREATE TABLE profiles (user_id TEXT PRIMARY KEY, name TEXT, profile TEXT NOT NULL)")
        snapshot = lake.table(SNAPSHOT).to_pyarrow_dataset()
        of_date = pc.field("dt") == pa.scalar(date.fromisoformat(dt))
        users = 0
        for number, batch in enumerate(snapshot.to_batches(filter=of_date, batch_size=batch_size)):
            if number % parts != part:
                continue
            rows = json_rows(batch)
            db.executemany(
                "INSERT INTO profiles VALUES (?, ?, ?)",
                [(r["user_id"], r.get("name"), json.dumps(render(r), ensure_ascii=False, separators=(",", ":"))) for r in rows],
            )
            users += len(rows)
        db.commit()
    finally:
        db.close()
    return users


def publish(ctx, artefact: dict) -> dict:
    """The master stage's publish step: build the index of the latest published snapshot (``artefact``: its declaration).

    On a lake in object storage the file is built on local disk and uploaded
    as one object (readers get the old or the new one).
    """
    lake = Lake(ctx.lake, ctx.conf)
    if artefact["source"] != SNAPSHOT:
        raise ValueError(f"conf/pipeline.yaml artefacts.{ARTEFACT}.source: the index renders {SNAPSHOT}, not {artefact['source']}")
    if current_state(lake) is None:  # e.g. rolled back to before the first snapshot: no index outlives its rows
        storage.remove(storage.join(ctx.lake, artefact["path"]))
        return {"removed": "no snapshot to serve"}
    if not storage.is_remote(ctx.lake):
        return build(lake)
    with tempfile.TemporaryDirectory(prefix="portrait-index-") as scratch:
        local = Path(scratch) / "profile.sqlite"
        state = build(lake, target=local)
        storage.write_bytes(storage.join(ctx.lake, artefact["path"]), local.read_bytes())
    return state


def status(lake: Lake) -> str:
    """One line on the index a server would serve: fresh, stale (and how) or missing."""
    stored, current = stored_state(index_path(lake.root, lake.conf)), current_state(lake)
    if current is None:
        return "no master snapshot yet"
    if stored is None:
        return f"missing: the master stage publishes it (or run `portrait index --lake {lake.root}`); profiles come from Delta scans"
    if any(stored.get(k) != v for k, v in current.items()):
        return f"stale ({stored} for snapshot {current}): rerun the master stage or `portrait index`"
    return f"fresh {stored}"


class Index:
    """Read-only lookups, one SQLite connection per server thread; reopened when the file is replaced.

    Whether the file was replaced is looked at (one stat) at most every
    REOPEN_CHECK_SECONDS per thread, not on every lookup.
    """

    def __init__(self, lake: str, conf: Conf | None = None):
        self.path = index_path(lake, conf)
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection | None:
        local = self._local
        now = time.monotonic()
        if getattr(local, "checked", -1e9) + REOPEN_CHECK_SECONDS > now:
            return local.db
        local.checked = now
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            inode = None
        if not hasattr(local, "db") or local.inode != inode:
            if getattr(local, "db", None) is not None:
                local.db.close()
            local.db = None if inode is None else sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
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
