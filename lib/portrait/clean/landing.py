"""Reading the raw landing zone: the one place that knows its file layout.

``{lake}/landing/{source}/dt=YYYY-MM-DD/*.jsonl`` (or ``*.jsonl.gz``). Every
line keeps the file it came from and its line number, so a quarantined record
can be found again. Nothing in a landing folder is ignored:

* a ``.jsonl`` / ``.jsonl.gz`` file is read line by line (one line per ``\\n``;
  a trailing ``\\r`` of CRLF files and a UTF-8 byte order mark are dropped);
* a line that is not UTF-8 becomes a row with ``read_rule`` ``invalid_utf8``
  (the engine's text reader would stop the whole date on it);
* a file that cannot be read at all (a corrupt gzip, no permission) becomes one
  row ``unreadable_file`` naming it and its size;
* any other file or folder becomes one row ``unexpected_file``.

The contract check (``portrait.clean.contract``) turns ``read_rule`` into the
quarantine rule, so each of these is counted in ``ops.reconciliation``.
"""

from __future__ import annotations

import codecs
import gzip
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import date
from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from portrait.core import storage

RAW_SCHEMA = "source_file string, line_no bigint, raw_line string, read_rule string, read_detail string"
#: The file names read as landing files; anything else is reported as unexpected_file.
READ_SUFFIXES = (".jsonl", ".jsonl.gz")
#: Rules found while reading, in the order the contract check tries them.
READ_RULES = ("unexpected_file", "unreadable_file", "invalid_utf8")
_CHUNK = 8 << 20


class LakeNotFound(storage.LakeError):
    """The lake path holds no landing zone: a wrong ``--lake``, never a new lake to create."""


def landing_root(lake: str | Path) -> str:
    return storage.join(str(lake), "landing")


def landing_dir(lake: str | Path, source: str, dt: date | str) -> str:
    return storage.join(str(lake), "landing", source, f"dt={dt}")


def require_landing_zone(lake: str | Path, create: bool = False) -> None:
    """Refuse a lake without ``landing/`` (``create``: make the folder instead, for a new lake)."""
    root = landing_root(lake)
    if storage.is_dir(root):
        return
    if create:
        if not storage.is_remote(root):
            Path(root).mkdir(parents=True, exist_ok=True)
        return  # object storage has no folders: the first landed file makes it
    raise LakeNotFound(
        f"lake {lake} holds no landing zone ({root} does not exist): check --lake / PORTRAIT_LAKE, "
        "or create a lake with `portrait generate` or `portrait run --create`"
    )


def landing_files(lake: str | Path, source: str, dt: date | str) -> list[str]:
    """The files of one source and date that are read as landing files."""
    folder = landing_dir(lake, source, dt)
    return [storage.join(folder, name) for name in storage.list_dir(folder) if name.endswith(READ_SUFFIXES)]


@dataclass
class Landing:
    """What one source's landing folder held for a date: its lines, and every file found."""

    lines: DataFrame
    files: list[str] = field(default_factory=list)  # every entry of the folder, read or not
    problems: list[str] = field(default_factory=list)  # files not read whole, one sentence each


class _Unreadable(Exception):
    pass


def read_landing(spark, lake: str | Path, source: str, dt: date | str) -> Landing:
    """All lines of one source and landing date, with file and line number, and the files found.

    A source that never landed gives no lines and no files (the clean gate decides
    whether that is allowed: conf/landing.yaml ``optional`` / ``empty_dates``).
    """
    folder = landing_dir(lake, source, dt)
    names = storage.list_dir(folder)
    frames: list[DataFrame] = []
    local_rows: list[tuple] = []
    problems: list[str] = []
    for name in names:
        path = storage.join(folder, name)
        size = storage.size(path)
        if not name.endswith(READ_SUFFIXES) or storage.is_dir(path):
            what = "a folder" if storage.is_dir(path) else f"{size} bytes"
            detail = f"{source} landing file {name} ({what}) is not a .jsonl or .jsonl.gz file: not read"
            local_rows.append((path, 0, None, "unexpected_file", detail))
            problems.append(detail)
            continue
        if size == 0:
            continue  # delivered and empty: counted as a file, no lines
        try:
            clean = _is_plain_utf8(path)
            if clean:
                frames.append(_numbered_lines(spark, path))
            else:
                rows = _decoded_rows(path)
                bad = sum(1 for row in rows if row[3])
                if bad:
                    problems.append(f"{source} landing file {name}: {bad} line(s) are not UTF-8, quarantined as invalid_utf8")
                local_rows += rows
        except _Unreadable as exc:
            detail = f"{source} landing file {name} ({size} bytes) cannot be read: {exc}"
            local_rows.append((path, 0, None, "unreadable_file", detail))
            problems.append(detail)
    if local_rows:
        frames.append(spark.createDataFrame(local_rows, RAW_SCHEMA))
    if not frames:
        return Landing(spark.createDataFrame([], RAW_SCHEMA), names, problems)
    lines = reduce(DataFrame.unionByName, frames)
    # A byte order mark is an encoding marker, not content (a BOM file's first record was lost).
    lines = lines.withColumn("raw_line", F.regexp_replace("raw_line", "^\ufeff", ""))
    return Landing(lines, names, problems)


def read_raw_lines(spark, lake: str | Path, source: str, dt: date | str) -> DataFrame:
    return read_landing(spark, lake, source, dt).lines


def _open(path: str):
    raw = storage.open_read(path)
    return gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw


def _is_plain_utf8(path: str) -> bool:
    """Whether the engine's text reader can take the file as is: UTF-8 throughout, lines split on ``\\n`` only.

    Streams the file once (decompressing a .gz); a lone ``\\r`` would make the
    engine split a line where the file has none, so such a file is read here too.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    carry = b""
    try:
        with _open(path) as handle:
            while chunk := handle.read(_CHUNK):
                decoder.decode(chunk)
                data = carry + chunk
                carry = b"\r" if data.endswith(b"\r") else b""
                body = data[:-1] if carry else data
                if body.count(b"\r") != body.count(b"\r\n"):
                    return False
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    except (OSError, EOFError, zlib.error) as exc:
        raise _Unreadable(f"{type(exc).__name__}: {exc}") from None
    return True


def _decoded_rows(path: str) -> list[tuple]:
    """The file's lines decoded here (one per ``\\n``); a line that is not UTF-8 keeps its bytes escaped."""
    try:
        with _open(path) as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise _Unreadable(f"{type(exc).__name__}: {exc}") from None
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    rows = []
    for number, piece in enumerate(pieces, 1):
        piece = piece[:-1] if piece.endswith(b"\r") else piece
        try:
            rows.append((path, number, piece.decode("utf-8"), None, None))
        except UnicodeDecodeError as exc:
            detail = f"byte 0x{piece[exc.start]:02x} at byte {exc.start + 1} of the line is not UTF-8"
            rows.append((path, number, piece.decode("utf-8", "backslashreplace"), "invalid_utf8", detail))
    return rows


def _numbered_lines(spark, path: str) -> DataFrame:
    # Line numbers run over the whole file, so the window has no partition on
    # purpose; pyspark's warning about that is noise here.
    warnings.filterwarnings("ignore", message=".*No Partition Defined for Window", category=UserWarning)
    order = Window.orderBy(F.monotonically_increasing_id())
    return spark.read.text(str(path)).select(
        F.lit(str(path)).alias("source_file"),
        F.row_number().over(order).cast("bigint").alias("line_no"),
        F.col("value").alias("raw_line"),
        F.lit(None).cast("string").alias("read_rule"),
        F.lit(None).cast("string").alias("read_detail"),
    )
