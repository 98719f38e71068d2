"""Quality gates: the declared expectations of a table, run by Great Expectations.

A gate stands between a job and the tables consumers read (write, audit,
publish: ``portrait.core.pipeline``). What must hold is declared as data in
``conf/gates/*.yaml`` (format: conf/gates/README.md). One module per job:

* ``declarations``: the YAML format, parsed and checked (``table_checks``,
  ``check_declarations``, ``resolve_reference``); ``for_each_column:`` and
  ``values_of:`` are expanded here.
* ``gx``: the Great Expectations adapter, the only module importing
  great_expectations (lazily; ``preload`` starts the import in the background).
* ``run``: ``run_gate(spark, table, df, dt, conf, gate_name)`` validates ``df``
  (the new rows of one run) against everything declared for ``table``.
* ``reports``: ``GateReport``, ``check(reports)`` (raises ``GateFailed``) and
  ``record(spark, catalog, reports, dt)`` (ops.gate_results).
* ``data_docs``: GX data docs rendered into the lake.

This package re-exports the names callers use. Importing it is cheap: Great
Expectations (about 5 s to import) is loaded on the first ``run_gate``.
"""

from __future__ import annotations

from portrait.gates.data_docs import data_docs_dir, render_data_docs
from portrait.gates.declarations import (
    GATES_FILE,
    Check,
    check_declarations,
    resolve_reference,
    resolve_values,
    run_date_values,
    table_checks,
    table_view,
)
from portrait.gates.gx import preload
from portrait.gates.reports import GATE_RESULTS, CheckResult, GateFailed, GateReport, check, record
from portrait.gates.run import run_gate

__all__ = [
    "GATES_FILE",
    "GATE_RESULTS",
    "Check",
    "CheckResult",
    "GateFailed",
    "GateReport",
    "check",
    "check_declarations",
    "data_docs_dir",
    "preload",
    "record",
    "render_data_docs",
    "resolve_reference",
    "resolve_values",
    "run_date_values",
    "run_gate",
    "table_checks",
    "table_view",
]
