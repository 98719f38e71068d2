"""The Great Expectations adapter: the only module that imports great_expectations.

Checks (``portrait.gates.declarations.Check``) are validated with real Great
Expectations 1.x on the Spark Connect DataFrame: one ephemeral GX context per
process, one Spark data source, a whole-dataframe batch, and per table one
BOOLEAN_ONLY pass over the map expectations plus one BASIC pass over the
rest, the failed map expectations again as BASIC (``validate``); each GX result
becomes a ``CheckResult`` (``result``). ``update_data_docs`` runs a stored
suite through a Checkpoint that renders HTML data docs.

Row conditions run as GX's ``UnexpectedRowsExpectation`` (``SELECT ... FROM
{batch} WHERE NOT rule``), which works on Sail. GX registers the batch as the
session temp view ``tmp_view`` for it; gates therefore run one at a time per
process (a lock) and drop that view afterwards.

Great Expectations takes about 5 s to import: it is loaded on first use
(``preload`` starts that import in the background).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from portrait.gates.reports import EXAMPLES, CheckResult, clip, percent, short

log = logging.getLogger("portrait.gates")


def expectation_classes() -> dict[str, type]:
    """Every GX core expectation, by snake_case name (expect_column_values_to_not_be_null)."""
    global _CLASSES
    if _CLASSES is None:
        import inspect

        gxe = import_gx().expectations
        from great_expectations.expectations.expectation import Expectation

        _CLASSES = {
            cls.expectation_type: cls
            for cls in vars(gxe).values()
            if inspect.isclass(cls) and issubclass(cls, Expectation) and getattr(cls, "expectation_type", None)
        }
    return _CLASSES


_CLASSES: dict[str, type] | None = None

_lock = threading.RLock()


@dataclass
class _GX:
    context: Any
    spark: Any = None
    datasource: Any = None
    batch_definition: Any = None


_state: _GX | None = None


def import_gx():
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
    threading.Thread(target=import_gx, name="portrait-gx-import", daemon=True).start()


def _gx_for(spark) -> _GX:
    """The process's GX context, with a Spark data source bound to ``spark`` (cached)."""
    global _state
    if _state is None:
        gx = import_gx()
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


def validate(spark, df, checks: list, suite_name: str) -> tuple[dict, int | None]:
    """Validate ``checks`` on ``df``; returns ({check position: ExpectationValidationResult}, rows of ``df``).

    GX's BASIC results cost one query per map expectation for its example
    values, on top of the one aggregate query that counts every map
    expectation's unexpected rows. Most checks pass, so map expectations that
    must hold on every row run first as BOOLEAN_ONLY (that one aggregate
    query); only the ones that fail run again as BASIC for their counts and
    examples. A passing one is reported as 0 unexpected of ``rows``, which is
    exactly what BASIC would have said. The other checks run as BASIC, with a
    row count of the table beside them.
    """
    gx = import_gx()
    strict = [check for check in checks if _is_strict_map(check)]
    others = [check for check in checks if not _is_strict_map(check)]
    with _lock:
        state = _gx_for(spark)
        batch = state.batch_definition.get_batch(batch_parameters={"dataframe": df})
        row_count = gx.expectations.ExpectTableRowCountToBeBetween(min_value=0, meta={"portrait_check": _ROWS})
        try:
            found = _run(gx, batch, f"{suite_name}.basic", [c.build() for c in others] + [row_count], "BASIC")
            rows = found.pop(_ROWS).result.get("observed_value")
            if strict:
                quick = _run(gx, batch, f"{suite_name}.boolean", [c.build() for c in strict], "BOOLEAN_ONLY")
                failed = [c for c in strict if not quick[c.position].success]
                if failed:
                    quick.update(_run(gx, batch, f"{suite_name}.failed", [c.build() for c in failed], "BASIC"))
                for check in strict:
                    outcome = quick[check.position]
                    if outcome.success and not outcome.result:
                        outcome.result = {
                            "element_count": rows,
                            "unexpected_count": 0,
                            "unexpected_percent_total": 0.0 if rows else None,
                            "partial_unexpected_list": [],
                        }
                found.update(quick)
        finally:
            if any(check.is_row_query for check in checks):
                drop_view(spark, "tmp_view")  # what GX's query metrics register for {batch}
    return found, rows


_ROWS = "rows"  # the meta tag of the row count validated beside the checks
_MAP_BASES = ("ColumnMapExpectation", "ColumnPairMapExpectation", "MulticolumnMapExpectation")


def _is_strict_map(check) -> bool:
    """A map expectation that must hold on every row (no ``mostly``): its pass needs no per-row result."""
    bases = {base.__name__ for base in expectation_classes()[check.gx_type].__mro__}
    return bool(bases.intersection(_MAP_BASES)) and float(check.kwargs.get("mostly", 1.0)) >= 1.0


def _run(gx, batch, name: str, expectations: list, result_format: str) -> dict:
    suite = gx.ExpectationSuite(name=name, expectations=expectations)
    outcome = batch.validate(suite, result_format={"result_format": result_format, "partial_unexpected_count": EXAMPLES})
    return {result.expectation_config.meta.get("portrait_check"): result for result in outcome.results}


def drop_view(spark, name: str) -> None:
    try:
        spark.catalog.dropTempView(name)
    except Exception:  # noqa: BLE001 - nothing to drop
        pass


def result(spark, df, check, outcome, rows: int | None) -> CheckResult:
    """The ``CheckResult`` of ``check`` from its GX validation result (``outcome``)."""
    if outcome is None:
        return CheckResult(check.expectation, check.label, False, "error: Great Expectations returned no result", check.severity)
    error = _error_message(outcome)
    if error:
        return CheckResult(check.expectation, check.label, False, clip(f"error: {error}"), check.severity)
    result = outcome.result or {}
    success = bool(outcome.success)
    if "unexpected_count" in result:
        count = int(result.get("unexpected_count") or 0)
        total = result.get("element_count")
        share = result.get("unexpected_percent_total", result.get("unexpected_percent"))
        observed = f"{count} unexpected" + (f" ({percent(share)})" if share is not None else "")
        if total is not None:
            observed += f" of {total} rows"
        examples = result.get("partial_unexpected_list") or []
        if count and examples:
            observed += ", e.g. " + ", ".join(short(v) for v in examples[:EXAMPLES])
        return CheckResult(check.expectation, check.label, success, clip(observed), check.severity, count)
    if check.is_row_query:
        count = int(result.get("observed_value") or 0)
        observed = f"{count} unexpected row{'s' if count != 1 else ''}"
        if rows:
            observed += f" ({percent(100.0 * count / rows)}) of {rows} rows"
        if count:
            observed += _row_examples(spark, df, check.kwargs["unexpected_rows_query"])
        return CheckResult(check.expectation, check.label, success, clip(observed), check.severity, count)
    return CheckResult(check.expectation, check.label, success, clip(short(result.get("observed_value"))), check.severity)


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
        drop_view(spark, view)
    return ", e.g. " + "; ".join(short(row.asDict()) for row in found) if found else ""


def _error_message(outcome) -> str | None:
    info = outcome.exception_info or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            message = str(item.get("exception_message") or "").strip()
            return " ".join(message.split()) or "raised an exception"
    return None


def update_data_docs(spark, directory, suites: dict) -> None:
    """Validate ``{name: (checks, df)}`` through stored suites and a Checkpoint that renders data docs into ``directory``.

    The site index lists what this process rendered; pages of earlier renders
    stay in the directory.
    """
    gx = import_gx()
    site = f"portrait_{abs(hash(str(directory)))}"
    with _lock:
        state = _gx_for(spark)
        context = state.context
        if site not in (context.get_site_names() or []):
            context.add_data_docs_site(
                site_name=site,
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(directory)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        for name, (checks, df) in suites.items():
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
                drop_view(spark, "tmp_view")
