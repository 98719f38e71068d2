"""``portrait migrate``: bring stored Delta tables up to their declarations.

A column declared in conf/ (a new tag in conf/tags.yaml gives one) that a
stored table lacks is added as a nullable column with delta-rs
(``DeltaTable.alter.add_columns``): one new commit, history kept, so earlier
versions stay readable by time travel and old rows read null in the new
column. Anything else - a stored column whose type differs from the
declaration, or a stored column conf does not declare - is refused with the
table and column named: that needs a rebuild or a conf fix, never a silent
change. The writer refuses to write such a table until it is migrated
(:meth:`portrait.core.tables.Catalog._check_stored_columns`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from portrait.core.tables import Catalog, _normalise_type

#: Spark simple-string primitive -> Delta schema type.
PRIMITIVES = {
    "string": "string",
    "bigint": "long",
    "int": "integer",
    "smallint": "short",
    "tinyint": "byte",
    "double": "double",
    "float": "float",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp",
    "timestamp_ntz": "timestamp_ntz",
    "binary": "binary",
}
SPARK_NAMES = {delta: spark for spark, delta in PRIMITIVES.items()}


class MigrationRefused(ValueError):
    """A stored table differs from its declaration in a way an added column cannot fix."""


@dataclass(frozen=True)
class Plan:
    table: str
    add: dict[str, str]  # column -> declared Spark type, in declared order


def delta_type(spark_type: str):
    """The Delta schema JSON of a Spark simple-string type (``array<struct<a:bigint>>`` ...)."""
    text = _normalise_type(spark_type)
    if text in PRIMITIVES:
        return PRIMITIVES[text]
    if re.fullmatch(r"decimal\(\d+,\d+\)", text):
        return text
    outer, _, inner = text.partition("<")
    if not inner.endswith(">"):
        raise MigrationRefused(f"cannot translate type {spark_type!r} to a Delta type")
    parts = _split(inner[:-1])
    if outer == "array" and len(parts) == 1:
        return {"type": "array", "elementType": delta_type(parts[0]), "containsNull": True}
    if outer == "map" and len(parts) == 2:
        return {"type": "map", "keyType": delta_type(parts[0]), "valueType": delta_type(parts[1]), "valueContainsNull": True}
    if outer == "struct":
        fields = [part.split(":", 1) for part in parts]
        return {
            "type": "struct",
            "fields": [{"name": n, "type": delta_type(t), "nullable": True, "metadata": {}} for n, t in fields],
        }
    raise MigrationRefused(f"cannot translate type {spark_type!r} to a Delta type")


def spark_type(delta) -> str:
    """The Spark simple string of a Delta schema JSON type (the inverse of :func:`delta_type`)."""
    if isinstance(delta, str):
        return SPARK_NAMES.get(delta, delta)
    kind = delta["type"]
    if kind == "array":
        return f"array<{spark_type(delta['elementType'])}>"
    if kind == "map":
        return f"map<{spark_type(delta['keyType'])},{spark_type(delta['valueType'])}>"
    return "struct<" + ",".join(f"{f['name']}:{spark_type(f['type'])}" for f in delta["fields"]) + ">"


def _split(text: str) -> list[str]:
    """Split on the commas at nesting depth 0."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def stored_columns(path: str) -> dict[str, str]:
    from deltalake import DeltaTable

    fields = json.loads(DeltaTable(path).schema().to_json())["fields"]
    return {f["name"]: _normalise_type(spark_type(f["type"])) for f in fields}


def plan(catalog: Catalog) -> list[Plan]:
    """What migrating every stored declared table takes; raises MigrationRefused naming every problem."""
    plans, problems = [], []
    for name in catalog.names():
        if not catalog.exists(name):
            continue
        spec = catalog.spec(name)
        stored = stored_columns(spec.path)
        for column, kind in stored.items():
            if column not in spec.columns:
                problems.append(f"{name}: stored column {column!r} is not declared (declare it in conf/ or rebuild the table)")
            elif kind != _normalise_type(spec.columns[column]):
                problems.append(
                    f"{name}: column {column!r} is stored as {kind}, declared {spec.columns[column]} (a type change needs a rebuild)"
                )
        add = {column: kind for column, kind in spec.columns.items() if column not in stored}
        if add:
            plans.append(Plan(name, add))
    if problems:
        raise MigrationRefused("cannot migrate: " + "; ".join(problems) + " - nothing was changed")
    return plans


def migrate(catalog: Catalog, dry_run: bool = False) -> list[str]:
    """Add every declared column a stored table lacks (nullable, one commit per table); returns what was (or would be) done."""
    from deltalake import DeltaTable, Field

    done = []
    for step in plan(catalog):
        path = catalog.spec(step.table).path
        columns = ", ".join(f"{c} {k}" for c, k in step.add.items())
        if dry_run:
            done.append(f"{step.table}: would add {columns}")
            continue
        table = DeltaTable(path)
        before = table.version()
        fields = [
            Field.from_json(json.dumps({"name": c, "type": delta_type(k), "nullable": True, "metadata": {}})) for c, k in step.add.items()
        ]
        table.alter.add_columns(fields)
        done.append(f"{step.table}: added {columns} (version {before} -> {DeltaTable(path).version()})")
    return done
