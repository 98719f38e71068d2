"""Quality gates: the declared expectations of a table, run by Great Expectations.

A gate stands between a job and the tables consumers read (write, audit,
publish: ``lib/pipeline.py``). What must hold is declared as data in
``conf/gates/*.yaml`` (format described in conf/gates/silver.yaml); this module interprets it:

* ``run_gate(spark, table, df, dt, conf, gate_name)`` validates ``df`` (the new
  rows of one run) against everything declared for ``table`` with real Great
  Expectations 1.x on the Spark Connect DataFrame: one ephemeral GX context per
  process, one Spark data source, a whole-dataframe batch, and **one**
  ExpectationSuite validated in one pass per table. It returns a ``GateReport``.
* ``record(spark, catalog, reports, dt)`` stores the reports of one gate stage in
  ``ops.gate_results``, in the gate's own (dt, gate) partition (idempotent per
  date, safe for gates running at once; see its docstring).
* ``check(reports)`` raises ``GateFailed`` naming each failed expectation, its
  column, what was observed and the table.

Row conditions (cross-column rules in SQL) run as GX's
``UnexpectedRowsExpectation`` (``SELECT ... FROM {batch} WHERE NOT rule``),
which works on Sail. GX registers the batch as the session temp view
``tmp_view`` for it; gates therefore run one at a time per process (a lock) and
drop that view afterwards.

Importing this module is cheap; Great Expectations (about 5 s to import) is
loaded on the first ``run_gate``.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

from portrait.core.config import Conf, ConfError
from portrait.core.tables import Catalog

log = logging.getLogger(__name__)

GATE_RESULTS = "ops.gate_results"
GATES_FILE = "conf/gates"

#: Shorthand for a SQL predicate every row must satisfy (runs as UnexpectedRowsExpectation).
ROW_CONDITION = "row_condition"
UNEXPECTED_ROWS = "unexpected_rows_expectation"
#: Keys of a gate entry this module reads itself; every other key goes to the GX expectation.
OWN_KEYS = ("expectation", "name", "condition", "columns")
#: Expectation arguments that name columns of the table.
COLUMN_ARGS = ("column", "column_A", "column_B", "column_list")
#: How many offending values / rows a finding quotes.
EXAMPLES = 3
OBSERVED_MAX_CHARS = 400
#: Placeholders in strings: {dt} {dt_start} {dt_end} {tz}, {conf:file.path.to.value} and
#: {table:layer.name} (the published table, for checks against another table: a
#: temporary view the gate registers, so the SQL reads it on every engine);
#: {batch} is left for GX. Doubled braces are not placeholders.
_PLACEHOLDER = re.compile(r"(?<!\{)\{((?:conf|table):[^{}]+|[A-Za-z_]+)\}(?!\})")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQL_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")


class GateFailed(Exception):
    """A gate found data that must not be published; carries the reports."""

    def __init__(self, message: str, reports: list[GateReport]):
        super().__init__(message)
        self.reports = list(reports)

    @property
    def failed(self) -> list[GateReport]:
        return [report for report in self.reports if not report.success]


# --------------------------------------------------------------------------- declarations


def _as_date(value) -> date:
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
        cached = getattr(type(conf), head, None)
        if isinstance(cached, cached_property):
            value = getattr(conf, head)
        elif (conf.dir / f"{head}.yaml").is_file():
            value = conf.load(head)
        else:
            value = conf.load_dir(head)
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

    return {"dt": dt.isoformat(), "dt_start": utc(dt), "dt_end": utc(dt + timedelta(days=1)), "tz": tz_name}


def _sql_text(value: Any) -> str:
    """A referenced value as it reads inside SQL text: lists become ('a', 'b')."""
    if isinstance(value, (list, tuple, set)):
        return "(" + ", ".join(_sql_literal(v) for v in value) + ")"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sql_literal(value: Any) -> str:
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

    @property
    def where(self) -> str:
        return f"{GATES_FILE} {self.table}[{self.index}] ({self.expectation} {self.label})".rstrip()

    @property
    def is_row_query(self) -> bool:
        return "unexpected_rows_query" in self.kwargs

    def build(self):
        """The GX expectation object (validates the arguments)."""
        cls = _expectation_classes()[self.gx_type]
        try:
            return cls(**self.kwargs, meta={"portrait_check": self.index})
        except Exception as exc:  # noqa: BLE001 - pydantic names every bad argument
            detail = " ".join(str(exc).split())
            raise ConfError(f"{self.where}: invalid arguments for {cls.__name__}: {detail}") from None

    @property
    def gx_type(self) -> str:
        return UNEXPECTED_ROWS if self.expectation == ROW_CONDITION else self.expectation


def _expectation_classes() -> dict[str, type]:
    """Every GX core expectation, by snake_case name (expect_column_values_to_not_be_null)."""
    global _CLASSES
    if _CLASSES is None:
        import inspect

        gxe = _import_gx().expectations
        from great_expectations.expectations.expectation import Expectation

        _CLASSES = {
            cls.expectation_type: cls
            for cls in vars(gxe).values()
            if inspect.isclass(cls) and issubclass(cls, Expectation) and getattr(cls, "expectation_type", None)
        }
    return _CLASSES


_CLASSES: dict[str, type] | None = None


def _canonical(name) -> str:
    """The snake_case name of an expectation given in snake_case or as its GX class name."""
    name = str(name).strip()
    if name in (ROW_CONDITION, UNEXPECTED_ROWS):
        return name
    by_class = {cls.__name__: snake for snake, cls in _expectation_classes().items()}
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
    placeholders = run_date_values(conf, _as_date(dt))
    checks = [_parse_entry(conf, table, index, entry, placeholders, lake) for index, entry in enumerate(entries, 1)]
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
        classes = _expectation_classes()
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
        known = ", ".join("{" + k + "}" for k in [*placeholders, "batch", "conf:file.key", "table:layer.name"])
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


# --------------------------------------------------------------------------- Great Expectations


_lock = threading.RLock()


@dataclass
class _GX:
    context: Any
    spark: Any = None
    datasource: Any = None
    batch_definition: Any = None


_state: _GX | None = None


def _import_gx():
    # GX logs at INFO/WARNING about its own plumbing (214 "Skipping registering
    # function" lines while importing; one module even pins INFO): quiet it
    # before the import, and the pinned one after. The gate reports what matters.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return gx


def preload() -> None:
    """Import Great Expectations in a background thread while the stage's job runs.

    The import takes seconds; the job mostly waits on the engine, so the two
    overlap and the gate finds GX loaded. Importing it again is then free.
    """
    threading.Thread(target=_import_gx, name="portrait-gx-import", daemon=True).start()


def _gx_for(spark) -> _GX:
    """The process's GX context, with a Spark data source bound to ``spark`` (cached)."""
    global _state
    if _state is None:
        gx = _import_gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        _state = _GX(context)
    if _state.spark is not spark:  # first use, or a new session (engine restarted)
        sources = _state.context.data_sources
        if _state.datasource is not None:
            sources.delete(_state.datasource.name)
        # persist=False: Sail answers persist with a warning and a no-op
        datasource = sources.add_spark(name="portrait_spark", persist=False)
        datasource._spark = spark  # validate on this session, not on whatever getOrCreate finds
        asset = datasource.add_dataframe_asset(name="gate_input")
        _state.spark, _state.datasource = spark, datasource
        _state.batch_definition = asset.add_batch_definition_whole_dataframe("whole_dataframe")
    return _state


def _validate(spark, df, checks: list[Check], suite_name: str):
    """One suite, one validation pass; returns {check index: ExpectationValidationResult}."""
    gx = _import_gx()
    with _lock:
        state = _gx_for(spark)
        suite = gx.ExpectationSuite(name=suite_name, expectations=[check.build() for check in checks])
        batch = state.batch_definition.get_batch(batch_parameters={"dataframe": df})
        try:
            outcome = batch.validate(suite, result_format={"result_format": "BASIC", "partial_unexpected_count": EXAMPLES})
        finally:
            if any(check.is_row_query for check in checks):
                _drop_view(spark, "tmp_view")  # what GX's query metrics register for {batch}
    return {result.expectation_config.meta.get("portrait_check"): result for result in outcome.results}


def _drop_view(spark, name: str) -> None:
    try:
        spark.catalog.dropTempView(name)
    except Exception:  # noqa: BLE001 - nothing to drop
        pass


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one expectation."""

    expectation: str
    column: str
    success: bool
    observed: str
    severity: str = "critical"
    unexpected_count: int | None = None

    @property
    def blocking(self) -> bool:
        return not self.success and self.severity == "critical"

    def line(self, table: str) -> str:
        tag = "" if self.severity == "critical" else f" [{self.severity}]"
        return f"{table}: {self.expectation}({self.column}) observed {self.observed}{tag}"


@dataclass
class GateReport:
    """What one gate found on one table for one date."""

    gate: str
    table: str
    dt: date
    results: list[CheckResult]
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: float = 0.0
    rows: int | None = None

    @property
    def success(self) -> bool:
        return not self.failures()

    def failures(self) -> list[CheckResult]:
        """Failed critical expectations: these stop publishing."""
        return [r for r in self.results if r.blocking]

    def warnings(self) -> list[CheckResult]:
        """Failed expectations declared ``severity: warning`` or ``info``: recorded, not blocking."""
        return [r for r in self.results if not r.success and not r.blocking]

    def summary(self) -> str:
        failures, warnings = self.failures(), self.warnings()
        verdict = "failed" if failures else "passed"
        counts = f"{len(failures)} of {len(self.results)} expectations failed" if failures else f"{len(self.results)} expectations"
        lines = [f"gate {self.gate} {verdict} for {self.dt} on {self.table} ({counts})"]
        lines += ["  " + r.line(self.table) for r in failures + warnings]
        return "\n".join(lines)

    def to_rows(self) -> list[dict]:
        """Rows for ops.gate_results, one per expectation, keyed by its declared columns."""
        return [
            {
                "gate": self.gate,
                "table_name": self.table,
                "expectation": r.expectation,
                "column_name": r.column,
                "observed": r.observed if r.success or r.blocking else f"[{r.severity}] {r.observed}",
                "success": r.success,
                "checked_at": self.checked_at,
                "dt": self.dt,
            }
            for r in self.results
        ]


def run_gate(spark, table_name: str, df, dt, conf: Conf | None = None, gate_name: str | None = None, lake: str = ".") -> GateReport:
    """Validate ``df`` (the new rows of one run) against the gate declared for ``table_name``.

    ``lake`` holds the published tables a ``{table:...}`` placeholder reads.

    Raises ConfError for a gate that is not declared, an unknown expectation,
    bad arguments or a column ``df`` does not have; data problems never raise
    here, they are findings in the report (``check`` turns them into GateFailed).
    """
    conf = conf or Conf()
    dt = _as_date(dt)
    gate = gate_name or table_name.split(".")[0]
    checks = table_checks(conf, table_name, dt, lake)
    present = set(df.columns)
    for check in checks:
        missing = [c for c in check.columns if c not in present]
        if missing:
            raise ConfError(
                f"{check.where}: column {', '.join(missing)} is not in the data of {table_name} (columns: {', '.join(df.columns)})"
            )
    started = time.perf_counter()
    checked_at = datetime.now(UTC)
    referenced = list(dict.fromkeys(name for check in checks for name in check.tables))
    for name in referenced:
        Catalog(lake, conf).read(spark, name).createOrReplaceTempView(table_view(name))
    try:
        outcomes = _validate(spark, df, checks, f"{gate}.{table_name}.{dt}")
        rows = next((o.result.get("element_count") for o in outcomes.values() if o.result.get("element_count") is not None), None)
        results = [_result(spark, df, check, outcomes.get(check.index), rows) for check in checks]
    finally:
        for name in referenced:
            _drop_view(spark, table_view(name))
    report = GateReport(gate, table_name, dt, results, checked_at, round(time.perf_counter() - started, 3), rows)
    log.info(
        "gate %s %s for %s on %s: %d expectations in %.2fs",
        gate,
        "passed" if report.success else "FAILED",
        dt,
        table_name,
        len(results),
        report.seconds,
    )
    return report


def _result(spark, df, check: Check, outcome, rows: int | None) -> CheckResult:
    if outcome is None:
        return CheckResult(check.expectation, check.label, False, "error: Great Expectations returned no result", check.severity)
    error = _error_message(outcome)
    if error:
        return CheckResult(check.expectation, check.label, False, _clip(f"error: {error}"), check.severity)
    result = outcome.result or {}
    success = bool(outcome.success)
    if "unexpected_count" in result:
        count = int(result.get("unexpected_count") or 0)
        total = result.get("element_count")
        percent = result.get("unexpected_percent_total", result.get("unexpected_percent"))
        observed = f"{count} unexpected" + (f" ({_percent(percent)})" if percent is not None else "")
        if total is not None:
            observed += f" of {total} rows"
        examples = result.get("partial_unexpected_list") or []
        if count and examples:
            observed += ", e.g. " + ", ".join(_short(v) for v in examples[:EXAMPLES])
        return CheckResult(check.expectation, check.label, success, _clip(observed), check.severity, count)
    if check.is_row_query:
        count = int(result.get("observed_value") or 0)
        observed = f"{count} unexpected row{'s' if count != 1 else ''}"
        if rows:
            observed += f" ({_percent(100.0 * count / rows)}) of {rows} rows"
        if count:
            observed += _row_examples(spark, df, check.kwargs["unexpected_rows_query"])
        return CheckResult(check.expectation, check.label, success, _clip(observed), check.severity, count)
    return CheckResult(check.expectation, check.label, success, _clip(_short(result.get("observed_value"))), check.severity)


def _row_examples(spark, df, query: str) -> str:
    """A few offending rows of a failed row condition (GX's BASIC results carry only the count)."""
    view = f"_portrait_gate_{threading.get_ident()}"
    try:
        df.createOrReplaceTempView(view)
        found = spark.sql(query.replace("{batch}", view)).limit(EXAMPLES).collect()
    except Exception as exc:  # noqa: BLE001 - examples are a courtesy
        log.debug("could not fetch example rows: %s", exc)
        return ""
    finally:
        _drop_view(spark, view)
    return ", e.g. " + "; ".join(_short(row.asDict()) for row in found) if found else ""


def _error_message(outcome) -> str | None:
    info = outcome.exception_info or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            message = str(item.get("exception_message") or "").strip()
            return " ".join(message.split()) or "raised an exception"
    return None


def _percent(value) -> str:
    value = float(value)
    if value == 0:
        return "0%"
    if value < 0.01:
        return "<0.01%"
    return f"{value:.3g}%"


def _short(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k}={_short(v)}" for k, v in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, datetime):
        # PySpark hands timestamps back as naive local-time datetimes; stored values are UTC
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(value, float):
        return repr(value)
    try:
        from decimal import Decimal

        if isinstance(value, Decimal):
            return str(value.normalize()) if value == value.to_integral() else str(value)
    except Exception:  # noqa: BLE001
        pass
    return str(value)


def _clip(text: str) -> str:
    return text if len(text) <= OBSERVED_MAX_CHARS else text[: OBSERVED_MAX_CHARS - 1] + "…"


# --------------------------------------------------------------------------- verdict and record


def check(reports: list[GateReport]) -> None:
    """Raise GateFailed if any report has a failed critical expectation.

    The first line names the gate, the date and the first finding (the CLI
    prints only that line); the following lines list every finding.
    """
    failed = [report for report in reports if not report.success]
    if not failed:
        return
    findings = [result.line(report.table) for report in failed for result in report.failures()]
    gates = ", ".join(dict.fromkeys(report.gate for report in failed))
    dates = ", ".join(dict.fromkeys(str(report.dt) for report in failed))
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    message = f"gate {gates} failed for {dates}: {findings[0]}{more}"
    if len(findings) > 1:
        message += "\n" + "\n".join("  " + line for line in findings)
    raise GateFailed(message, reports)


def record(spark, catalog, reports: list[GateReport], dt) -> int | None:
    """Store the reports of one gate stage for ``dt`` in ops.gate_results; returns the table version.

    ops.gate_results is partitioned by (dt, gate): each gate owns its own
    partition of a date, so gates of different stages record concurrently
    without touching each other's rows. For each gate in ``reports`` the rows
    already stored for (dt, gate) are read (a few hundred at most), those of
    every table present in ``reports`` are dropped, the new rows are added, and
    the (dt, gate) partition is replaced in one commit through the one writer
    (``Catalog.write(..., "partition", {"dt": dt, "gate": gate})``). Rerunning
    a stage therefore replaces its own findings (also when an expectation was
    removed from conf) and leaves other gates' rows and every other date
    untouched. A commit that loses a race with another gate's commit is
    retried (``_commit_retrying``).
    """
    dt = _as_date(dt)
    if not reports:
        return None
    stray = sorted({str(report.dt) for report in reports if report.dt != dt})
    if stray:
        raise ValueError(f"record() for {dt} got reports of {', '.join(stray)}")
    spec = catalog.spec(GATE_RESULTS)
    version = None
    for gate in sorted({report.gate for report in reports}):
        mine = [report for report in reports if report.gate == gate]
        replaced = {report.table for report in mine}

        def write(gate=gate, mine=mine, replaced=replaced):
            kept = []
            if catalog.exists(GATE_RESULTS):
                stored = catalog.read(spark, GATE_RESULTS).where(f"dt = DATE'{dt}' AND gate = {_sql_literal(gate)}").collect()
                kept = [tuple(row[c] for c in spec.columns) for row in stored if row["table_name"] not in replaced]
            new = [tuple(row[c] for c in spec.columns) for report in mine for row in report.to_rows()]
            df = spark.createDataFrame(kept + new, spec.ddl)
            return catalog.write(spark, df, GATE_RESULTS, "partition", {"dt": dt, "gate": gate})

        version = _commit_retrying(write, f"{GATE_RESULTS} {dt}/{gate}")
    return version


def _commit_retrying(write, what: str, attempts: int = 8):
    """``write()``, again after a short random pause when it lost a commit race (another gate committed first)."""
    import random

    for attempt in range(1, attempts + 1):
        try:
            return write()
        except Exception as exc:  # noqa: BLE001 - only commit conflicts are retried, see below
            text = f"{type(exc).__name__}: {exc}".lower()
            if attempt == attempts or not any(word in text for word in ("failed to commit", "conflict", "concurrent", "already exists")):
                raise
            log.info("%s: commit lost a race (%s); attempt %s of %s", what, type(exc).__name__, attempt + 1, attempts)
            time.sleep(random.uniform(0.2, 1.0) * attempt)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- data docs


def data_docs_dir(lake: str) -> str:
    """Where the lake keeps its rendered data docs."""
    from pathlib import Path

    return str(Path(lake) / "ops" / "data_docs")


def render_data_docs(spark, frames: dict, dt, directory: str, conf: Conf | None = None) -> str:
    """Render GX data docs (HTML) for ``{table: df}`` gated on ``dt`` into ``directory``.

    Not on the daily path (``run_gate`` keeps no GX stores): this validates the
    frames once more through a stored suite, ValidationDefinition and Checkpoint
    with an UpdateDataDocsAction writing a file site (``data_docs_dir(lake)``),
    about a second per small table. The site index lists what this process
    rendered; pages of earlier renders stay in the directory. Returns the
    path of ``index.html``.
    """
    from pathlib import Path

    gx = _import_gx()
    conf = conf or Conf()
    dt = _as_date(dt)
    target = Path(directory).resolve()
    target.mkdir(parents=True, exist_ok=True)
    site = f"portrait_{abs(hash(str(target)))}"
    with _lock:
        state = _gx_for(spark)
        context = state.context
        if site not in (context.get_site_names() or []):
            context.add_data_docs_site(
                site_name=site,
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(target)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        for table, df in frames.items():
            checks = table_checks(conf, table, dt)
            name = f"{table}.{dt}"
            for store in (context.checkpoints, context.validation_definitions, context.suites):
                try:
                    store.delete(name)
                except Exception:  # noqa: BLE001 - first render of this name
                    pass
            suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=[c.build() for c in checks]))
            definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=state.batch_definition, suite=suite))
            checkpoint = context.checkpoints.add(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=[definition],
                    actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[site])],
                    result_format={"result_format": "BASIC", "partial_unexpected_count": EXAMPLES},
                )
            )
            try:
                checkpoint.run(batch_parameters={"dataframe": df})
            finally:
                _drop_view(spark, "tmp_view")
    return str(target / "index.html")
