"""Masking personal data: raw landing lines, the parsed copy before staging, exports.

What is personal is declared, not hand-coded: the landing fields and free-text
patterns in conf/pipeline.yaml ``privacy``, the table columns by ``pii: true``
in conf/tables (``Catalog.pii_columns``).

A masked value keeps what an engineer needs to diagnose the line - which field,
its JSON type, its length - and nothing of the value: ``"phone": "138..."``
becomes ``"phone": "«pii:phone:string:11»"``; a phone number, e-mail address or
ID-card number inside free text (or a line that is not JSON at all) becomes
``«pii:phone:11»``. The rule the line broke is beside it in quarantine.records,
and ``source_file`` + ``line_no`` point at the original in the landing zone for
whoever may read that. The original is not recoverable from the lake on
purpose (docs/privacy.md): an encrypted copy is still personal data, would need
a key kept and rotated beside the lake, and would have to be found and erased
by `portrait forget` too; the landing zone already holds the line for its own
retention period.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import pandas as pd  # module level: the pandas UDF's type hints are resolved against these globals
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from portrait.clean.records import PLACE_NAME

MARK = "«pii:{}»"
#: What the parsed copy keeps of a personal landing field before staging (conf privacy.landing_fields).
KEEP = ("value", "presence", "place_name")
PRESENT = "«pii:present»"


def settings(conf) -> dict:
    return conf.pipeline["privacy"]


@lru_cache(maxsize=32)
def _field_patterns(fields: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    """``"field": value`` for each field, value a JSON string, number, literal, or (a broken line) anything up to , or }."""
    value = r'"(?:[^"\\]|\\.)*"?|-?[0-9][0-9.eE+-]*|true|false|null|[^,}\]]*'
    return tuple(re.compile(r'("' + re.escape(f) + r'"\s*:\s*)(' + value + ")") for f in fields)


@lru_cache(maxsize=8)
def _free_text(patterns: tuple[tuple[str, str], ...]) -> tuple[tuple[str, re.Pattern], ...]:
    return tuple((kind, re.compile(pattern)) for kind, pattern in patterns)


def _json_type(text: str) -> str:
    if text.startswith('"'):
        return "string"
    if text in ("true", "false"):
        return "boolean"
    if text == "null":
        return "null"
    try:
        json.loads(text)
        return "number"
    except ValueError:
        return "broken"


def _json_type_ok(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def mask_line(line: str | None, fields: tuple[str, ...], patterns: tuple[tuple[str, str], ...]) -> str | None:
    """``line`` with every personal field's value and every personal pattern replaced by its diagnostics.

    Works on the text, not a parse, so a line that is not valid JSON is masked
    too and everything else in it stays byte for byte (the diagnosis needs it).
    A null value is left as it is (it holds nothing, and "was it null" is a diagnosis).
    """
    if line is None:
        return None

    def field_mark(field: str, match: re.Match) -> str:
        raw = match.group(2).strip()
        kind = _json_type(raw)
        if kind == "null" or not raw:
            return match.group(0)
        length = len(json.loads(raw)) if kind == "string" and _json_type_ok(raw) else len(raw)
        return match.group(1) + '"' + MARK.format(f"{field}:{kind}:{length}") + '"'

    for field, pattern in zip(fields, _field_patterns(fields), strict=True):
        line = pattern.sub(lambda m, field=field: field_mark(field, m), line)
    for kind, pattern in _free_text(patterns):
        line = pattern.sub(lambda m, kind=kind: MARK.format(f"{kind}:{len(m.group(0))}"), line)
    return line


def _masker(fields: tuple[str, ...], patterns: tuple[tuple[str, str], ...]):
    @F.pandas_udf("string")
    def masked(lines: pd.Series) -> pd.Series:
        return lines.map(lambda line: mask_line(line, fields, patterns) if isinstance(line, str) else None)

    return masked


def mask_raw_lines(df: DataFrame, fields, patterns: dict[str, str], column: str = "raw_line") -> DataFrame:
    """``df`` with ``column`` masked (``mask_line`` on every row)."""
    masked = _masker(tuple(fields), tuple(sorted(patterns.items())))
    return df.withColumn(column, masked(F.col(column)))


def for_staging(classified: DataFrame, source: str, conf) -> DataFrame:
    """The clean stage's classified rows of ``source`` as they may be staged: nothing personal in clear but what silver keeps.

    The raw line is masked (its personal fields and patterns), and each
    personal parsed field keeps only what conf privacy.landing_fields says
    silver needs: its value, its presence, or its place name.
    """
    privacy = settings(conf)
    declared = privacy["landing_fields"].get(source) or {}
    for field, keep in declared.items():
        if field not in classified.columns:
            raise KeyError(f"conf/pipeline.yaml privacy.landing_fields.{source}.{field}: the {source} records have no such field")
        if keep == "presence":
            classified = classified.withColumn(field, F.when(F.col(field).isNotNull(), F.lit(PRESENT)))
        elif keep == "place_name":
            classified = classified.withColumn(field, F.regexp_extract(F.col(field), PLACE_NAME, 1))
    return mask_raw_lines(classified, list(declared), privacy["patterns"])


def masked_columns(df: DataFrame, columns) -> DataFrame:
    """``df`` with each of ``columns`` (personal, conf/tables ``pii: true``) replaced by a null of its type: for exports."""
    present = [c for c in columns if c in df.columns]
    kinds = {f.name: f.dataType for f in df.schema.fields}
    for column in present:
        df = df.withColumn(column, F.lit(None).cast(kinds[column]))
    return df


#: What an erased person's landing record becomes (nothing of it is kept; the rule and the file/line remain).
ERASED_LINE = "«erased»"
ERASED_RULE = "erased_user"


def suppressed(classified: DataFrame, spark, secret: str | None, hashes: list[str], quarantined: str) -> DataFrame:
    """Records of erased people (ops.erasure_log, salted hashes) quarantined as ``erased_user`` with nothing of them kept.

    Checked after every other rule, so a late, duplicate or broken record of an
    erased person is caught too: its outcome becomes ``quarantined``, its raw
    line ``«erased»`` and every parsed field null - the count still reconciles,
    and no staged or stored copy names the person.
    """
    if not hashes:
        return classified
    listed = spark.createDataFrame([(h,) for h in hashes], "_erased_hash string")
    hashed = F.sha2(F.concat(F.lit(f"{secret}:"), F.col("user_id")), 256)
    joined = classified.withColumn("_user_hash", hashed).join(F.broadcast(listed), F.col("_user_hash") == F.col("_erased_hash"), "left")
    erased = F.col("_erased_hash").isNotNull()
    kept = {"source_file", "line_no"}
    replaced = {
        "outcome": F.lit(quarantined),
        "rule": F.lit(ERASED_RULE),
        "detail": F.lit("the user was erased on request (ops.erasure_log)"),
        "raw_line": F.lit(ERASED_LINE),
    }
    columns = []
    for field in classified.schema.fields:
        if field.name in kept:
            columns.append(F.col(field.name))
        else:
            value = replaced.get(field.name, F.lit(None).cast(field.dataType))
            columns.append(F.when(erased, value).otherwise(F.col(field.name)).alias(field.name))
    return joined.select(*columns)
