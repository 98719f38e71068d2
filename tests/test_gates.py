"""Quality gates: declared expectations run by real Great Expectations on the real engine."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime

import pytest
import yaml

from portrait import gates
from portrait.core.config import Conf, ConfError
from portrait.core.tables import Catalog
from portrait.gates import GateFailed, check, gx, record, run_gate
from repo import REPO_ROOT

DT = date(2026, 7, 1)
CONF = Conf(REPO_ROOT / "conf")


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


#: One valid row per table; tests change what they are about.
BASE = {
    "silver.orders": dict(
        order_id="o1",
        user_id="u1",
        ts=utc(2026, 7, 1, 3),
        amount=45.0,
        coupon_amount=0.0,
        item_count=1,
        address_id="a1",
        product_line="salad",
        status="paid",
        dt=DT,
        landing_dt=DT,
    ),
    "silver.order_items": dict(
        order_id="o1",
        line_no=1,
        user_id="u1",
        sku="salad-fruit-1",
        category="fruit",
        qty=1,
        price=45.0,
        dt=DT,
        landing_dt=DT,
    ),
    "silver.events": dict(
        event_id="e1",
        user_id="u1",
        anonymous=False,
        device_id="d1",
        event_type="view",
        ts=utc(2026, 7, 1, 3),
        product_line="salad",
        category="fruit",
        sku="salad-fruit-1",
        item_id=None,
        order_id=None,
        rating=None,
        wait_minutes=None,
        refund_amount=None,
        seconds=None,
        dt=DT,
        landing_dt=DT,
    ),
    "ops.reconciliation": dict(
        source="events",
        input_records=100,
        accepted=95,
        quarantined=5,
        duplicates=0,
        policy_filtered=0,
        balanced=True,
        files=1,
        dt=DT,
    ),
}


def frame(spark, table, *changes, conf=CONF):
    """A DataFrame with the declared schema of ``table``: one row per change of its BASE row."""
    columns = Catalog(".", conf).spec(table).columns  # types resolved ({type: T, pii: true} marks too)
    rows = [tuple({**BASE[table], **change}[c] for c in columns) for change in changes]
    return spark.createDataFrame(rows, ", ".join(f"`{c}` {t}" for c, t in columns.items()))


def failure_message(reports) -> str:
    with pytest.raises(GateFailed) as caught:
        check(reports)
    return str(caught.value)


def conf_with(tmp_path, gates_doc=None, **clean) -> Conf:
    """A copy of the repo's conf with other gates and/or changed clean settings."""
    conf_dir = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf_dir)
    if gates_doc is not None:
        shutil.rmtree(conf_dir / "gates", ignore_errors=True)
        (conf_dir / "gates").mkdir()
        (conf_dir / "gates" / "test.yaml").write_text(yaml.safe_dump(gates_doc, allow_unicode=True))
    if clean:
        pipeline = yaml.safe_load((conf_dir / "pipeline.yaml").read_text())
        pipeline["clean"].update(clean)
        (conf_dir / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, allow_unicode=True))
    return Conf(conf_dir)


# --------------------------------------------------------------------------- declarations


def test_every_declared_gate_matches_the_declared_tables():
    assert gates.check_declarations(CONF) == []
    for table in CONF.gates:
        assert table in CONF.tables, f"{table} is gated but not declared in conf/tables"
        declared = Catalog(".", CONF).spec(table).columns  # columns_like resolved
        for check_ in gates.table_checks(CONF, table, DT):
            assert set(check_.columns) <= set(declared), check_.where
    wanted = {
        "silver.events",
        "silver.orders",
        "silver.order_items",
        "silver.users",
        "silver.addresses",
        "silver.device_map",
        "ops.reconciliation",
    }
    assert wanted <= set(CONF.gates)


def test_check_declarations_names_each_problem(tmp_path):
    conf = conf_with(
        tmp_path,
        {
            "silver.nope": [{"expectation": "expect_column_values_to_not_be_null", "column": "x"}],
            "silver.orders": [
                {"expectation": "expect_column_values_to_not_be_null", "column": "order_nr"},
                {
                    "expectation": "row_condition",
                    "name": "paid_positive",
                    "columns": ["status"],
                    "condition": "status <> 'paid' OR amount > 0",
                },
            ],
        },
    )
    problems = "\n".join(gates.check_declarations(conf))
    assert "silver.nope: gates a table that is not declared" in problems
    assert "silver.orders[1] (expect_column_values_to_not_be_null order_nr): order_nr not among the columns" in problems
    assert "silver.orders[2] (row_condition paid_positive): its condition reads amount; list them in `columns:`" in problems


def test_conf_references_resolve_from_other_declarations():
    landing = yaml.safe_load((REPO_ROOT / "conf" / "landing.yaml").read_text())
    assert (
        gates.resolve_reference(CONF, "landing.sources.events.fields.event_type.values")
        == landing["sources"]["events"]["fields"]["event_type"]["values"]
    )
    assert gates.resolve_reference(CONF, "tables.silver.orders.key") == ["order_id"]  # keys with dots
    assert gates.resolve_reference(CONF, "pipeline.clean.test_account_channels.0") == "internal_test"
    ratio = gates.resolve_reference(CONF, "pipeline.clean.max_quarantine_ratio")
    assert isinstance(ratio, float) and 0 < ratio < 1
    with pytest.raises(ConfError, match=r"pipeline.clean has no key 'max_ratio'"):
        gates.resolve_reference(CONF, "pipeline.clean.max_ratio")


def test_declared_gates_are_resolved_for_the_run_date():
    assert gates.run_date_values(CONF, DT) == {
        "dt": "2026-07-01",
        "dt_start": "2026-06-30 16:00:00",
        "dt_end": "2026-07-01 16:00:00",
        "tz": "Asia/Shanghai",
        "sources_allowed_empty": "('')",  # no source is optional, no date declared empty: none
    }
    checks = {(c.expectation, c.label): c for c in gates.table_checks(CONF, "silver.events", DT)}
    in_set = checks[("expect_column_values_to_be_in_set", "event_type")]
    assert "app_open" in in_set.kwargs["value_set"] and "hover" not in in_set.kwargs["value_set"]
    ts_rule = checks[("row_condition", "ts_not_after_landing_day")].kwargs["unexpected_rows_query"]
    assert "timestamp '2026-07-01 16:00:00' + INTERVAL 60 MINUTES" in ts_rule and "{batch}" in ts_rule
    users = {c.label: c for c in gates.table_checks(CONF, "silver.users", DT)}
    assert "channel NOT IN ('internal_test')" in users["no_test_accounts"].kwargs["unexpected_rows_query"]


# --------------------------------------------------------------------------- passing data


def test_clean_rows_pass_every_declared_gate(spark):
    reports = [
        run_gate(spark, "silver.orders", frame(spark, "silver.orders", {}, {"order_id": "o2", "amount": 0.0, "status": "refunded"}), DT),
        run_gate(spark, "silver.order_items", frame(spark, "silver.order_items", {}, {"line_no": 2}), DT),
        run_gate(
            spark,
            "silver.events",
            frame(
                spark,
                "silver.events",
                {},
                {
                    # anonymous, at the edge of the future tolerance (17:00Z = 01:00 on 07-02 in Shanghai), a review
                    "event_id": "e2",
                    "user_id": None,
                    "anonymous": True,
                    "ts": utc(2026, 7, 1, 17),
                    "dt": date(2026, 7, 2),
                    "event_type": "review",
                    "rating": 5,
                },
            ),
            DT,
        ),
        run_gate(
            spark,
            "ops.reconciliation",
            frame(spark, "ops.reconciliation", {}, {"source": "orders", "input_records": 0, "accepted": 0, "quarantined": 0}),
            DT,
        ),
    ]
    for report in reports:
        assert report.success, report.summary()
        assert report.rows == 2 and report.failures() == [] and report.warnings() == []
        assert report.summary().startswith(f"gate {report.table.split('.')[0]} passed for 2026-07-01 on {report.table}")
    check(reports)  # does not raise


# --------------------------------------------------------------------------- failing data, one kind each


def test_null_key_fails_naming_table_expectation_and_column(spark):
    df = frame(spark, "silver.orders", {}, {"order_id": None})
    message = failure_message([run_gate(spark, "silver.orders", df, DT)])
    assert message.startswith(
        "gate silver failed for 2026-07-01: silver.orders: expect_column_values_to_not_be_null(order_id) observed 1 unexpected (50%) of 2 rows"
    )


def test_duplicate_key_fails(spark):
    report = run_gate(spark, "silver.events", frame(spark, "silver.events", {}, {}, {"event_id": "e2"}), DT, gate_name="clean")
    assert [(f.expectation, f.column) for f in report.failures()] == [("expect_column_values_to_be_unique", "event_id")]
    message = failure_message([report])
    assert "gate clean failed for 2026-07-01: silver.events: expect_column_values_to_be_unique(event_id) observed 2 unexpected" in message
    assert "e.g. e1, e1" in message


def test_duplicate_compound_key_fails(spark):
    report = run_gate(spark, "silver.order_items", frame(spark, "silver.order_items", {}, {}), DT)
    assert "silver.order_items: expect_compound_columns_to_be_unique(order_id,line_no) observed 2 unexpected" in failure_message([report])


def test_negative_amount_fails_and_quotes_the_value(spark):
    report = run_gate(spark, "silver.orders", frame(spark, "silver.orders", {}, {"order_id": "o2", "amount": -5.0}), DT)
    assert not report.success
    assert "silver.orders: expect_column_values_to_be_between(amount) observed 1 unexpected (50%) of 2 rows, e.g. -5.0" in failure_message(
        [report]
    )


def test_value_outside_its_declared_set_fails(spark):
    report = run_gate(spark, "silver.orders", frame(spark, "silver.orders", {}, {"order_id": "o2", "status": "lost"}), DT)
    assert "silver.orders: expect_column_values_to_be_in_set(status) observed 1 unexpected (50%) of 2 rows, e.g. lost" in failure_message(
        [report]
    )


def test_row_condition_violation_fails_and_shows_the_row(spark):
    late = {"event_id": "e2", "ts": utc(2026, 7, 1, 17, 0, 1), "dt": date(2026, 7, 2)}  # one second past the tolerance
    report = run_gate(spark, "silver.events", frame(spark, "silver.events", {}, late), DT)
    assert [(f.expectation, f.column) for f in report.failures()] == [("row_condition", "ts_not_after_landing_day")]
    message = failure_message([report])
    assert (
        "silver.events: row_condition(ts_not_after_landing_day) observed 1 unexpected row (50%) of 2 rows, e.g. (ts=2026-07-01 17:00:01"
        in message
    )


def test_quarantine_ratio_above_the_conf_threshold_fails(spark, tmp_path):
    conf = conf_with(tmp_path, max_quarantine_ratio=0.05, quarantine_allowance=0)
    at_limit = frame(spark, "ops.reconciliation", {"quarantined": 5, "accepted": 95})
    assert run_gate(spark, "ops.reconciliation", at_limit, DT, conf).success
    above = frame(spark, "ops.reconciliation", {"quarantined": 6, "accepted": 94}, {"source": "orders"})
    report = run_gate(spark, "ops.reconciliation", above, DT, conf, gate_name="clean")
    message = failure_message([report])
    assert message.startswith(
        "gate clean failed for 2026-07-01: ops.reconciliation: row_condition(quarantine_ratio_within_limit) "
        "observed 1 unexpected row (50%) of 2 rows, e.g. (source=events, input_records=100, accepted=94, quarantined=6, policy_filtered=0)"
    )
    lenient = conf_with(tmp_path / "lenient", max_quarantine_ratio=0.1, quarantine_allowance=0)  # the threshold comes from conf
    assert run_gate(spark, "ops.reconciliation", above, DT, lenient).success
    small_batches = conf_with(tmp_path / "small", max_quarantine_ratio=0.05, quarantine_allowance=10)  # a few bad lines are noise
    assert run_gate(spark, "ops.reconciliation", above, DT, small_batches).success
    mostly_bad = frame(spark, "ops.reconciliation", {"input_records": 9, "quarantined": 6, "accepted": 3})
    assert not run_gate(spark, "ops.reconciliation", mostly_bad, DT, small_batches).success
    assert run_gate(spark, "ops.reconciliation", above, DT, lenient).success


def test_records_filtered_by_policy_do_not_count_as_broken_input(spark, tmp_path):
    """A bot storm quarantines many events, but the source is not broken: the gate passes; broken lines on top still fail."""
    conf = conf_with(tmp_path, max_quarantine_ratio=0.05, quarantine_allowance=0)
    bot_storm = frame(spark, "ops.reconciliation", {"input_records": 100, "accepted": 70, "quarantined": 30, "policy_filtered": 26})
    assert run_gate(spark, "ops.reconciliation", bot_storm, DT, conf).success
    broken_too = frame(spark, "ops.reconciliation", {"input_records": 100, "accepted": 70, "quarantined": 30, "policy_filtered": 24})
    assert not run_gate(spark, "ops.reconciliation", broken_too, DT, conf).success


def test_a_source_without_a_file_fails_unless_optional_or_the_date_declared_empty(spark, tmp_path):
    """Issue 17 defect 5 / issue 21: a missing feed is not a quiet day (conf/landing.yaml optional, empty_dates)."""
    missing = frame(spark, "ops.reconciliation", {"source": "orders", "files": 0, "input_records": 0, "accepted": 0, "quarantined": 0})
    message = failure_message([run_gate(spark, "ops.reconciliation", missing, DT)])
    assert "row_condition(source_delivered)" in message and "source=orders" in message, message
    conf_dir = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf_dir)
    landing = yaml.safe_load((conf_dir / "landing.yaml").read_text())
    landing["empty_dates"] = [{"date": str(DT), "reason": "national holiday: nothing landed"}]
    (conf_dir / "landing.yaml").write_text(yaml.safe_dump(landing, allow_unicode=True))
    assert run_gate(spark, "ops.reconciliation", missing, DT, Conf(conf_dir)).success
    landing["empty_dates"] = []
    landing["sources"]["orders"]["optional"] = True
    (conf_dir / "landing.yaml").write_text(yaml.safe_dump(landing, allow_unicode=True))
    assert run_gate(spark, "ops.reconciliation", missing, DT, Conf(conf_dir)).success


def test_unbalanced_reconciliation_fails(spark):
    report = run_gate(spark, "ops.reconciliation", frame(spark, "ops.reconciliation", {"balanced": False}), DT)
    assert (
        "ops.reconciliation: expect_column_values_to_be_in_set(balanced) observed 1 unexpected (100%) of 1 rows, e.g. False"
        in failure_message([report])
    )


def test_every_failure_is_listed_and_the_first_line_stands_alone(spark):
    orders = run_gate(spark, "silver.orders", frame(spark, "silver.orders", {"amount": -1.0, "status": "lost"}), DT, gate_name="clean")
    events = run_gate(spark, "silver.events", frame(spark, "silver.events", {"event_type": "hover"}), DT, gate_name="clean")
    recon = run_gate(spark, "ops.reconciliation", frame(spark, "ops.reconciliation", {}), DT, gate_name="clean")
    with pytest.raises(GateFailed) as caught:
        check([orders, events, recon])
    first, *rest = str(caught.value).splitlines()
    assert first.startswith(
        "gate clean failed for 2026-07-01: silver.orders: expect_column_values_to_be_between(amount)"
    ) and first.endswith("(+2 more)")
    assert [line.split(" observed")[0].strip() for line in rest] == [
        "silver.orders: expect_column_values_to_be_between(amount)",
        "silver.orders: expect_column_values_to_be_in_set(status)",
        "silver.events: expect_column_values_to_be_in_set(event_type)",
    ]
    assert caught.value.reports == [orders, events, recon] and caught.value.failed == [orders, events]


def test_warning_severity_is_recorded_but_does_not_block(spark):
    report = run_gate(spark, "silver.events", frame(spark, "silver.events", {"event_type": "review", "rating": 9}), DT)
    assert report.success and report.failures() == []
    assert [(w.expectation, w.column) for w in report.warnings()] == [("expect_column_values_to_be_between", "rating")]
    assert "[warning]" in report.summary()
    row = next(r for r in report.to_rows() if r["column_name"] == "rating")
    assert row["success"] is False and row["observed"].startswith("[warning] 1 unexpected")
    check([report])


def test_a_rule_that_cannot_be_evaluated_is_a_failure_with_the_error(spark, tmp_path):
    conf = conf_with(
        tmp_path,
        {
            "silver.orders": [
                {"expectation": "row_condition", "name": "broken", "columns": [], "condition": "no_such_column > 0"},
            ]
        },
    )
    report = run_gate(spark, "silver.orders", frame(spark, "silver.orders", {}), DT, conf)
    (failure,) = report.failures()
    assert failure.column == "broken" and failure.observed.startswith("error: ")


# --------------------------------------------------------------------------- conf syntax and errors


def test_mapping_references_and_class_names_in_gate_entries(spark, tmp_path):
    conf = conf_with(
        tmp_path,
        {
            "ops.reconciliation": [
                {
                    "expectation": "ExpectColumnValuesToBeBetween",
                    "column": "accepted",
                    "min_value": 0,
                    "max_value": {"conf": "pipeline.clean.bot_events_per_device_per_day"},
                },
                {"expectation": "expect_column_values_to_be_in_set", "column": "source", "value_set": {"conf": "tables.silver.orders.key"}},
            ]
        },
        bot_events_per_device_per_day=95,
    )
    checks = gates.table_checks(conf, "ops.reconciliation", DT)
    assert checks[0].expectation == "expect_column_values_to_be_between" and checks[0].kwargs["max_value"] == 95
    assert checks[1].kwargs["value_set"] == ["order_id"]
    report = run_gate(spark, "ops.reconciliation", frame(spark, "ops.reconciliation", {"accepted": 96, "source": "order_id"}), DT, conf)
    assert [(f.expectation, f.column) for f in report.failures()] == [("expect_column_values_to_be_between", "accepted")]


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"expectation": "expect_column_values_to_be_positive", "column": "amount"},
            r"conf/gates silver.orders\[1\] \(expect_column_values_to_be_positive\): unknown expectation 'expect_column_values_to_be_positive'; did you mean",
        ),
        (
            {"expectation": "expect_column_values_to_be_between", "column": "amount", "min_val": 0},
            r"silver.orders\[1\] \(expect_column_values_to_be_between amount\): invalid arguments for ExpectColumnValuesToBeBetween: .*min_val",
        ),
        (
            {
                "expectation": "expect_column_values_to_be_in_set",
                "column": "status",
                "value_set": {"conf": "landing.sources.orders.fields.state.values"},
            },
            r"silver.orders\[1\] \(expect_column_values_to_be_in_set\): conf reference .*fields has no key 'state'",
        ),
        (
            {"expectation": "row_condition", "columns": ["ts"], "condition": "ts < now()"},
            r"silver.orders\[1\] \(row_condition\): a row_condition needs a `name:`",
        ),
        (
            {"expectation": "row_condition", "name": "x", "columns": ["ts"], "condition": "ts < timestamp '{dt_stop}'"},
            r"silver.orders\[1\] \(row_condition\): unknown placeholder \{dt_stop\}",
        ),
        (
            {
                "expectation": "unexpected_rows_expectation",
                "name": "x",
                "unexpected_rows_query": "SELECT * FROM {batch} b LEFT ANTI JOIN {table:silver.userz} u USING (user_id)",
            },
            r"silver.orders\[1\] \(unexpected_rows_expectation\): placeholder \{table:silver.userz\}: table 'silver.userz' is not declared",
        ),
    ],
)
def test_bad_gate_entries_are_conf_errors_naming_the_entry(spark, tmp_path, entry, message):
    conf = conf_with(tmp_path, {"silver.orders": [entry]})
    with pytest.raises(ConfError, match=message):
        run_gate(spark, "silver.orders", frame(spark, "silver.orders", {}), DT, conf)


def test_a_column_missing_from_the_data_is_a_conf_error(spark, tmp_path):
    conf = conf_with(tmp_path, {"silver.orders": [{"expectation": "expect_column_values_to_not_be_null", "column": "order_nr"}]})
    with pytest.raises(
        ConfError, match=r"silver.orders\[1\] \(expect_column_values_to_not_be_null order_nr\): column order_nr is not in the data"
    ):
        run_gate(spark, "silver.orders", frame(spark, "silver.orders", {}), DT, conf)


def test_an_ungated_table_is_a_conf_error(spark):
    with pytest.raises(ConfError, match="no gate is declared for silver.nothing"):
        run_gate(spark, "silver.nothing", frame(spark, "silver.orders", {}), DT)


def test_repeated_entries_need_a_name(tmp_path):
    entry = {"expectation": "expect_column_values_to_not_be_null", "column": "amount"}
    conf = conf_with(tmp_path, {"silver.orders": [entry, entry]})
    with pytest.raises(ConfError, match=r"silver.orders\[2\].*repeats entry 1"):
        gates.table_checks(conf, "silver.orders", DT)


# --------------------------------------------------------------------------- recording


def stored(spark, catalog, dt=DT):
    return sorted(tuple(r) for r in catalog.read(spark, "ops.gate_results").where(f"dt = DATE'{dt}'").collect())


def test_record_is_idempotent_and_keeps_other_gates_and_dates(spark, tmp_path):
    catalog = Catalog(str(tmp_path / "lake"), CONF)
    orders = run_gate(spark, "silver.orders", frame(spark, "silver.orders", {"amount": -1.0}), DT, gate_name="clean")
    recon = run_gate(spark, "ops.reconciliation", frame(spark, "ops.reconciliation", {}), DT, gate_name="clean")
    record(spark, catalog, [orders, recon], DT)
    first = stored(spark, catalog)
    assert len(first) == len(orders.results) + len(recon.results)
    record(spark, catalog, [orders, recon], DT)  # the same reports again: the same rows
    assert stored(spark, catalog) == first

    # another gate on the same date and another date are kept when the stage reruns
    other_gate = run_gate(spark, "ops.reconciliation", frame(spark, "ops.reconciliation", {}), DT, gate_name="profile")
    record(spark, catalog, [other_gate], DT)
    next_day = date(2026, 7, 2)
    record(
        spark,
        catalog,
        [run_gate(spark, "ops.reconciliation", frame(spark, "ops.reconciliation", {"dt": next_day}), next_day, gate_name="clean")],
        next_day,
    )
    day2 = stored(spark, catalog, next_day)

    rerun = [
        run_gate(spark, "silver.orders", frame(spark, "silver.orders", {"amount": -1.0}), DT, gate_name="clean"),
        run_gate(spark, "ops.reconciliation", frame(spark, "ops.reconciliation", {}), DT, gate_name="clean"),
    ]
    record(spark, catalog, rerun, DT)
    without_time = lambda rows: sorted(r[:6] + r[7:] for r in rows)  # noqa: E731 - checked_at is when it ran
    rows = stored(spark, catalog)
    assert without_time([r for r in rows if r[0] == "clean"]) == without_time(first)
    assert [r for r in rows if r[0] == "profile"] == sorted(tuple(d.values()) for d in _stored_form(other_gate))
    assert stored(spark, catalog, next_day) == day2
    failed = {(r[1], r[2], r[3]) for r in rows if not r[5]}
    assert failed == {("silver.orders", "expect_column_values_to_be_between", "amount")}


def test_gates_of_different_stages_record_the_same_date_at_the_same_time(spark, tmp_path):
    """Issue 21: no one-slot pool; each gate owns its (dt, gate) partition, a lost commit race is retried."""
    from concurrent.futures import ThreadPoolExecutor

    catalog = Catalog(str(tmp_path / "lake"), CONF)
    names = ["clean", "consumption", "behavior", "interest"]
    reports = {name: run_gate(spark, "ops.reconciliation", frame(spark, "ops.reconciliation", {}), DT, gate_name=name) for name in names}
    record(spark, catalog, [reports["clean"]], DT)  # the table exists: the others race on its log
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda name: record(spark, catalog, [reports[name]], DT), names))
    rows = stored(spark, catalog)
    assert sorted({r[0] for r in rows}) == sorted(names)
    assert len(rows) == sum(len(report.results) for report in reports.values()), "every gate's rows, once"


def _stored_form(report):
    """to_rows() as they read back: PySpark returns timestamps as naive local-time datetimes."""
    return [{**row, "checked_at": row["checked_at"].astimezone().replace(tzinfo=None)} for row in report.to_rows()]


def test_record_drops_findings_of_expectations_no_longer_declared(spark, tmp_path):
    catalog = Catalog(str(tmp_path / "lake"), CONF)
    df = frame(spark, "ops.reconciliation", {})
    record(spark, catalog, [run_gate(spark, "ops.reconciliation", df, DT, gate_name="clean")], DT)
    fewer = conf_with(tmp_path, {"ops.reconciliation": [{"expectation": "expect_column_values_to_not_be_null", "column": "source"}]})
    record(spark, catalog, [run_gate(spark, "ops.reconciliation", df, DT, fewer, gate_name="clean")], DT)
    assert [(r[2], r[3]) for r in stored(spark, catalog)] == [("expect_column_values_to_not_be_null", "source")]


def test_record_refuses_reports_of_another_date(spark, tmp_path):
    catalog = Catalog(str(tmp_path / "lake"), CONF)
    report = run_gate(spark, "ops.reconciliation", frame(spark, "ops.reconciliation", {}), DT)
    with pytest.raises(ValueError, match="record\\(\\) for 2026-07-02 got reports of 2026-07-01"):
        record(spark, catalog, [report], date(2026, 7, 2))
    assert record(spark, catalog, [], DT) is None and not catalog.exists("ops.gate_results")


# --------------------------------------------------------------------------- GX plumbing


def test_gx_context_is_created_once_and_leaves_no_temp_view(spark):
    run_gate(spark, "silver.events", frame(spark, "silver.events", {}), DT)
    state = gx._state
    run_gate(spark, "silver.events", frame(spark, "silver.events", {}), DT)
    assert gx._state is state and state.spark is spark
    assert [t.name for t in spark.catalog.listTables() if t.isTemporary and t.name.startswith(("tmp_view", "_portrait_gate"))] == []


def test_an_empty_run_passes(spark):
    report = run_gate(spark, "silver.orders", frame(spark, "silver.orders", {}).limit(0), DT)
    assert report.success and report.rows == 0
    assert report.results[0].observed == "0 unexpected of 0 rows"


def test_data_docs_render_to_the_lake(spark, tmp_path):
    df = frame(spark, "silver.orders", {}, {"order_id": "o2", "amount": -5.0})
    index = gates.render_data_docs(spark, {"silver.orders": df}, DT, gates.data_docs_dir(str(tmp_path / "lake")))
    assert index == str(tmp_path / "lake" / "ops" / "data_docs" / "index.html")
    pages = list((tmp_path / "lake" / "ops" / "data_docs" / "validations" / "silver" / "orders").rglob("*.html"))
    assert len(pages) == 1
    page = pages[0].read_text()
    assert "Failed" in page and "amount" in page and "values must be greater than or equal to" in page
    assert [t.name for t in spark.catalog.listTables() if t.isTemporary and t.name == "tmp_view"] == []


# --------------------------------------------------------------------------- for_each_column


def test_for_each_column_expands_to_one_check_per_column(tmp_path):
    conf = conf_with(
        tmp_path,
        {
            "silver.orders": [
                {"expectation": "expect_column_values_to_not_be_null", "column": "order_id"},
                {"expectation": "expect_column_values_to_be_between", "for_each_column": ["amount", "coupon_amount"], "min_value": 0},
                {
                    "expectation": "expect_column_values_to_not_be_null",
                    "for_each_column": {"matching": ["*_id", "status"], "except": ["address_id"]},
                    "mostly": 0.9,
                    "name": "{column}_mostly_set",
                },
                {
                    "expectation": "expect_column_values_to_be_between",
                    "for_each_column": {"type": "DOUBLE"},
                    "max_value": 1000,
                    "name": "{column}_plausible",
                },
                {
                    "expectation": "row_condition",
                    "for_each_column": ["amount", "coupon_amount"],
                    "name": "{column}_is_whole_cents",
                    "columns": ["{column}"],
                    "condition": "{column} = round({column}, 2)",
                },
            ]
        },
    )
    checks = gates.table_checks(conf, "silver.orders", DT)
    assert [(c.index, c.expectation, c.label) for c in checks] == [
        (1, "expect_column_values_to_not_be_null", "order_id"),
        (2, "expect_column_values_to_be_between", "amount"),
        (2, "expect_column_values_to_be_between", "coupon_amount"),
        (3, "expect_column_values_to_not_be_null", "order_id_mostly_set"),  # declared order, the pattern list's union
        (3, "expect_column_values_to_not_be_null", "user_id_mostly_set"),
        (3, "expect_column_values_to_not_be_null", "status_mostly_set"),
        (4, "expect_column_values_to_be_between", "amount_plausible"),  # the double columns
        (4, "expect_column_values_to_be_between", "coupon_amount_plausible"),
        (5, "row_condition", "amount_is_whole_cents"),
        (5, "row_condition", "coupon_amount_is_whole_cents"),
    ]
    assert [c.position for c in checks] == list(range(1, 11))
    assert checks[2].kwargs == {"column": "coupon_amount", "min_value": 0} and checks[2].columns == ("coupon_amount",)
    assert checks[4].kwargs["column"] == "user_id" and checks[4].kwargs["mostly"] == 0.9
    assert checks[8].columns == ("amount",) and "WHERE (amount = round(amount, 2)) IS NOT TRUE" in checks[8].kwargs["unexpected_rows_query"]
    assert checks[9].where == "conf/gates silver.orders[5] (row_condition coupon_amount_is_whole_cents)"
    assert gates.check_declarations(conf) == []


def test_an_expanded_check_reports_the_column_that_failed(spark, tmp_path):
    conf = conf_with(
        tmp_path,
        {
            "silver.orders": [
                {"expectation": "expect_column_values_to_be_between", "for_each_column": ["amount", "coupon_amount"], "min_value": 0}
            ]
        },
    )
    report = run_gate(spark, "silver.orders", frame(spark, "silver.orders", {}, {"order_id": "o2", "coupon_amount": -2.0}), DT, conf)
    assert [(r.column, r.success) for r in report.results] == [("amount", True), ("coupon_amount", False)]
    assert "silver.orders: expect_column_values_to_be_between(coupon_amount) observed 1 unexpected (50%) of 2 rows, e.g. -2.0" in (
        failure_message([report])
    )


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"expectation": "expect_column_values_to_not_be_null", "column": "amount", "for_each_column": ["amount"]},
            r"silver.orders\[1\] \(expect_column_values_to_not_be_null\): give either `column:` or `for_each_column:`",
        ),
        (
            {"expectation": "expect_column_values_to_not_be_null", "for_each_column": []},
            r"silver.orders\[1\] .*`for_each_column:` must be a non-empty list of column names",
        ),
        (
            {"expectation": "expect_column_values_to_not_be_null", "for_each_column": ["amount", "amount"]},
            r"`for_each_column:` lists amount twice",
        ),
        (
            {"expectation": "expect_column_values_to_not_be_null", "for_each_column": {"matching": "spend_*"}},
            r"silver.orders\[1\] .*selects no column of silver.orders \(columns: order_id, user_id",
        ),
        (
            {"expectation": "expect_column_values_to_not_be_null", "for_each_column": {"type": "double", "except": ["ts"]}},
            r"except: ts is not among the selected columns \(amount, coupon_amount\)",
        ),
        (
            {"expectation": "expect_column_values_to_not_be_null", "for_each_column": {"like": "a*"}},
            r"is a list of columns or a mapping of matching / type / except",
        ),
        (
            {"expectation": "row_condition", "for_each_column": ["amount"], "name": "positive", "condition": "{column} > 0"},
            r"silver.orders\[1\] \(row_condition\): a for_each_column row_condition needs \{column\} in its `name:`",
        ),
        (
            {"expectation": "expect_column_values_to_not_be_null", "for_each_column": ["amount"], "name": "set"},
            r"with for_each_column, a `name:` must contain \{column\}",
        ),
        (
            {"expectation": "row_condition", "name": "positive", "columns": ["amount"], "condition": "{column} > 0"},
            r"unknown placeholder \{column\}",  # only for_each_column entries have a column to fill in
        ),
    ],
)
def test_bad_for_each_column_entries_are_conf_errors(tmp_path, entry, message):
    conf = conf_with(tmp_path, {"silver.orders": [entry]})
    with pytest.raises(ConfError, match=message):
        gates.table_checks(conf, "silver.orders", DT)


def test_repeated_columns_across_for_each_column_entries_are_refused(tmp_path):
    between = {"expectation": "expect_column_values_to_be_between", "min_value": 0}
    conf = conf_with(
        tmp_path, {"silver.orders": [{**between, "column": "amount"}, {**between, "for_each_column": ["coupon_amount", "amount"]}]}
    )
    with pytest.raises(ConfError, match=r"silver.orders\[2\] \(expect_column_values_to_be_between amount\): repeats entry 1"):
        gates.table_checks(conf, "silver.orders", DT)


# --------------------------------------------------------------------------- values_of


def test_values_of_reads_the_tag_dictionary_and_the_landing_contract(tmp_path):
    tags = yaml.safe_load((REPO_ROOT / "conf" / "tags.yaml").read_text())["tags"]
    landing = yaml.safe_load((REPO_ROOT / "conf" / "landing.yaml").read_text())["sources"]
    assert gates.resolve_values(CONF, "vip_tier") == list(tags["vip_tier"]["values"]) == ["regular", "vip", "super_vip"]
    assert gates.resolve_values(CONF, "landing.orders.status") == landing["orders"]["fields"]["status"]["values"]
    conf = conf_with(
        tmp_path,
        {
            "silver.orders": [
                {"expectation": "expect_column_values_to_be_in_set", "column": "status", "values_of": "landing.orders.status"},
                {
                    "expectation": "row_condition",
                    "name": "line_known",
                    "columns": ["product_line"],
                    "condition": "product_line IN {values_of:landing.orders.product_line}",
                },
            ]
        },
    )
    in_set, row = gates.table_checks(conf, "silver.orders", DT)
    assert in_set.kwargs == {"column": "status", "value_set": ["paid", "delivered", "cancelled", "refunded"]}
    assert "product_line IN ('salad', 'content', 'video')" in row.kwargs["unexpected_rows_query"]


def test_values_of_a_changed_tag_follows_the_dictionary(tmp_path):
    conf_dir = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", conf_dir)
    tags = yaml.safe_load((conf_dir / "tags.yaml").read_text())
    tags["tags"]["vip_tier"]["values"]["diamond"] = "a new tier"
    (conf_dir / "tags.yaml").write_text(yaml.safe_dump(tags, allow_unicode=True, sort_keys=False))
    checks = gates.table_checks(Conf(conf_dir), "profile.consumption", DT)
    (vip,) = [c for c in checks if c.label == "vip_tier" and c.expectation == "expect_column_values_to_be_in_set"]
    assert vip.kwargs["value_set"] == ["regular", "vip", "super_vip", "diamond"]


@pytest.mark.parametrize(
    "reference, message",
    [
        (
            "vip_teir",
            r"silver.orders\[1\] \(expect_column_values_to_be_in_set\): values_of 'vip_teir': conf/tags.yaml .* has no tag 'vip_teir'; did you mean vip_tier\?",
        ),
        ("spend_30d", r"values_of 'spend_30d': tag spend_30d in conf/tags.yaml declares no `values:`|has no tag 'spend_30d'"),
        ("orders_total", r"values_of 'orders_total': tag orders_total in conf/tags.yaml declares no `values:`"),
        ("landing.order.status", r"values_of 'landing.order.status': conf/landing.yaml has no source 'order'; did you mean orders"),
        ("landing.orders.state", r"conf/landing.yaml source orders has no field 'state'; did you mean status"),
        ("landing.orders.amount", r"values_of 'landing.orders.amount': conf/landing.yaml orders.amount declares no `values:`"),
        ("landing.orders", r"a landing reference is landing.SOURCE.FIELD"),
    ],
)
def test_an_unknown_value_set_is_a_conf_error_with_the_closest_names(tmp_path, reference, message):
    conf = conf_with(
        tmp_path, {"silver.orders": [{"expectation": "expect_column_values_to_be_in_set", "column": "status", "values_of": reference}]}
    )
    with pytest.raises(ConfError, match=message):
        gates.table_checks(conf, "silver.orders", DT)


def test_values_of_and_value_set_together_are_refused(tmp_path):
    entry = {
        "expectation": "expect_column_values_to_be_in_set",
        "column": "status",
        "values_of": "landing.orders.status",
        "value_set": ["paid"],
    }
    conf = conf_with(tmp_path, {"silver.orders": [entry]})
    with pytest.raises(
        ConfError, match=r"silver.orders\[1\] \(expect_column_values_to_be_in_set\): give either `values_of:` or `value_set:`"
    ):
        gates.table_checks(conf, "silver.orders", DT)


def test_no_gate_copies_a_declared_value_set():
    """A value_set written out in conf/gates must not be one that conf/tags.yaml or conf/landing.yaml declares: use values_of."""
    tags = yaml.safe_load((REPO_ROOT / "conf" / "tags.yaml").read_text())["tags"]
    landing = yaml.safe_load((REPO_ROOT / "conf" / "landing.yaml").read_text())["sources"]
    declared = {frozenset(map(str, spec["values"])): f"values_of: {name}" for name, spec in tags.items() if spec.get("values")}
    for source, spec in landing.items():
        for field_name, field_spec in spec["fields"].items():
            if field_spec.get("values"):
                declared[frozenset(map(str, field_spec["values"]))] = f"values_of: landing.{source}.{field_name}"
    copies = []
    for path in sorted((REPO_ROOT / "conf" / "gates").glob("*.yaml")):
        for table, entries in yaml.safe_load(path.read_text()).items():
            for index, entry in enumerate(entries, 1):
                written = entry.get("value_set")
                if isinstance(written, list) and frozenset(map(str, written)) in declared:
                    copies.append(f"{path.name} {table}[{index}]: use {declared[frozenset(map(str, written))]}")
    assert copies == []


# --------------------------------------------------------------------------- module split


def test_only_the_gx_adapter_imports_great_expectations():
    import ast

    importers = []
    for path in sorted((REPO_ROOT / "lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] == "great_expectations" for name in names):
                importers.append(str(path.relative_to(REPO_ROOT)))
    assert sorted(set(importers)) == ["lib/portrait/gates/gx.py"]


def test_importing_the_declarations_and_reports_does_not_load_great_expectations():
    import subprocess
    import sys

    code = (
        "import sys; import portrait.gates.declarations, portrait.gates.reports, portrait.gates; "
        "from portrait.gates import GateFailed, run_gate, record, check, preload, render_data_docs, data_docs_dir; "
        "assert 'great_expectations' not in sys.modules, 'great_expectations imported'; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
