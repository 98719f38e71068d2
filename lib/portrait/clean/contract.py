"""Checking raw landing lines against the contract in conf/landing.yaml.

Pure ``DataFrame -> DataFrame``: every line gets either typed field columns
or the first rule it breaks (``rule``) and a ``detail`` naming the field. The
rules, in the order they are tried:

==================  ==========================================================
malformed_json      the line is not a JSON object
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

import operator
from datetime import date, timedelta
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

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
    raw: DataFrame, source: dict, landing_dt: date, time_zone: str, future_tolerance_minutes: int, earliest: str | None = None
) -> DataFrame:
    """Type the fields of each raw line and name the first contract rule it breaks.

    Input columns: source_file, line_no, raw_line. Output adds ``_v`` (the parsed
    variant, for source-specific fields), one typed column per declared field,
    and one column per rule (see :func:`add_rule` / :func:`resolve_rules`).
    ``earliest``: no timestamp field may lie before it (conf/landing.yaml ``earliest_timestamp``).
    """
    fields: dict = source["fields"]
    df = raw.withColumn("_v", F.expr("try_parse_json(raw_line)"))
    root = F.expr("schema_of_variant(_v)")

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
        ("malformed_json", F.when(F.col("_v").isNull() | ~root.startswith("OBJECT"), F.lit("line is not a JSON object"))),
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
    return df.select("*", *[value.alias(name) for name, value in typed.items()])


_BROKEN = "_broken_"


def add_rule(df: DataFrame, rule: str, detail: Column) -> DataFrame:
    """Add a rule: ``detail`` is non-null where a line breaks it. Rules keep the order they are added in.

    Each rule is its own column until :func:`resolve_rules` picks the first one
    broken: nesting one rule's result inside the next would make the engine's
    expressions grow with every rule.
    """
    position = sum(1 for column in df.columns if column.startswith(_BROKEN))
    return df.withColumn(f"{_BROKEN}{position:02d}_{rule}", detail)


def resolve_rules(df: DataFrame) -> DataFrame:
    """Replace the rule columns by ``rule`` (the first one broken) and its ``detail``; both null for a good line."""
    columns = sorted(column for column in df.columns if column.startswith(_BROKEN))
    rule = F.coalesce(*[F.when(F.col(c).isNotNull(), F.lit(c[len(_BROKEN) + 3 :])) for c in columns])
    detail = F.coalesce(*[F.col(c) for c in columns])
    return df.withColumns({"rule": rule, "detail": detail}).drop(*columns)
