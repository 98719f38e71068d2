"""Checking raw landing lines against the contract in conf/landing.yaml.

Pure ``DataFrame -> DataFrame``: every line gets either typed field columns
or the first rule it breaks (``rule``) and a ``detail`` naming the field. The
rules, in the order they are tried:

==================  ==========================================================
unexpected_file     a file in the landing folder that is not .jsonl/.jsonl.gz
                    (one row for the whole file, line_no 0)
unreadable_file     a landing file that cannot be read at all (a corrupt gzip):
                    one row naming the file and its size, line_no 0
invalid_utf8        the line's bytes are not UTF-8 (the raw line is kept with
                    the bad bytes escaped, \\xff)
line_too_long       more bytes than ``clean.max_line_bytes``; the raw line is
                    kept cut to its first ``QUARANTINED_PREFIX`` characters
blank_line          the line is empty or whitespace only
malformed_json      the line is not JSON (the parser's message and position)
duplicate_key       an object names the same key twice
non_finite_number   NaN, Infinity, or a number beyond a double's range
nesting_too_deep    objects/arrays nested deeper than the JSON parser takes
not_an_object       valid JSON, but an array, string or number, not an object
missing_field       a required field is absent or null
wrong_type          a field has another JSON type than declared (or an
                    unparseable timestamp, or a malformed array entry)
unknown_value       a field with a declared value set holds something else
out_of_range        a number outside its declared ``min`` / ``max`` (array
                    entries: ``entry_bounds``), a timestamp before the
                    contract's ``earliest_timestamp``
future_timestamp    ``ts`` lies beyond the end of the landing day + tolerance
==================  ==========================================================

Source-specific rules (test accounts, bot devices) are added by the clean job
with :func:`add_rule`; :func:`resolve_rules` then names the first one broken.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from datetime import date, timedelta
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portrait.clean.landing import READ_RULES

#: JSON (variant) types accepted for each declared type.
_ACCEPTED = {
    "string": ("STRING",),
    "long": ("BIGINT",),
    "double": ("DOUBLE", "BIGINT", "DECIMAL"),
    "boolean": ("BOOLEAN",),
    "timestamp": ("STRING", "BIGINT"),
    "object": ("OBJECT",),
    "array": ("ARRAY",),
}
_SPARK_TYPE = {"string": "string", "long": "bigint", "double": "double", "boolean": "boolean"}
_TS_WITH_OFFSET = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"
#: How much of a line longer than ``clean.max_line_bytes`` quarantine keeps.
QUARANTINED_PREFIX = 1000
#: Rules for a line the engine cannot parse as JSON, named by :func:`diagnose_json`.
JSON_RULES = ("malformed_json", "duplicate_key", "non_finite_number", "nesting_too_deep")
#: Deeper than this, Python's own parser would recurse too far: the depth alone is the reason.
_PY_DEPTH = 500


def json_type(path: str) -> Column:
    """The JSON type of a field (STRING, BIGINT, OBJECT<...>, VOID for null; null if absent)."""
    return F.expr(f"schema_of_variant(variant_get(_v, '{path}'))")


def json_value(path: str, spark_type: str) -> Column:
    return F.expr(f"try_variant_get(_v, '{path}', '{spark_type}')")


def parse_timestamp(path: str = "$.ts") -> Column:
    """ISO-8601 with an offset, or epoch milliseconds, as a UTC timestamp; null otherwise."""
    kind = json_type(path)
    text = json_value(path, "string")
    return F.when(kind == "BIGINT", F.expr(f"timestamp_millis(try_variant_get(_v, '{path}', 'bigint'))")).when(
        (kind == "STRING") & text.rlike(_TS_WITH_OFFSET), F.expr(f"try_cast(try_variant_get(_v, '{path}', 'string') AS timestamp)")
    )


def nesting_depth(line: str) -> int:
    """The deepest nesting of objects and arrays in a JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in line:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def diagnose_json(line: str | None) -> str | None:
    """Why a line the engine's JSON parser rejected is not a JSON object: ``"rule\\tdetail"`` (rule in JSON_RULES).

    Called only for the few lines the engine could not parse, so it can take the
    time to name the reason precisely (no field values in the detail: they may be personal).
    """
    if line is None:
        return None
    duplicates: list[str] = []
    non_finite: list[str] = []

    def pairs(items):
        seen = set()
        for key, _ in items:
            if key in seen:
                duplicates.append(key)
            seen.add(key)
        return dict(items)

    def constant(name):
        non_finite.append(name)
        return 0.0

    def number(text):
        value = float(text)
        if math.isinf(value):
            non_finite.append(f"the number {text[:40]}")
        return value

    depth = nesting_depth(line)
    deep = f"nesting_too_deep\tobjects/arrays nested {depth} levels deep, deeper than the JSON parser takes"
    if depth > _PY_DEPTH:
        return deep
    try:
        json.loads(line, object_pairs_hook=pairs, parse_constant=constant, parse_float=number)
    except RecursionError:
        return deep
    except ValueError as exc:
        return f"malformed_json\tnot JSON: {exc.msg} at character {exc.pos + 1}"
    if duplicates:
        return f"duplicate_key\tkey '{duplicates[0][:60]}' appears more than once in one object"
    if non_finite:
        return f"non_finite_number\t{non_finite[0]} is not a finite JSON number"
    if depth > 32:
        return deep
    return "malformed_json\tthe JSON parser rejects this line"


_diagnose_udf = None


def _diagnosis(line: Column) -> Column:
    global _diagnose_udf
    if _diagnose_udf is None:
        _diagnose_udf = F.udf(lambda line: diagnose_json(line), "string")  # no type hints: a plain Python UDF
    return _diagnose_udf(line)


def business_date(ts: Column | str, time_zone: str) -> Column:
    """The calendar day of a UTC timestamp in the business time zone."""
    return F.to_date(F.from_utc_timestamp(ts, time_zone))


def end_of_day_utc(dt: date, time_zone: str) -> Column:
    """The first instant after business day ``dt``, in UTC."""
    return F.to_utc_timestamp(F.lit(str(dt + timedelta(days=1))).cast("timestamp"), time_zone)


def _accepts(kind: Column, declared: str) -> Column:
    return reduce(operator.or_, [kind.startswith(prefix) for prefix in _ACCEPTED[declared]])


def _array_entries_schema(entry: dict) -> str:
    return "array<struct<" + ",".join(f"{k}:{_SPARK_TYPE[v]}" for k, v in entry.items()) + ">>"


def _bound_rules(name: str, number: Column, decl: dict) -> list[Column]:
    """A number below its declared ``min`` or above its ``max`` (an amount of 1e308 is not an order)."""
    rules = []
    if "min" in decl:
        rules.append(F.when(number < decl["min"], F.concat(F.lit(f"{name} "), number.cast("string"), F.lit(f" is below {decl['min']}"))))
    if "max" in decl:
        rules.append(F.when(number > decl["max"], F.concat(F.lit(f"{name} "), number.cast("string"), F.lit(f" is above {decl['max']}"))))
    return rules


def _entry_tests(entry: str, bounds: dict) -> list[tuple]:
    """(predicate over one array entry, words for the reason) for an entry field's declared bounds."""

    def outside(compare, limit):
        return lambda item: compare(item[entry], limit)  # one argument: Spark's exists() takes (entry) -> bool

    tests = []
    if "min" in bounds:
        tests.append((outside(operator.lt, bounds["min"]), f"is below {bounds['min']}"))
    if "max" in bounds:
        tests.append((outside(operator.gt, bounds["max"]), f"is above {bounds['max']}"))
    return tests


def check_contract(
    raw: DataFrame,
    source: dict,
    landing_dt: date,
    time_zone: str,
    future_tolerance_minutes: int,
    earliest: str | None = None,
    max_line_bytes: int | None = None,
) -> DataFrame:
    """Type the fields of each raw line and name the first contract rule it breaks.

    Input columns: source_file, line_no, raw_line, read_rule, read_detail (the
    last two from reading the file, :mod:`portrait.clean.landing`). Output adds
    ``_v`` (the parsed variant, for source-specific fields), one typed column per
    declared field, and one column per rule (see :func:`add_rule` / :func:`resolve_rules`).
    ``earliest``: no timestamp field may lie before it (conf/landing.yaml ``earliest_timestamp``).
    ``max_line_bytes``: a longer line is quarantined unparsed (conf/pipeline.yaml ``clean.max_line_bytes``).
    """
    fields: dict = source["fields"]
    df = raw
    for column in ("read_rule", "read_detail"):
        if column not in df.columns:
            df = df.withColumn(column, F.lit(None).cast("string"))
    for rule in READ_RULES:
        df = add_rule(df, rule, F.when(F.col("read_rule") == rule, F.col("read_detail")))
    df = df.withColumn("_too_long", F.lit(False))
    if max_line_bytes is not None:
        size = F.octet_length("raw_line")
        df = df.withColumn("_too_long", F.coalesce(size > max_line_bytes, F.lit(False)))
        detail = F.concat(F.lit("line of "), size.cast("string"), F.lit(f" bytes is longer than max_line_bytes {max_line_bytes}"))
        df = add_rule(df, "line_too_long", F.when(F.col("_too_long"), detail))
        df = df.withColumn(
            "raw_line", F.when(F.col("_too_long"), F.substring("raw_line", 1, QUARANTINED_PREFIX)).otherwise(F.col("raw_line"))
        )
    blank = F.col("raw_line").rlike(r"^\s*$")
    df = add_rule(df, "blank_line", F.when(blank, F.lit("line is blank (whitespace only)")))
    parsable = F.col("raw_line").isNotNull() & F.col("read_rule").isNull() & ~F.col("_too_long") & ~blank
    df = df.withColumn("_v", F.when(parsable, F.expr("try_parse_json(raw_line)")))
    root = F.expr("schema_of_variant(_v)")
    diagnosis = F.when(parsable & F.col("_v").isNull(), _diagnosis(F.col("raw_line")))
    df = df.withColumn("_diagnosis", diagnosis)
    for rule in JSON_RULES:
        reason = F.split(F.col("_diagnosis"), "\t", 2)
        df = add_rule(df, rule, F.when(reason.getItem(0) == rule, reason.getItem(1)))
    df = add_rule(
        df,
        "not_an_object",
        F.when(
            F.col("_v").isNotNull() & ~root.startswith("OBJECT"),
            F.concat(F.lit("line is JSON "), F.split(root, "<").getItem(0), F.lit(", not an object")),
        ),
    )

    missing, wrong, unknown, below = [], [], [], []
    typed = {}
    for name, decl in fields.items():
        path, kind = f"$.{name}", json_type(f"$.{name}")
        absent = kind.isNull() | (kind == "VOID")
        if decl.get("required"):
            missing.append(F.when(absent, F.lit(f"missing required field '{name}'")))
        declared = decl["type"]
        wrong.append(
            F.when(~absent & ~_accepts(kind, declared), F.concat(F.lit(f"field '{name}' is "), kind, F.lit(f", expected {declared}")))
        )
        if declared == "timestamp":
            value = parse_timestamp(path)
            wrong.append(
                F.when(
                    ~absent & _accepts(kind, declared) & value.isNull(),
                    F.lit(f"field '{name}' is neither ISO-8601 with an offset nor epoch milliseconds"),
                )
            )
        elif declared == "array" and "of" in decl:
            value = F.from_json(F.expr(f"to_json(variant_get(_v, '{path}'))"), _array_entries_schema(decl["of"]))
            entry_fields = decl["of"]
            wrong.append(
                F.when(
                    ~absent & F.exists(value, lambda entry: F.greatest(*[entry[k].isNull() for k in entry_fields])),  # noqa: B023 - built at once
                    F.lit(f"field '{name}' has an entry without {', '.join(decl['of'])} of the declared types"),
                )
            )
        elif declared == "object":
            value = None  # read by the source-specific code from _v
        else:
            value = json_value(path, _SPARK_TYPE[declared])
        if value is not None:
            typed[name] = value
        if "values" in decl:
            text = json_value(path, "string")
            unknown.append(
                F.when(
                    ~absent & ~text.isin(*decl["values"]),
                    F.concat(F.lit(f"{name} '"), text, F.lit(f"' is not one of {', '.join(map(str, decl['values']))}")),
                )
            )
        below += _bound_rules(name, json_value(path, "double"), decl)
        for entry, bounds in (decl.get("entry_bounds") or {}).items():
            below += [
                F.when(F.exists(value, predicate), F.lit(f"{name} has an entry whose {entry} {words}"))
                for predicate, words in _entry_tests(entry, bounds)
            ]
        if declared == "timestamp" and earliest is not None:
            below.append(
                F.when(
                    value < F.lit(earliest).cast("timestamp"),
                    F.concat(F.lit(f"{name} "), value.cast("string"), F.lit(f" UTC is before the earliest accepted {earliest}")),
                )
            )

    rules = [
        ("missing_field", F.coalesce(*missing) if missing else F.lit(None)),
        ("wrong_type", F.coalesce(*wrong) if wrong else F.lit(None)),
        ("unknown_value", F.coalesce(*unknown) if unknown else F.lit(None)),
        ("out_of_range", F.coalesce(*below) if below else F.lit(None)),
    ]
    if "ts" in fields:
        limit = end_of_day_utc(landing_dt, time_zone) + F.expr(f"INTERVAL {int(future_tolerance_minutes)} MINUTES")
        rules.append(
            (
                "future_timestamp",
                F.when(typed["ts"] > limit, F.concat(F.lit("ts "), typed["ts"].cast("string"), F.lit(" UTC is after the landing day"))),
            )
        )

    for rule, detail in rules:
        df = add_rule(df, rule, detail)
    return df.select("*", *[value.alias(name) for name, value in typed.items()]).drop("_diagnosis", "_too_long", "read_rule", "read_detail")


_BROKEN = "_broken_"
#: Numbers rule columns in the order they are added (the process's count, not ``df.columns``:
#: asking a plan this size for its columns costs the engine a round trip each time).
_RULE_ORDER = itertools.count()


def add_rule(df: DataFrame, rule: str, detail: Column) -> DataFrame:
    """Add a rule: ``detail`` is non-null where a line breaks it. Rules keep the order they are added in.

    Each rule is its own column until :func:`resolve_rules` picks the first one
    broken: nesting one rule's result inside the next would make the engine's
    expressions grow with every rule.
    """
    return df.withColumn(f"{_BROKEN}{next(_RULE_ORDER):012d}_{rule}", detail)


def resolve_rules(df: DataFrame) -> DataFrame:
    """Replace the rule columns by ``rule`` (the first one broken) and its ``detail``; both null for a good line."""
    columns = sorted(column for column in df.columns if column.startswith(_BROKEN))
    rule = F.coalesce(*[F.when(F.col(c).isNotNull(), F.lit(c[len(_BROKEN) :].partition("_")[2])) for c in columns])  # _broken_<n>_<rule>
    detail = F.coalesce(*[F.col(c) for c in columns])
    return df.withColumns({"rule": rule, "detail": detail}).drop(*columns)
