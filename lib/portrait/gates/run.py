"""Run a gate: the declared checks of a table (declarations), validated by GX (gx), as a report (reports)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from portrait.core.config import Conf, ConfError
from portrait.core.tables import Catalog
from portrait.gates import gx
from portrait.gates.declarations import as_date, table_checks, table_view
from portrait.gates.reports import GateReport

log = logging.getLogger("portrait.gates")


def run_gate(spark, table_name: str, df, dt, conf: Conf | None = None, gate_name: str | None = None, lake: str = ".") -> GateReport:
    """Validate ``df`` (the new rows of one run) against the gate declared for ``table_name``.

    ``lake`` holds the published tables a ``{table:...}`` placeholder reads.

    Raises ConfError for a gate that is not declared, an unknown expectation,
    bad arguments or a column ``df`` does not have; data problems never raise
    here, they are findings in the report (``check`` turns them into GateFailed).
    """
    conf = conf or Conf()
    dt = as_date(dt)
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
        outcomes, rows = gx.validate(spark, df, checks, f"{gate}.{table_name}.{dt}")
        results = [gx.result(spark, df, check, outcomes.get(check.position), rows) for check in checks]
    finally:
        for name in referenced:
            gx.drop_view(spark, table_view(name))
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
