"""Erasure on request (right to be forgotten): `portrait forget USER_ID...`.

Engine-free, through delta-rs (as maintenance is). For each person:

1. every declared table with a ``user_id`` column (``Catalog.user_tables``:
   derived from conf/tables, so a table added later is covered) loses the
   person's rows - silver, every sub-profile partition, model tags, the master
   and every snapshot, segment members;
2. ``gold.user_index`` keeps the person's index as a tombstone (user id
   ``~erased~N``): the index is never given again, so bitmaps of other dates
   still mean the same users;
3. every bitmap column (``bitmap: binary``) loses the person's index, and its
   counts follow;
4. ``quarantine.records`` loses every row whose record key is the person or
   whose raw line or detail names the id;
5. files under the lake outside the tables and the landing zone (exports,
   reports, model artefacts, generator truth): Parquet files lose the person's
   rows, JSON-lines and CSV files the lines naming the id;
6. ``ops.erasure_log`` gets one row per person with the id as a salted hash
   only (``privacy.erasure_salt_env``); it doubles as the suppression list the
   clean stage checks, so nothing brings the person back.

Purge (the default): the touched tables are vacuumed with no retention, so
the files of older versions holding the person go, and their transaction log
is cut at a fresh checkpoint (older commits carried the rows' statistics and
the delete's predicate). Time travel before the purge is given up for the
touched tables. ``purge=False`` records the erasure with ``purged_at`` null and
the maintenance run (``purge_pending``) does the rest.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import logging
import os
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from portrait.core import storage
from portrait.core.tables import Catalog, stats_columns

log = logging.getLogger(__name__)

ERASURE_LOG = "ops.erasure_log"
USER_INDEX = "gold.user_index"
QUARANTINE = "quarantine.records"
TOMBSTONE = "~erased~"
#: Folders under the lake that are not tables: the landing zone is upstream's, _staging the stages' scratch
#: (removed whole), _explorer the explorer's accounts and its serving index (removed: derived, rebuilt by `portrait index`).
NOT_LOOSE = ("landing", "_staging", "_explorer")
SERVING_INDEX = ("_explorer", "index")
LOOSE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".txt", ".log", ".html")


class ErasureError(RuntimeError):
    """An erasure cannot be carried out (or checked) as asked."""


# ------------------------------------------------------------------ hashing


def salt(conf) -> str:
    env = conf.pipeline["privacy"]["erasure_salt_env"]
    value = os.environ.get(env)
    if not value:
        raise ErasureError(
            f"environment variable {env} is not set (conf/pipeline.yaml privacy.erasure_salt_env): erased users are kept "
            "only as salted hashes, so erasing one - or recognising an erased one at clean - needs the salt. "
            "Set it from your secret store; it must stay the same for the life of the lake"
        )
    return value


def user_hash(secret: str, user_id: str) -> str:
    return hashlib.sha256(f"{secret}:{user_id}".encode()).hexdigest()


def salt_id(secret: str) -> str:
    return hashlib.sha256(f"portrait-salt:{secret}".encode()).hexdigest()[:12]


def suppression_list(catalog: Catalog) -> tuple[list[str], set[str]]:
    """(user hashes, salt ids) of ``ops.erasure_log``; empty if nobody was ever erased."""
    if not catalog.exists(ERASURE_LOG):
        return [], set()
    table = _delta(catalog, ERASURE_LOG).to_pyarrow_table(columns=["user_hash", "salt_id"])
    return table.column("user_hash").to_pylist(), set(table.column("salt_id").to_pylist())


def checked_salt(catalog: Catalog) -> tuple[str | None, list[str]]:
    """(salt, hashes) for the clean stage: (None, []) if nobody was erased; the salt must be the one that made the hashes."""
    env = catalog.conf.pipeline["privacy"]["erasure_salt_env"]
    hashes, salt_ids = suppression_list(catalog)
    if not hashes:
        return None, []
    secret = salt(catalog.conf)
    if salt_ids != {salt_id(secret)}:
        raise ErasureError(
            f"the erasure salt in {env} is not the one {ERASURE_LOG} was "
            "written with: erased users would not be recognised and could come back. Restore the original salt"
        )
    return secret, hashes


# ------------------------------------------------------------------ helpers


def _delta(catalog: Catalog, name: str):
    from deltalake import DeltaTable

    path = catalog.spec(name).path
    return DeltaTable(path, storage_options=storage.delta_options(path))


def rows_of(table, columns: list[str], user_ids: list[str], filters=None):
    """``columns`` of the rows of ``user_ids`` (a delta-rs table). Filtered after the read: files rewritten by
    delta-rs may store user_id as string_view, which pyarrow's ``in`` filter on the scan cannot compare."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data = table.to_pyarrow_table(columns=sorted({"user_id", *columns}), filters=filters)
    ids = pc.cast(data.column("user_id"), pa.string())
    return data.filter(pc.fill_null(pc.is_in(ids, value_set=pa.array(user_ids, pa.string())), False)).select(columns)


def requester() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no account name in a container
        return f"uid:{os.getuid()}"


def _bitmap_tables(catalog: Catalog) -> list[str]:
    """Tables holding Roaring bitmaps of gold.user_index indices (a ``bitmap: binary`` column)."""
    return [n for n in catalog.names() if catalog.spec(n).columns.get("bitmap") == "binary"]


# ------------------------------------------------------------------ removal


def _rewrite(catalog: Catalog, name: str, columns: list[str], dropped, changed=None) -> int:
    """Rewrite the partitions of ``name`` holding rows ``dropped(table) -> mask`` marks (or ``changed(table) -> table``
    alters); one commit; returns the rows dropped or changed.

    Not delta-rs's own DELETE/UPDATE: the files those write store strings as
    string_view, which pyarrow filters (the explorer's, a warehouse's) cannot
    compare with the table's string type. Here the rewritten files keep the
    table's own Arrow types.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import write_deltalake

    spec = catalog.spec(name)
    table = _delta(catalog, name)
    parts = list(spec.partition_by)
    probe = table.to_pyarrow_table(columns=sorted({*columns, *parts}))
    hits = dropped(probe)
    found = int(pc.sum(pc.cast(hits, pa.int64())).as_py() or 0)
    if not found:
        return 0
    schema = table.schema().to_arrow()
    if parts:
        touched = probe.filter(hits).select(parts).group_by(parts).aggregate([]).to_pylist()
        clauses = [" AND ".join(f"`{c}` = '{row[c]}'" for c in parts) for row in touched]
        predicate = " OR ".join(f"({c})" for c in clauses)
        data = pa.concat_tables(table.to_pyarrow_table(partitions=[(c, "=", str(row[c])) for c in parts]) for row in touched)
    else:
        predicate, data = None, table.to_pyarrow_table()
    data = changed(data) if changed else data.filter(pc.invert(dropped(data)))
    write_deltalake(
        table,
        data.select(schema.names).cast(pa.schema(schema)) if data.num_rows else pa.Table.from_pylist([], pa.schema(schema)),
        mode="overwrite",
        predicate=predicate,
        partition_by=parts or None,
        storage_options=storage.delta_options(spec.path),
    )
    return found


def _is_user(user_ids: list[str]):
    import pyarrow as pa
    import pyarrow.compute as pc

    value_set = pa.array(user_ids, pa.string())
    return lambda data: pc.fill_null(pc.is_in(pc.cast(data.column("user_id"), pa.string()), value_set=value_set), False)


def _remove_rows(catalog: Catalog, name: str, user_ids: list[str]) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    is_user = _is_user(user_ids)
    if name != USER_INDEX:
        return _rewrite(catalog, name, ["user_id"], is_user)

    def tombstoned(data):  # the index stays, the id goes: never given again
        ids = pc.cast(data.column("user_id"), pa.string())
        stone = pc.binary_join_element_wise(pa.scalar(TOMBSTONE), pc.cast(data.column("user_index"), pa.string()), "")
        return data.set_column(data.schema.get_field_index("user_id"), "user_id", pc.if_else(is_user(data), stone, ids))

    return _rewrite(catalog, name, ["user_id", "user_index"], is_user, changed=tombstoned)


def _quarantined_by(user_ids: list[str]):
    """Rows naming the person: record key, the id as a JSON string in the raw line, the id as a word of the detail."""
    import pyarrow as pa
    import pyarrow.compute as pc

    words = "|".join(re.escape(u) for u in user_ids)

    def named(data):
        key = pc.is_in(pc.cast(data.column("record_key"), pa.string()), value_set=pa.array(user_ids, pa.string()))
        raw = pc.match_substring_regex(pc.cast(data.column("raw_line"), pa.string()), f'"(?:{words})"')
        detail = pc.match_substring_regex(pc.cast(data.column("detail"), pa.string()), f"(^|[^A-Za-z0-9_-])(?:{words})($|[^A-Za-z0-9_-])")
        return pc.fill_null(pc.or_(pc.or_(pc.fill_null(key, False), pc.fill_null(raw, False)), pc.fill_null(detail, False)), False)

    return named


def _remove_quarantined(catalog: Catalog, user_ids: list[str]) -> int:
    return _rewrite(catalog, QUARANTINE, ["record_key", "raw_line", "detail"], _quarantined_by(user_ids))


def _erased_indices(catalog: Catalog, user_ids: list[str]) -> list[int]:
    if not catalog.exists(USER_INDEX):
        return []
    found = rows_of(_delta(catalog, USER_INDEX), ["user_index"], user_ids)
    return [int(i) for i in found.column("user_index").to_pylist()]


def _remove_from_bitmaps(catalog: Catalog, name: str, indices: list[int]) -> int:
    """Take ``indices`` out of every bitmap of ``name``; the member counts beside it follow. Rows changed."""
    import pyarrow as pa
    from deltalake import write_deltalake
    from pyroaring import BitMap

    if not indices:
        return 0
    spec = catalog.spec(name)
    table = _delta(catalog, name)
    data = table.to_pyarrow_table()
    gone = BitMap(indices)
    bitmaps, changed, removed = [], 0, []
    for blob in data.column("bitmap").to_pylist():
        members = BitMap.deserialize(blob) if blob is not None else None
        hit = len(members & gone) if members is not None else 0
        if hit:
            members -= gone
            changed += 1
        bitmaps.append(members.serialize() if members is not None else None)
        removed.append(hit)
    if not changed:
        return 0
    columns = {"bitmap": pa.array(bitmaps, pa.binary())}
    for count in ("members", "bitmap_members", "users"):
        if count in spec.columns:
            before = data.column(count).to_pylist()
            columns[count] = pa.array([None if b is None else b - r for b, r in zip(before, removed, strict=True)], pa.int64())
    for column, values in columns.items():
        data = data.set_column(data.schema.get_field_index(column), column, values)
    write_deltalake(
        table,
        data,
        mode="overwrite",
        partition_by=list(spec.partition_by) or None,
        storage_options=storage.delta_options(spec.path),
    )
    return changed


def _loose_files(lake: str) -> list[str]:
    """Files under the lake that belong to no declared table and are not landing or staging."""
    found = []
    for path in _walk(lake):
        rel = _relative(lake, path)
        top = rel.split("/", 1)[0]
        if top in NOT_LOOSE or "/_delta_log/" in f"/{rel}" or not rel.endswith(LOOSE_SUFFIXES):
            continue
        if _in_table(rel):
            continue
        found.append(path)
    return found


def _in_table(rel: str) -> bool:
    """A data file of a Delta table: a folder above it holds a _delta_log."""
    return bool(re.match(r"^(silver|profile|gold|quarantine|ops)/[^/]+/", rel))


def _scrub_loose_file(path: str, user_ids: list[str]) -> int:
    """Remove the person from one loose file; rows or lines removed."""
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        data = pq.read_table(io.BytesIO(storage.read_bytes(path)))
        if "user_id" not in data.column_names:
            return 0  # no per-user rows
        keep = pc.invert(pc.fill_null(pc.is_in(data.column("user_id"), value_set=pa.array(user_ids)), False))
        kept = data.filter(keep)
        if kept.num_rows == data.num_rows:
            return 0
        _write_parquet(path, kept)
        return data.num_rows - kept.num_rows
    text = storage.read_bytes(path).decode("utf-8", errors="replace")
    pattern = re.compile("|".join(rf"(?<![A-Za-z0-9_-]){re.escape(u)}(?![A-Za-z0-9_-])" for u in user_ids))
    if not pattern.search(text):
        return 0
    if path.endswith(".json"):  # one document: blank the id (an artefact that names a person keeps no trace of them)
        scrubbed, n = pattern.subn(TOMBSTONE, text)
        _write_text(path, scrubbed)
        return n
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if not pattern.search(line)]
    _write_text(path, "".join(kept))
    return len(lines) - len(kept)


def _write_parquet(path: str, data) -> None:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(data, buffer)
    storage.write_bytes(path, buffer.getvalue())


def _write_text(path: str, text: str) -> None:
    storage.write_text(path, text)


def _walk(root: str) -> list[str]:
    """Every file under ``root`` (a local folder or an object-store prefix)."""
    if not storage.is_remote(root):
        base = Path(root)
        return [str(p) for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
    import obstore

    store, key = storage._obj(root)
    prefix = str(root).rstrip("/")[: -len(key.strip("/"))] if key.strip("/") else str(root).rstrip("/") + "/"
    return [prefix + meta["path"] for batch in obstore.list(store, key.rstrip("/") + "/") for meta in batch]


def _relative(root: str, path: str) -> str:
    return str(path)[len(str(root).rstrip("/")) + 1 :].replace("\\", "/")


def _remove_staged_leftovers(lake: str, conf) -> list[str]:
    """Remove what failed or killed runs left in staging (scratch here, staged copies inside the tables: user ids in clear).

    Each stage is cleared under its run lock, so a running stage is never
    pulled from under it: a held lock refuses the erasure at once, before
    anything is touched - run it again when that stage has finished.
    """
    from datetime import date

    from portrait.core import pipeline

    staging = storage.join(lake, "_staging")
    stages = [name for name in storage.list_dir(staging) if not name.endswith(".lock")]
    removed = []
    for stage in stages:
        holder = pipeline.RunContext(None, lake, date.today(), conf)
        try:
            with pipeline.stage_lock(holder, stage):  # re-entrant: the clean stage carrying out landed requests holds its own
                for name in storage.list_dir(storage.join(staging, stage)):
                    pipeline.remove_staged_folder(lake, conf, stage, name)
                    removed.append(f"_staging/{stage}/{name}")
        except pipeline.StagingError as held:
            raise ErasureError(
                f"{held}: its staged rows may hold the people to erase; "
                "run `portrait forget` again when it has finished (nothing was erased)"
            ) from None
    return removed


# ------------------------------------------------------------------ purge


def purge(catalog: Catalog, name: str) -> int:
    """Drop every older version of ``name``: vacuum with no retention, then cut the log at a fresh checkpoint.

    The commit that removed the person carries the delete's predicate (the ids)
    and older commits the statistics of files that held them, so after the
    vacuum one more commit (a table property naming the purge, no ids) gets a
    checkpoint and every log file before it is deleted. Returns files removed.
    """
    table = _delta(catalog, name)
    removed = table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False)
    spec = catalog.spec(name)
    properties = {"portrait.purged_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if spec.pii:  # a table made before the personal columns were kept out of the statistics gets it now
        properties["delta.dataSkippingStatsColumns"] = stats_columns(spec)
    table.alter.set_table_properties(properties, raise_if_not_exists=False)
    table = _delta(catalog, name)
    table.create_checkpoint()
    checkpoint = table.version()
    log_dir = storage.join(catalog.spec(name).path, "_delta_log")
    cut = 0
    for path in _walk(log_dir):
        match = re.match(r"^(\d{20})\.", _relative(log_dir, path))
        if match and int(match.group(1)) < checkpoint:
            storage.remove(path)
            cut += 1
    log.info("purged %s: %d files vacuumed, %d log files before checkpoint %d removed", name, len(removed), cut, checkpoint)
    return len(removed) + cut


# ------------------------------------------------------------------ forget


def forget(lake: str, conf, user_ids: list[str], reason: str = "", requested_by: str | None = None, do_purge: bool = True) -> dict:
    """Erase ``user_ids`` from the lake (see the module doc); returns what was done."""
    started = time.perf_counter()
    user_ids = sorted({str(u).strip() for u in user_ids if str(u).strip()})
    if not user_ids:
        raise ErasureError("no user id given")
    if any(u.startswith(TOMBSTONE) for u in user_ids):
        raise ErasureError(f"{TOMBSTONE}N is a tombstone, not a user id")
    catalog = Catalog(lake, conf)
    secret = salt(conf)  # before anything is touched
    known, salt_ids = suppression_list(catalog)
    if salt_ids and salt_ids != {salt_id(secret)}:
        raise ErasureError(f"the salt in {conf.pipeline['privacy']['erasure_salt_env']} is not the one {ERASURE_LOG} was written with")
    staged = _remove_staged_leftovers(lake, conf)  # first: refuses at once while a stage runs
    if storage.is_dir(storage.join(lake, *SERVING_INDEX)):  # the explorer's copy of the master: rebuilt without them
        storage.remove_tree(storage.join(lake, *SERVING_INDEX))
        staged.append("/".join(SERVING_INDEX))
    indices = _erased_indices(catalog, user_ids)  # before the index is tombstoned
    touched: dict[str, int] = {}
    for name in catalog.user_tables():
        if catalog.exists(name):
            rows = _remove_rows(catalog, name, user_ids)
            if rows:
                touched[name] = rows
    for name in _bitmap_tables(catalog):
        if catalog.exists(name):
            rows = _remove_from_bitmaps(catalog, name, indices)
            if rows:
                touched[name] = rows
    if catalog.exists(QUARANTINE):
        rows = _remove_quarantined(catalog, user_ids)
        if rows:
            touched[QUARANTINE] = rows
    files = {}
    for path in _loose_files(lake):
        rows = _scrub_loose_file(path, user_ids)
        if rows:
            files[_relative(lake, path)] = rows
    purged_at = None
    if do_purge:
        for name in touched:
            purge(catalog, name)
        purged_at = datetime.now(UTC)
    erased_at = datetime.now(UTC)
    erasure_id = uuid.uuid4().hex
    tables = sorted(touched) + [f"file:{f}" for f in sorted(files)]
    rows = [
        {
            "user_hash": user_hash(secret, uid),
            "salt_id": salt_id(secret),
            "erasure_id": erasure_id,
            "requested_by": requested_by or f"cli:{requester()}",
            "reason": reason,
            "erased_at": erased_at,
            "tables": tables,
            "rows_removed": sum(touched.values()) + sum(files.values()),
            "purged_at": purged_at,
        }
        for uid in user_ids
        if user_hash(secret, uid) not in set(known)
    ]
    _record(catalog, rows)
    if do_purge and catalog.exists(ERASURE_LOG):
        purge(catalog, ERASURE_LOG)  # its own older versions hold only hashes, but keep one shape for every table
    return {
        "erasure_id": erasure_id,
        "users": len(user_ids),
        "already_erased": len(user_ids) - len(rows),
        "tables": touched,
        "files": files,
        "derived_removed": staged,  # staged leftovers, the serving index
        "purged": do_purge,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _arrow_schema(catalog: Catalog, name: str):
    import pyarrow as pa

    kinds = {
        "string": pa.string(),
        "bigint": pa.int64(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "array<string>": pa.list_(pa.string()),
    }
    return pa.schema([(c, kinds[k]) for c, k in catalog.spec(name).columns.items()])


def append_rows(catalog: Catalog, name: str, rows: list[dict]) -> None:
    """Append plain rows to a small ops table through delta-rs (the engine-free commands: forget, exports)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    if not rows:
        return
    schema = _arrow_schema(catalog, name)
    unknown = set(rows[0]) ^ set(schema.names)
    if unknown:
        raise ValueError(f"{name}: rows do not match the declared columns ({', '.join(sorted(unknown))})")
    path = catalog.spec(name).path
    write_deltalake(path, pa.Table.from_pylist(rows, schema=schema), mode="append", storage_options=storage.delta_options(path))


def _record(catalog: Catalog, rows: list[dict]) -> None:
    append_rows(catalog, ERASURE_LOG, rows)


# ------------------------------------------------------------------ deferred purge, landing requests


def purge_pending(lake: str, conf) -> dict:
    """Purge the tables of every erasure recorded with ``purged_at`` null (`forget --no-purge`); the maintenance run calls it."""
    catalog = Catalog(lake, conf)
    if not catalog.exists(ERASURE_LOG):
        return {}
    log_table = _delta(catalog, ERASURE_LOG)
    pending = log_table.to_pyarrow_table(columns=["erasure_id", "tables", "purged_at"]).to_pylist()
    tables = sorted({t for row in pending if row["purged_at"] is None for t in row["tables"] if not t.startswith("file:")})
    if not any(row["purged_at"] is None for row in pending):
        return {}
    done = {name: purge(catalog, name) for name in tables if catalog.exists(name)}
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    log_table.update(updates={"purged_at": f"CAST('{now}' AS TIMESTAMP)"}, predicate="purged_at IS NULL")
    purge(catalog, ERASURE_LOG)
    return done


def landed_requests(lake: str, conf, dt) -> list[tuple[str, str, str]]:
    """(user_id, reason, file) of each erasure request landed on ``dt`` ({lake}/landing/{source}/dt=D/*.jsonl)."""
    source = conf.pipeline["privacy"]["erasure_requests_source"]
    folder = storage.join(lake, "landing", source, f"dt={dt}")
    if not storage.is_dir(folder):
        return []
    requests = []
    for path in sorted(_walk(folder)):
        name = _relative(lake, path)
        for line_no, line in enumerate(storage.read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                user_id = str(record["user_id"]).strip()
            except (ValueError, KeyError, TypeError):
                raise ErasureError(f"{name} line {line_no}: an erasure request must be a JSON object with a user_id") from None
            if not user_id:
                raise ErasureError(f"{name} line {line_no}: the user_id is empty")
            requests.append((user_id, str(record.get("reason") or "erasure request"), name))
    return requests


def process_requests(lake: str, conf, dt) -> dict | None:
    """Carry out the erasure requests landed on ``dt`` (the daily run's clean stage calls this first)."""
    do_purge = conf.pipeline["privacy"]["erasure_requests_purge"]
    requests = landed_requests(lake, conf, dt)
    if not requests:
        return None
    by_file: dict[tuple[str, str], list[str]] = {}
    for user_id, reason, name in requests:
        by_file.setdefault((name, reason), []).append(user_id)
    done = {}
    for (name, reason), user_ids in by_file.items():
        done[name] = forget(lake, conf, user_ids, reason=reason, requested_by=f"landing:{name}", do_purge=do_purge)
    return done
