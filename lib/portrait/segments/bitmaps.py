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

from portrait.core import storage

SEGMENT_BITMAPS, SEGMENT_MEMBERS, USER_INDEX = "gold.segment_bitmaps", "gold.segment_members", "gold.user_index"
TAG_VALUE_BITMAPS = "gold.tag_value_bitmaps"
EVERYONE = ("all_users", "all")  # the tag and value of the whole snapshot's bitmap


def serialise(indices) -> bytes:
    """The Roaring serialisation of a set of user indices."""
    bitmap = BitMap(int(i) for i in indices)
    bitmap.run_optimize()
    return bitmap.serialize()


def cardinality(blob: bytes) -> int:
    return len(BitMap.deserialize(blob))


def _partition(catalog, table: str, dt: date, columns: list[str], **equal) -> dict[str, list]:
    """Columns of the rows of ``table`` for snapshot ``dt`` (and column = value filters), without an engine.

    delta-rs's own query engine (``QueryBuilder``, DataFusion) reads the
    partition and returns arro3 arrays: neither pyarrow, numpy nor pandas is
    imported, which is most of the time a command takes (pyarrow's dataset
    reader would import pandas, about 0.8 s here on its own).
    """
    from deltalake import DeltaTable, QueryBuilder

    if not catalog.exists(table):
        raise LookupError(f"{table} does not exist yet in {catalog.lake}; run the segments stage first")
    where = " AND ".join([f"dt = DATE '{dt.isoformat()}'"] + [f'"{c}" = {_sql_text(v)}' for c, v in equal.items()])
    names = ", ".join(f'"{c}"' for c in columns)
    query = f"SELECT {names} FROM t WHERE {where}"
    found = (
        QueryBuilder()
        .register("t", DeltaTable(catalog.spec(table).path, storage_options=storage.delta_options(catalog.spec(table).path)))
        .execute(query)
        .read_all()
    )
    return {column: found.column(column).to_pylist() for column in columns}


def _sql_text(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def stored_bitmaps(catalog, dt: date, segment: str | None = None) -> dict[str, BitMap]:
    """segment -> its members' bitmap on ``dt``; LookupError when the date has no segments."""
    rows = _partition(catalog, SEGMENT_BITMAPS, dt, ["segment", "bitmap"], **({"segment": segment} if segment else {}))
    if not rows["segment"]:
        raise LookupError(
            f"no segments stored for {dt}" + (f" under {segment!r}" if segment else "") + "; run the segments stage for that date"
        )
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
    days = [
        p["dt"]
        for p in DeltaTable(
            catalog.spec(SEGMENT_BITMAPS).path, storage_options=storage.delta_options(catalog.spec(SEGMENT_BITMAPS).path)
        ).partitions()
    ]
    if not days:
        raise LookupError(f"{SEGMENT_BITMAPS} holds no date yet; run the segments stage first")
    return date.fromisoformat(max(days))


def count_where(catalog, dt: date, rule: str, book) -> int:
    """Users of the snapshot of ``dt`` for whom ``rule`` is true, from the tag-value bitmaps alone.

    ``rule`` uses the segment rule language restricted to the bitmap tags:
    ``tag == 'v'``, ``!=``, ``in (...)``, ``not in``, a boolean tag alone, and
    ``and``/``or``/``not``. A null tag is unknown, as in SQL: ``not`` and
    ``!=`` leave its users out, as a segment rule would.
    """
    import ast

    from portrait.segments.rules import compile_rule

    compile_rule("--where (over the bitmap tags)", rule, set(book.bitmap_tags), book.thresholds)  # unknown tags and bad syntax, named
    rows = _partition(catalog, TAG_VALUE_BITMAPS, dt, ["tag", "value", "bitmap"])
    if not rows["tag"]:
        raise LookupError(f"no tag-value bitmaps stored for {dt}; run the segments stage for that date")
    stored = {(t, v): blob for t, v, blob in zip(rows["tag"], rows["value"], rows["bitmap"])}
    true, _ = _Truth(stored).of(ast.parse(rule.strip(), mode="eval").body)
    return len(true)


class _Truth:
    """Three-valued logic over bitmaps: each expression is (users for whom true, users for whom unknown)."""

    def __init__(self, stored: dict[tuple[str, str], bytes]):
        self.stored, self.cache = stored, {}
        self.everyone = self.bitmap(*EVERYONE)

    def bitmap(self, tag: str, value: str) -> BitMap:
        if (tag, value) not in self.cache:
            blob = self.stored.get((tag, value))
            self.cache[tag, value] = BitMap.deserialize(blob) if blob is not None else BitMap()
        return self.cache[tag, value]

    def of(self, node) -> tuple[BitMap, BitMap]:
        import ast

        if isinstance(node, ast.Name):
            return self.bitmap(node.id, "true"), self.bitmap(node.id, "unknown")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            true, unknown = self.of(node.operand)
            return self.everyone - true - unknown, unknown
        if isinstance(node, ast.BoolOp):
            parts = [self.of(value) for value in node.values]
            trues = [t for t, _ in parts]
            falses = [self.everyone - t - u for t, u in parts]
            if isinstance(node.op, ast.And):
                true, false = BitMap.intersection(*trues), BitMap.union(*falses)
            else:
                true, false = BitMap.union(*trues), BitMap.intersection(*falses)
            return true, self.everyone - true - false
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.left, ast.Name):
            return self.compare(node.left.id, node.ops[0], node.comparators[0])
        raise ValueError(f"ad-hoc counts compare one bitmap tag with ==, !=, in or not in: {ast.unparse(node)!r}")

    def compare(self, tag: str, op, right) -> tuple[BitMap, BitMap]:
        import ast

        values = right.elts if isinstance(op, (ast.In, ast.NotIn)) else [right]  # compile_rule checked the list
        if not all(isinstance(v, ast.Constant) for v in values):
            raise ValueError(f"ad-hoc counts compare {tag} with a quoted value or a list of them: {ast.unparse(right)!r}")
        texts = [str(v.value).lower() if isinstance(v.value, bool) else str(v.value) for v in values]
        matching = BitMap.union(BitMap(), *(self.bitmap(tag, text) for text in texts))
        unknown = self.bitmap(tag, "unknown")
        if isinstance(op, (ast.Eq, ast.In)):
            return matching, unknown
        if isinstance(op, (ast.NotEq, ast.NotIn)):
            return self.everyone - matching - unknown, unknown
        raise ValueError(f"ad-hoc counts compare {tag} with ==, !=, in or not in, not {type(op).__name__}")
