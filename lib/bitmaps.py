"""Segment counts without an engine: compressed bitmaps (Roaring) read with delta-rs.

Each user has a stable integer in ``gold.user_index`` (given once, never
changed, so a bitmap of one date and one of another can be intersected); the
segments stage stores one serialised ``pyroaring.BitMap`` of member indices
per segment and date in ``gold.segment_bitmaps``. Counting a segment reads one
row of one partition with the ``deltalake`` package and takes the bitmap's
cardinality: no Spark session is started.
"""
from __future__ import annotations

from datetime import date

from pyroaring import BitMap

SEGMENT_BITMAPS, SEGMENT_MEMBERS, USER_INDEX = "gold.segment_bitmaps", "gold.segment_members", "gold.user_index"


def serialise(indices) -> bytes:
    """The Roaring serialisation of a set of user indices."""
    bitmap = BitMap(int(i) for i in indices)
    bitmap.run_optimize()
    return bitmap.serialize()


def cardinality(blob: bytes) -> int:
    return len(BitMap.deserialize(blob))


def _partition(catalog, table: str, dt: date, columns: list[str], **equal) -> dict[str, list]:
    """Columns of the rows of ``table`` for snapshot ``dt`` (and column = value filters), without an engine.

    delta-rs lists the partition's live files from the Delta log and pyarrow
    reads their Parquet directly: its dataset layer (``to_pyarrow_table``)
    imports pandas, which alone takes longer than the whole count. Valid for
    the tables Sail writes (no deletion vectors, no column mapping).
    """
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    if not catalog.exists(table):
        raise LookupError(f"{table} does not exist yet in {catalog.lake}; run the segments stage first")
    wanted = list(dict.fromkeys([*columns, *equal]))
    found: dict[str, list] = {column: [] for column in columns}
    for uri in DeltaTable(catalog.spec(table).path).file_uris(file_pruning_predicate=[("dt", "=", dt)]):
        rows = pq.ParquetFile(uri).read(columns=wanted).to_pydict()
        keep = [i for i in range(len(rows[wanted[0]])) if all(rows[c][i] == v for c, v in equal.items())]
        for column in columns:
            found[column] += [rows[column][i] for i in keep]
    return found


def stored_bitmaps(catalog, dt: date, segment: str | None = None) -> dict[str, BitMap]:
    """segment -> its members' bitmap on ``dt``; LookupError when the date has no segments."""
    rows = _partition(catalog, SEGMENT_BITMAPS, dt, ["segment", "bitmap"], **({"segment": segment} if segment else {}))
    if not rows["segment"]:
        raise LookupError(f"no segments stored for {dt}" + (f" under {segment!r}" if segment else "") + "; run the segments stage for that date")
    return {name: BitMap.deserialize(blob) for name, blob in zip(rows["segment"], rows["bitmap"])}


def counts(catalog, dt: date, segment: str | None = None) -> dict[str, int]:
    """segment -> number of members on ``dt`` (one segment when named)."""
    return {name: len(bitmap) for name, bitmap in stored_bitmaps(catalog, dt, segment).items()}


def member_ids(catalog, dt: date, segment: str) -> list[str]:
    """The user ids of ``segment`` on ``dt``, sorted."""
    return sorted(_partition(catalog, SEGMENT_MEMBERS, dt, ["user_id"], segment=segment)["user_id"])


def newest_date(catalog) -> date:
    """The newest snapshot date with stored segments."""
    from deltalake import DeltaTable

    if not catalog.exists(SEGMENT_BITMAPS):
        raise LookupError(f"{SEGMENT_BITMAPS} does not exist yet in {catalog.lake}; run the segments stage first")
    days = [p["dt"] for p in DeltaTable(catalog.spec(SEGMENT_BITMAPS).path).partitions()]
    if not days:
        raise LookupError(f"{SEGMENT_BITMAPS} holds no date yet; run the segments stage first")
    return date.fromisoformat(max(days))
