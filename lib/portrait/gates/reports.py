"""Gate reports: what a gate found, the verdict, and the record in ops.gate_results.

* ``CheckResult`` / ``GateReport``: the outcome of each expectation of one
  table for one date (``GateReport.to_rows()`` are ops.gate_results rows).
* ``check(reports)`` raises ``GateFailed`` naming each failed expectation, its
  column, what was observed and the table.
* ``record(spark, catalog, reports, dt)`` stores the reports of one gate stage
  in ops.gate_results (idempotent per date, see its docstring).

Nothing here imports Great Expectations (``portrait.gates.gx`` is the adapter).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from portrait.gates.declarations import as_date, sql_literal

log = logging.getLogger(__name__)

GATE_RESULTS = "ops.gate_results"
#: How many offending values / rows a finding quotes.
EXAMPLES = 3
OBSERVED_MAX_CHARS = 400


class GateFailed(Exception):
    """A gate found data that must not be published; carries the reports."""

    def __init__(self, message: str, reports: list[GateReport]):
        super().__init__(message)
        self.reports = list(reports)

    @property
    def failed(self) -> list[GateReport]:
        return [report for report in self.reports if not report.success]


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


def percent(value) -> str:
    value = float(value)
    if value == 0:
        return "0%"
    if value < 0.01:
        return "<0.01%"
    return f"{value:.3g}%"


def short(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k}={short(v)}" for k, v in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(short(v) for v in value) + "]"
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


def clip(text: str) -> str:
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
    dt = as_date(dt)
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
                stored = catalog.read(spark, GATE_RESULTS).where(f"dt = DATE'{dt}' AND gate = {sql_literal(gate)}").collect()
                kept = [tuple(row[c] for c in spec.columns) for row in stored if row["table_name"] not in replaced]
            new = [tuple(row[c] for c in spec.columns) for report in mine for row in report.to_rows()]
            df = spark.createDataFrame(kept + new, spec.ddl)
            return catalog.write(spark, df, GATE_RESULTS, "partition", {"dt": dt, "gate": gate})

        version = _commit_retrying(write, f"{GATE_RESULTS} {dt}/{gate}")
    return version


def _commit_retrying(write, what: str, attempts: int = 8):
    """``write()``, again after a short random pause when it lost a commit race (another gate committed first)."""
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
