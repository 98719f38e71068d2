"""Gate declarations: the YAML format of conf/gates/*.yaml, parsed and checked.

``table_checks(conf, table, dt)`` turns the entries declared for a table into
``Check`` objects with every reference resolved for run date ``dt``:
``{conf: path}`` values and ``{conf:...}`` / ``{dt}`` / ``{table:...}``
placeholders, ``values_of:`` value sets (a tag's ``values:`` in
conf/tags.yaml, or a field's ``values`` in the landing contract) and
``for_each_column:`` entries expanded to one check per column. The format is
described in conf/gates/README.md. Errors are ``ConfError`` naming the file,
the table, the entry and the key.

``check_declarations(conf)`` lists every problem of the declared gates against
the declared tables. Importing this module does not import Great Expectations;
validating an entry's arguments (``Check.build``) loads it through
``portrait.gates.gx``.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from portrait.core.config import Conf, ConfError
from portrait.core.tables import Catalog

GATES_FILE = "conf/gates"

#: Shorthand for a SQL predicate every row must satisfy (runs as UnexpectedRowsExpectation).
ROW_CONDITION = "row_condition"
UNEXPECTED_ROWS = "unexpected_rows_expectation"
#: Keys of a gate entry this module reads itself; every other key goes to the GX expectation.
OWN_KEYS = ("expectation", "name", "condition", "columns")
#: Keys that are rewritten before an entry is parsed (expansion and value-set references).
FOR_EACH_COLUMN = "for_each_column"
VALUES_OF = "values_of"
#: Expectation arguments that name columns of the table.
COLUMN_ARGS = ("column", "column_A", "column_B", "column_list")
#: Placeholders in strings: {dt} {dt_start} {dt_end} {tz}, {sources_allowed_empty} (the
#: landing sources that may have no file on {dt}, as an SQL list), {conf:file.path.to.value},
#: {values_of:TAG or landing.SOURCE.FIELD} and {table:layer.name} (the published
#: table, for checks against another table: a temporary view the gate registers,
#: so the SQL reads it on every engine); {batch} is left for GX; {column} is the
#: column of a for_each_column entry. Doubled braces are not placeholders.
_PLACEHOLDER = re.compile(r"(?<!\{)\{((?:conf|table|values_of):[^{}]+|[A-Za-z_]+)\}(?!\})")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQL_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")


def as_date(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def resolve_reference(conf: Conf, path: str) -> Any:
    """The value at ``file.key.key...`` of conf/ (``pipeline.clean.max_quarantine_ratio``).

    The first segment names ``conf/{file}.yaml`` (or a folder of them, like
    ``tables``); keys may themselves contain dots (``tables.silver.orders.key``):
    the longest key present wins. List entries are addressed by their index.
    """
    head, _, rest = str(path).strip().partition(".")
    if (conf.dir / f"{head}.yaml").is_file() or (conf.dir / head).is_dir():
        value = conf.parsed(head)
    else:
        raise ConfError(f"conf reference {path!r}: there is no {conf.dir / head}.yaml")
    parts = rest.split(".") if rest else []
    walked = [head]
    while parts:
        if isinstance(value, dict):
            for size in range(len(parts), 0, -1):
                key = ".".join(parts[:size])
                if key in value:
                    value, parts = value[key], parts[size:]
                    walked.append(key)
                    break
            else:
                choices = ", ".join(map(str, value)) or "none"
                raise ConfError(f"conf reference {path!r}: {'.'.join(walked)} has no key {parts[0]!r} (keys: {choices})")
        elif isinstance(value, list) and parts[0].isdigit() and int(parts[0]) < len(value):
            value = value[int(parts[0])]
            walked.append(parts.pop(0))
        else:
            raise ConfError(f"conf reference {path!r}: {'.'.join(walked)} is {type(value).__name__}, cannot take {parts[0]!r}")
    return value


def run_date_values(conf: Conf, dt: date) -> dict[str, str]:
    """The run-date placeholders: the business day ``dt`` and its bounds as UTC timestamps.

    Stored timestamps are UTC (the session time zone); ``{dt_start}``/``{dt_end}``
    are the first instant of the Shanghai business day and the first instant after it.
    """
    from zoneinfo import ZoneInfo

    tz_name = conf.pipeline.get("time_zone") or conf.landing.get("time_zone") or "UTC"
    tz = ZoneInfo(tz_name)

    def utc(day: date) -> str:
        local = datetime(day.year, day.month, day.day, tzinfo=tz)
        return local.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

    return {
        "dt": dt.isoformat(),
        "dt_start": utc(dt),
        "dt_end": utc(dt + timedelta(days=1)),
        "tz": tz_name,
        "sources_allowed_empty": _sql_text(sources_allowed_empty(conf, dt) or [""]),
    }


def sources_allowed_empty(conf: Conf, dt: date) -> list[str]:
    """The landing sources that may have no file for ``dt``: declared ``optional``, or ``dt`` declared empty.

    conf/landing.yaml; an ``empty_dates`` entry without ``sources`` covers every source.
    """
    sources = conf.landing.get("sources") or {}
    allowed = {name for name, spec in sources.items() if spec.get("optional", False)}
    for declared in conf.landing.get("empty_dates") or []:
        if str(declared["date"]) == dt.isoformat():
            allowed |= set(declared.get("sources") or sources)
    return sorted(allowed)


def _sql_text(value: Any) -> str:
    """A referenced value as it reads inside SQL text: lists become ('a', 'b')."""
    if isinstance(value, (list, tuple, set)):
        return "(" + ", ".join(sql_literal(v) for v in value) + ")"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Check:
    """One declared expectation of a table, with conf references and run-date placeholders resolved."""

    table: str
    index: int  # position in the table's list, from 1
    expectation: str  # snake_case name as reported (row_condition stays row_condition)
    label: str  # the column(s) or the name: what the finding is about
    columns: tuple[str, ...]  # the table columns it reads
    kwargs: dict  # what the GX expectation is built from
    severity: str = "critical"
    tables: tuple[str, ...] = ()  # published tables its SQL reads ({table:...})
    position: int = 0  # position among the table's checks once for_each_column is expanded, from 1

    @property
    def where(self) -> str:
        return f"{GATES_FILE} {self.table}[{self.index}] ({self.expectation} {self.label})".rstrip()

    @property
    def is_row_query(self) -> bool:
        return "unexpected_rows_query" in self.kwargs

    def build(self):
        """The GX expectation object (validates the arguments)."""
        cls = expectation_classes()[self.gx_type]
        try:
            return cls(**self.kwargs, meta={"portrait_check": self.position})
        except Exception as exc:  # noqa: BLE001 - pydantic names every bad argument
            detail = " ".join(str(exc).split())
            raise ConfError(f"{self.where}: invalid arguments for {cls.__name__}: {detail}") from None

    @property
    def gx_type(self) -> str:
        return UNEXPECTED_ROWS if self.expectation == ROW_CONDITION else self.expectation


def _canonical(name) -> str:
    """The snake_case name of an expectation given in snake_case or as its GX class name."""
    name = str(name).strip()
    if name in (ROW_CONDITION, UNEXPECTED_ROWS):
        return name
    by_class = {cls.__name__: snake for snake, cls in expectation_classes().items()}
    if name in by_class:
        return by_class[name]
    if name == "RowCondition":
        return ROW_CONDITION
    return name if "_" in name else re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def table_checks(conf: Conf, table: str, dt: date, lake: str = ".") -> list[Check]:
    """The checks declared for ``table``, resolved for run date ``dt`` (``{table:...}`` in ``lake``)."""
    gates = conf.gates
    if table not in gates:
        raise ConfError(f"no gate is declared for {table} in {GATES_FILE} (gated tables: {', '.join(gates) or 'none'})")
    entries = gates[table]
    if not isinstance(entries, list) or not entries:
        raise ConfError(f"{GATES_FILE} {table}: must be a non-empty list of expectations")
    placeholders = run_date_values(conf, as_date(dt))
    parsed = [
        _parse_entry(conf, table, index, one, placeholders, lake)
        for index, entry in enumerate(entries, 1)
        for one in expand_for_each_column(conf, table, index, entry)
    ]
    checks = [replace(check, position=position) for position, check in enumerate(parsed, 1)]
    seen: dict[tuple[str, str], Check] = {}
    for check in checks:
        key = (check.expectation, check.label)
        if key in seen:
            raise ConfError(
                f"{check.where}: repeats entry {seen[key].index} (same expectation and column); merge them or tell them apart with `name:`"
            )
        seen[key] = check
    return checks


def _parse_entry(conf: Conf, table: str, index: int, entry, placeholders: dict, lake: str) -> Check:
    where = f"{GATES_FILE} {table}[{index}]"
    if not isinstance(entry, dict) or "expectation" not in entry:
        raise ConfError(f"{where}: each entry is a mapping with an `expectation:` key, got {entry!r}")
    expectation = _canonical(entry["expectation"])
    where = f"{where} ({expectation})"
    try:
        resolved = _resolve(conf, entry, placeholders, lake)
        if VALUES_OF in resolved:
            if "value_set" in resolved:
                raise ConfError(f"give either `{VALUES_OF}:` or `value_set:`, not both")
            resolved["value_set"] = resolve_values(conf, resolved.pop(VALUES_OF))
    except ConfError as exc:
        raise ConfError(f"{where}: {exc}") from None
    name = resolved.get("name")
    kwargs = {k: v for k, v in resolved.items() if k not in OWN_KEYS}
    if expectation in (ROW_CONDITION, UNEXPECTED_ROWS):
        if not name:
            raise ConfError(f"{where}: a {expectation} needs a `name:` (it labels the finding)")
        columns = resolved.get("columns") or []
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ConfError(f"{where}: `columns:` must be a list of column names")
        if expectation == ROW_CONDITION:
            condition = resolved.get("condition")
            if not isinstance(condition, str) or not condition.strip():
                raise ConfError(f"{where}: a row_condition needs `condition:`, a SQL predicate every row must satisfy")
            if "unexpected_rows_query" in kwargs:
                raise ConfError(f"{where}: give either `condition:` or use unexpected_rows_expectation, not both")
            shown = ", ".join(f"`{c}`" for c in columns) or "*"
            kwargs["unexpected_rows_query"] = f"SELECT {shown} FROM {{batch}} WHERE ({condition}) IS NOT TRUE"
            kwargs.setdefault("description", f"every row satisfies: {condition}")
        elif "unexpected_rows_query" not in kwargs:
            raise ConfError(f"{where}: needs `unexpected_rows_query:` (SQL over {{batch}} returning the offending rows)")
        label = str(name)
    else:
        for own in ("condition", "columns"):
            if own in resolved:
                raise ConfError(f"{where}: `{own}:` belongs to row_condition entries (use column/column_list here)")
        classes = expectation_classes()
        if expectation not in classes:
            close = difflib.get_close_matches(expectation, list(classes) + [ROW_CONDITION], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfError(f"{where}: unknown expectation {entry['expectation']!r}{hint}")
        columns = []
        for arg in COLUMN_ARGS:
            value = kwargs.get(arg)
            if value is not None:
                columns += list(value) if isinstance(value, list) else [value]
        label = str(name) if name else ",".join(map(str, columns))
    severity = str(kwargs.get("severity", "critical")).lower()
    if severity not in ("critical", "warning", "info"):
        raise ConfError(f"{where}: severity must be critical, warning or info, got {severity!r}")
    reads = tuple(dict.fromkeys(m[len("table:") :].strip() for m in _PLACEHOLDER.findall(json.dumps(entry)) if m.startswith("table:")))
    check = Check(table, index, expectation, label, tuple(map(str, columns)), kwargs, severity, reads)
    check.build()  # argument errors now, naming the entry
    return check


def _resolve(conf: Conf, value, placeholders: dict, lake: str):
    """Replace ``{conf: path}`` mappings by the referenced value and fill string placeholders."""
    if isinstance(value, dict):
        if set(value) == {"conf"}:
            return resolve_reference(conf, value["conf"])
        return {key: _resolve(conf, item, placeholders, lake) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(conf, item, placeholders, lake) for item in value]
    if isinstance(value, str):
        return _fill(conf, value, placeholders, lake)
    return value


def table_view(table: str) -> str:
    """The temporary view a gate reads the published ``table`` through."""
    return "_portrait_table_" + table.replace(".", "_")


def _fill(conf: Conf, text: str, placeholders: dict, lake: str) -> str:
    def replace(match: re.Match) -> str:
        token = match.group(1)
        if token.startswith("conf:"):
            return _sql_text(resolve_reference(conf, token[len("conf:") :]))
        if token.startswith(VALUES_OF + ":"):
            return _sql_text(resolve_values(conf, token[len(VALUES_OF) + 1 :]))
        if token.startswith("table:"):
            name = token[len("table:") :].strip()
            try:
                Catalog(lake, conf).spec(name)
            except KeyError as exc:
                raise ConfError(f"placeholder {match.group(0)}: {exc.args[0]}") from None
            return table_view(name)
        if token in placeholders:
            return placeholders[token]
        if token == "batch":
            return match.group(0)
        known = ", ".join("{" + k + "}" for k in [*placeholders, "batch", "conf:file.key", "values_of:TAG", "table:layer.name"])
        raise ConfError(f"unknown placeholder {match.group(0)} in {text!r} (known: {known})")

    return _PLACEHOLDER.sub(replace, text)


def check_declarations(conf: Conf | None = None, dt: date | None = None) -> list[str]:
    """Every problem of the declared gates against the declared tables (empty when sound).

    Checks: each gated table is declared in conf/tables; each expectation is
    known and its arguments valid; each column it names (and each column a
    row condition lists) is a declared column; and a row condition's SQL uses
    no declared column that it does not list in ``columns:``.
    """
    conf = conf or Conf()
    dt = dt or date(2026, 1, 1)
    problems = []
    for table in conf.gates:
        declared = Catalog(".", conf).spec(table).columns if table in conf.tables else None
        if declared is None:
            problems.append(f"{GATES_FILE} {table}: gates a table that is not declared in conf/tables")
            continue
        try:
            checks = table_checks(conf, table, dt)
        except ConfError as exc:
            problems.append(str(exc))
            continue
        for check in checks:
            missing = [c for c in check.columns if c not in declared]
            if missing:
                problems.append(f"{check.where}: {', '.join(missing)} not among the columns of {table}")
            if check.expectation == ROW_CONDITION:
                sql = _SQL_STRING.sub("''", check.kwargs["unexpected_rows_query"])
                used = {word for word in _IDENTIFIER.findall(sql) if word in declared}
                unlisted = sorted(used - set(check.columns))
                if unlisted:
                    problems.append(f"{check.where}: its condition reads {', '.join(unlisted)}; list them in `columns:`")
    return problems


# --------------------------------------------------------------------------- for_each_column


def expand_for_each_column(conf: Conf, table: str, index: int, entry) -> list:
    """The entries a ``for_each_column:`` entry stands for, one per column (other entries as they are).

    ``for_each_column:`` is a list of columns, or a selection of the table's
    declared columns (conf/tables): ``{matching: "spend_*", type: double,
    except: [...]}`` (glob patterns and Spark types, each one or a list).
    Each copy gets ``column: <name>`` (row conditions instead use ``{column}``
    in their name, columns and condition); ``{column}`` in any string is the
    column, so each finding names its column.
    """
    if not isinstance(entry, dict) or FOR_EACH_COLUMN not in entry:
        return [entry]
    rest = {key: value for key, value in entry.items() if key != FOR_EACH_COLUMN}
    expectation = str(rest.get("expectation", "")).strip()
    where = f"{GATES_FILE} {table}[{index}] ({expectation})"
    if "column" in rest:
        raise ConfError(f"{where}: give either `column:` or `{FOR_EACH_COLUMN}:`, not both")
    row_query = expectation in (ROW_CONDITION, UNEXPECTED_ROWS, "RowCondition", "UnexpectedRowsExpectation")
    if row_query and "{column}" not in str(rest.get("name", "")):
        raise ConfError(f"{where}: a {FOR_EACH_COLUMN} {expectation} needs {{column}} in its `name:`, so each finding names its column")
    if not row_query and "name" in rest and "{column}" not in str(rest["name"]):
        raise ConfError(f"{where}: with {FOR_EACH_COLUMN}, a `name:` must contain {{column}} (or leave it out: the column is the label)")
    expanded = []
    for column in select_columns(conf, table, entry[FOR_EACH_COLUMN], where):
        one = _with_column(rest, column)
        if not row_query:
            one["column"] = column
        expanded.append(one)
    return expanded


def select_columns(conf: Conf, table: str, selection, where: str) -> list[str]:
    """The columns a ``for_each_column:`` value names, in declaration order for a selection."""
    key = f"`{FOR_EACH_COLUMN}:`"
    if isinstance(selection, list):
        if not selection or not all(isinstance(c, str) and c for c in selection):
            raise ConfError(f"{where}: {key} must be a non-empty list of column names, got {selection!r}")
        repeated = sorted({c for c in selection if selection.count(c) > 1})
        if repeated:
            raise ConfError(f"{where}: {key} lists {', '.join(repeated)} twice")
        return list(selection)
    if not isinstance(selection, dict) or not selection or set(selection) - {"matching", "type", "except"}:
        raise ConfError(f"{where}: {key} is a list of columns or a mapping of matching / type / except, got {selection!r}")
    if table not in conf.tables:
        raise ConfError(f"{where}: {key} selects among declared columns, but {table} is not declared in conf/tables")
    declared = Catalog(".", conf).spec(table).columns

    def listed(name: str) -> list[str]:
        value = selection.get(name) or []
        return [value] if isinstance(value, str) else list(value)

    patterns, types, excluded = listed("matching"), [t.replace(" ", "").lower() for t in listed("type")], listed("except")
    chosen = [
        column
        for column, kind in declared.items()
        if (not patterns or any(fnmatch.fnmatchcase(column, p) for p in patterns)) and (not types or kind.replace(" ", "").lower() in types)
    ]
    stray = [c for c in excluded if c not in chosen]
    if stray:
        raise ConfError(f"{where}: {key} except: {', '.join(stray)} is not among the selected columns ({', '.join(chosen) or 'none'})")
    chosen = [c for c in chosen if c not in excluded]
    if not chosen:
        raise ConfError(f"{where}: {key} {selection!r} selects no column of {table} (columns: {', '.join(declared)})")
    return chosen


def _with_column(value, column: str):
    if isinstance(value, dict):
        return {key: _with_column(item, column) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_column(item, column) for item in value]
    if isinstance(value, str):
        return value.replace("{column}", column)
    return value


# --------------------------------------------------------------------------- values_of


def resolve_values(conf: Conf, reference) -> list:
    """The value set ``values_of:`` names: a tag's ``values:`` keys, or ``landing.SOURCE.FIELD``'s ``values``.

    Tags are read through the tag dictionary (conf/tags.yaml); a landing
    reference reads the landing contract (conf/landing.yaml). An unknown name
    is a ConfError with the closest names.
    """
    name = str(reference).strip()
    error = f"{VALUES_OF} {name!r}"
    if name.startswith("landing."):
        parts = name.split(".")
        if len(parts) != 3:
            raise ConfError(f"{error}: a landing reference is landing.SOURCE.FIELD (landing.orders.status)")
        _, source, field = parts
        sources = conf.landing.get("sources") or {}
        fields = _named(sources, source, f"{error}: conf/landing.yaml has no source").get("fields") or {}
        declared = _named(fields, field, f"{error}: conf/landing.yaml source {source} has no field").get("values")
        where = f"conf/landing.yaml {source}.{field}"
    else:
        # portrait.tags.dictionary imported first hits the cycle tags.dictionary -> subprofiles.common ->
        # subprofiles/__init__ -> subprofiles.behavior -> tags.dictionary; loading the package first avoids it
        import portrait.subprofiles  # noqa: F401
        from portrait.tags.dictionary import TAGS_FILE, TagDictionary

        tags = TagDictionary.load(conf).tags
        declared = _named(tags, name, f"{error}: {TAGS_FILE} (or landing.SOURCE.FIELD for the landing contract) has no tag").get("values")
        where = f"tag {name} in {TAGS_FILE}"
    if not declared:
        raise ConfError(f"{error}: {where} declares no `values:`")
    return list(declared)


def _named(mapping: dict, name: str, missing: str) -> dict:
    """``mapping[name]``, or a ConfError ``{missing} 'name'; did you mean ...?``."""
    if name in mapping:
        return mapping[name] or {}
    close = difflib.get_close_matches(name, list(mapping), n=3)
    raise ConfError(f"{missing} {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))


def expectation_classes() -> dict[str, type]:
    from portrait.gates import gx

    return gx.expectation_classes()
