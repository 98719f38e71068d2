"""No landing line or file can stop a date or vanish; a wrong lake or a missing feed fails.

Issue 17, defects 2, 5, 6 and 8: one byte that is not UTF-8 stopped the whole
date for every source (naming no file); a BOM lost the file's first record;
whitespace-only lines vanished uncounted; duplicate keys and 2,000-deep nesting
were quarantined as "line is not a JSON object"; `part-1.jsonl.gz`,
`part-9.csv` and `part-10.json` were not read, not counted and not mentioned;
`portrait run --lake /nonexistent` created a lake and returned 0, and a date
with a missing feed ran green. Issue 21 item 5: a date with no landing data
must fail the clean gate.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from datetime import date
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dirty_landing as landing
from portrait.clean.contract import diagnose_json
from portrait.clean.landing import LakeNotFound, require_landing_zone
from portrait.cli import main
from portrait.core.config import Conf
from portrait.core.pipeline import RunContext, run_stage
from portrait.core.validate import problems
from portrait.gates.reports import GateFailed
from test_clean import make_conf

DAY, DAY2 = date(2026, 7, 1), date(2026, 7, 2)
MAX_LINE = 8192  # clean.max_line_bytes of these tests: a "huge" line stays small on disk


def _line(record) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def _event(event_id: str, n: int) -> dict:
    return landing.event(event_id, "u1", f"dev{n}", "app_open", "2026-07-01T08:00:00+08:00")


def _put(lake: Path, source: str, dt, name: str, data: bytes) -> None:
    folder = lake / "landing" / source / f"dt={dt}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _the_other_sources(lake: Path, dt) -> None:
    landing._write(lake, "users", str(dt), [landing.user("u1", "王小明")])
    landing._write(lake, "addresses", str(dt), [])
    landing._write(lake, "orders", str(dt), [landing.order(f"o-{dt}", "u1", f"{dt}T12:00:00+08:00")])
    landing._write(lake, "consent", str(dt), [])  # delivered, empty: no consent changed


#: events lines of day 1, by line number: (bytes, rule it must get; None: accepted)
EVENT_LINES = [
    (_line(_event("e1", 1)), None),
    (_line(_event("e_bad", 2)).replace(b"e_bad", b"e_bad\xff"), "invalid_utf8"),
    (b"   \t ", "blank_line"),
    (_line({**_event("e_huge", 4), "props": {"query": "x" * (MAX_LINE + 10)}}), "line_too_long"),
    (b'{"event_id": "e_deep", "props": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nesting_too_deep"),
    (_line(_event("e_nan", 6))[:-1] + b', "score": NaN}', "non_finite_number"),
    (_line(_event("e_inf", 7))[:-1] + b', "score": -Infinity}', "non_finite_number"),
    (_line(_event("e_big", 8))[:-1] + b', "score": 1e400}', "non_finite_number"),
    (b'{"event_id": "e_dup", ' + _line(_event("e_dup", 9))[1:], "duplicate_key"),
    (b'["e10", "u1"]', "not_an_object"),
    (b'{"event_id": "e_cut", "user_id": ', "malformed_json"),
    (_line(_event("e12", 12)), None),
]


@pytest.fixture(scope="module")
def hostile(spark, tmp_path_factory):
    """Day 1 of a lake whose landing folders hold every hostile class at once, cleaned in one run."""
    lake = tmp_path_factory.mktemp("hostile_files") / "lake"
    conf = make_conf(tmp_path_factory.mktemp("conf"), max_line_bytes=MAX_LINE)
    bom_crlf = b"\xef\xbb\xbf" + _line(landing.user("u1", "王小明")) + b"\r\n" + _line(landing.user("u2", "李丽")) + b"\r\n"
    _put(lake, "users", DAY, "part-00000.jsonl", bom_crlf)
    landing._write(
        lake, "addresses", str(DAY), [{"address_id": "a1", "user_id": "u1", "text": "x", "lat": 39.9, "lon": 116.4, "poi_type": "office"}]
    )
    landing._write(lake, "orders", str(DAY), [landing.order("o1", "u1", "2026-07-01T12:00:00+08:00")])
    _put(lake, "orders", DAY, "part-1.jsonl.gz", gzip.compress(_line(landing.order("o_gz", "u1", "2026-07-01T12:30:00+08:00")) + b"\n"))
    _put(lake, "orders", DAY, "part-2.jsonl.gz", b"this is not gzip")
    _put(lake, "orders", DAY, "part-9.csv", b"order_id,amount\no9,1\n")
    _put(lake, "orders", DAY, "part-10.json", b'{"order_id": "o10"}\n')
    _put(lake, "events", DAY, "part-00000.jsonl", b"\n".join(line for line, _ in EVENT_LINES) + b"\n")
    landing._write(lake, "consent", str(DAY), [])  # delivered, empty
    ctx = RunContext(spark, str(lake), DAY, conf)
    result = run_stage(ctx, "clean")
    return lake, conf, ctx.catalog, result


def _quarantine(spark, catalog, dt=DAY) -> dict:
    rows = catalog.read(spark, "quarantine.records").where(f"dt = DATE'{dt}'").collect()
    return {(r.source, Path(r.source_file).name, r.line_no): (r.rule, r.detail, r.raw_line) for r in rows}


def test_each_hostile_line_gets_a_precise_rule(spark, hostile):
    _, _, catalog, _ = hostile
    quarantine = _quarantine(spark, catalog)
    got = {line_no: rule for (source, _, line_no), (rule, _, _) in quarantine.items() if source == "events"}
    assert got == {n: rule for n, (_, rule) in enumerate(EVENT_LINES, 1) if rule}
    detail = {line_no: d for (source, _, line_no), (_, d, _) in quarantine.items() if source == "events"}
    assert detail[2] == "byte 0xff at byte 20 of the line is not UTF-8"
    assert detail[3] == "line is blank (whitespace only)"
    assert detail[4].startswith("line of ") and detail[4].endswith(f"bytes is longer than max_line_bytes {MAX_LINE}")
    assert detail[5].startswith("objects/arrays nested 2001 levels deep")
    assert detail[6] == "NaN is not a finite JSON number"
    assert detail[7] == "-Infinity is not a finite JSON number"
    assert detail[8] == "the number 1e400 is not a finite JSON number"
    assert detail[9] == "key 'event_id' appears more than once in one object"
    assert detail[10] == "line is JSON ARRAY, not an object"
    assert detail[11].startswith("not JSON: Expecting value at character")
    raw = {line_no: r for (source, _, line_no), (_, _, r) in quarantine.items() if source == "events"}
    assert "e_bad\\xff" in raw[2]  # the bad byte kept, escaped
    assert len(raw[4]) == 1000  # a huge line is kept cut short


def test_bom_and_crlf_lose_nothing(spark, hostile):
    _, _, catalog, _ = hostile
    users = {r.user_id for r in catalog.read(spark, "silver.users_history").where(f"dt = DATE'{DAY}'").collect()}
    assert users == {"u1", "u2"}
    assert not [k for k in _quarantine(spark, catalog) if k[0] == "users"]


def test_gz_files_are_read_and_other_files_are_counted_and_reported(spark, hostile):
    _, _, catalog, result = hostile
    orders = {r.order_id for r in catalog.read(spark, "silver.orders").collect()}
    assert orders == {"o1", "o_gz"}
    quarantine = _quarantine(spark, catalog)
    files = {name: (rule, detail) for (source, name, line_no), (rule, detail, _) in quarantine.items() if source == "orders"}
    assert files["part-2.jsonl.gz"][0] == "unreadable_file"
    assert files["part-2.jsonl.gz"][1].startswith("orders landing file part-2.jsonl.gz (16 bytes) cannot be read: ")
    assert files["part-9.csv"] == (
        "unexpected_file",
        "orders landing file part-9.csv (21 bytes) is not a .jsonl or .jsonl.gz file: not read",
    )
    assert files["part-10.json"][0] == "unexpected_file"
    problems_reported = " ".join(result.notes["landing_problems"])
    for name in ("part-2.jsonl.gz", "part-9.csv", "part-10.json"):
        assert name in problems_reported


def test_reconciliation_counts_every_line_and_file(spark, hostile):
    _, _, catalog, result = hostile
    recon = {r["source"]: r for r in result.notes["reconciliation"]}
    assert all(r["balanced"] for r in recon.values()), recon
    assert (recon["events"]["input_records"], recon["events"]["accepted"]) == (len(EVENT_LINES), 2)
    assert recon["events"]["quarantined"] == len(EVENT_LINES) - 2
    assert recon["events"]["policy_filtered"] == 1  # the blank line carries no record: not broken input
    assert (recon["orders"]["files"], recon["orders"]["input_records"], recon["orders"]["accepted"]) == (5, 5, 2)
    stored = {r.source: r.files for r in catalog.read(spark, "ops.reconciliation").where(f"dt = DATE'{DAY}'").collect()}
    assert stored == {"users": 1, "addresses": 1, "orders": 5, "events": 1, "consent": 1}


def test_a_missing_feed_fails_the_clean_gate_unless_declared(spark, hostile, tmp_path):
    lake, conf, catalog, _ = hostile
    for source, lines in (("users", [landing.user("u1", "王小明")]), ("orders", []), ("consent", [])):
        landing._write(lake, source, str(DAY2), lines)
    landing._write(lake, "events", str(DAY2), [_event("e2_1", 1) | {"ts": "2026-07-02T08:00:00+08:00"}])
    before = catalog.version("silver.events")
    with pytest.raises(GateFailed) as failed:
        run_stage(RunContext(spark, str(lake), DAY2, conf), "clean")
    assert "row_condition(source_delivered)" in str(failed.value) and "source=addresses, files=0" in str(failed.value)
    assert catalog.version("silver.events") == before  # nothing published
    declared = yaml.safe_load((conf.dir / "landing.yaml").read_text(encoding="utf-8"))
    declared["empty_dates"] = [{"date": str(DAY2), "sources": ["addresses"], "reason": "address service down"}]
    conf_dir = tmp_path / "conf"
    shutil.copytree(conf.dir, conf_dir)
    (conf_dir / "landing.yaml").write_text(yaml.safe_dump(declared, allow_unicode=True), encoding="utf-8")
    result = run_stage(RunContext(spark, str(lake), DAY2, Conf(conf_dir)), "clean")
    assert {r["source"]: r["files"] for r in result.notes["reconciliation"]}["addresses"] == 0


def test_a_wrong_lake_is_refused_and_never_created(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert main(["run", "--date", str(DAY), "--to", "clean", "--lake", str(missing)]) == 2
    assert "holds no landing zone" in capsys.readouterr().err
    assert not missing.exists()
    with pytest.raises(LakeNotFound):
        require_landing_zone(str(missing))
    require_landing_zone(str(missing), create=True)  # `portrait run --create`
    assert (missing / "landing").is_dir()


def test_empty_dates_name_declared_sources(tmp_path):
    conf_dir = tmp_path / "conf"
    shutil.copytree(Path(__file__).resolve().parents[1] / "conf", conf_dir)
    declared = yaml.safe_load((conf_dir / "landing.yaml").read_text(encoding="utf-8"))
    declared["empty_dates"] = [{"date": "2026-10-01", "sources": ["oders"], "reason": "holiday"}]
    (conf_dir / "landing.yaml").write_text(yaml.safe_dump(declared, allow_unicode=True), encoding="utf-8")
    found = problems(Conf(conf_dir))
    assert any("empty_dates[0].sources: unknown source 'oders'" in p and "orders" in p for p in found), found


def test_diagnosis_names_the_reason_of_each_unparsable_line():
    assert diagnose_json('{"a": 1, "a": 2}').split("\t")[0] == "duplicate_key"
    assert diagnose_json('{"a": NaN}') == "non_finite_number\tNaN is not a finite JSON number"
    assert diagnose_json("[" * 3000 + "]" * 3000).startswith("nesting_too_deep\tobjects/arrays nested 3000 levels")
    assert diagnose_json('{"a": "[[[["}').split("\t")[0] == "malformed_json"  # brackets in strings are not nesting
    assert diagnose_json('{"a": ').startswith("malformed_json\tnot JSON: Expecting value")


# --------------------------------------------------------------------------- property-based

GOOD, HOSTILE = (
    "good",
    [
        ("invalid_utf8", lambda n: _line(_event(f"x{n}", n)).replace(b'"x', b'"\xfe\xffx', 1)),
        ("blank_line", lambda n: b" " * (n % 4)),
        ("line_too_long", lambda n: _line({**_event(f"x{n}", n), "props": {"query": "y" * MAX_LINE}})),
        ("nesting_too_deep", lambda n: b'{"event_id": "d' + str(n).encode() + b'", "p": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
        ("non_finite_number", lambda n: _line(_event(f"x{n}", n))[:-1] + b', "v": Infinity}'),
        ("duplicate_key", lambda n: b'{"event_id": "dup", ' + _line(_event(f"x{n}", n))[1:]),
        ("not_an_object", lambda n: b'"a string"'),
        ("malformed_json", lambda n: _line(_event(f"x{n}", n))[:25]),
    ],
)
line_kinds = st.lists(st.sampled_from([GOOD, GOOD, GOOD, *[name for name, _ in HOSTILE]]), min_size=1, max_size=40)
files = st.lists(
    st.tuples(line_kinds, st.booleans(), st.booleans(), st.booleans()),  # lines, gzip, BOM, CRLF
    min_size=1,
    max_size=3,
)
extras = st.lists(st.sampled_from(["part-7.csv", "part-8.json", "broken.jsonl.gz", "README"]), unique=True, max_size=2)


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=files, extras=extras)
def test_generated_hostile_landing_reconciles_exactly(spark, tmp_path_factory, files, extras):
    lake = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "lake"
    conf = make_conf(tmp_path_factory.mktemp("conf"), max_line_bytes=MAX_LINE)
    _the_other_sources(lake, DAY)
    build = dict(HOSTILE)
    expected = {"accepted": 0, "quarantined": 0, "input": 0}
    number = 0
    for index, (kinds, zipped, bom, crlf) in enumerate(files):
        lines = []
        for kind in kinds:
            number += 1
            lines.append(_line(_event(f"g{number}", number)) if kind == GOOD else build[kind](number))
            expected["accepted" if kind == GOOD else "quarantined"] += 1
        data = (b"\r\n" if crlf else b"\n").join(lines) + (b"\r\n" if crlf else b"\n")
        data = (b"\xef\xbb\xbf" if bom else b"") + data
        name = f"part-{index:05d}.jsonl" + (".gz" if zipped else "")
        _put(lake, "events", DAY, name, gzip.compress(data) if zipped else data)
        expected["input"] += len(kinds)
    for name in extras:
        _put(lake, "events", DAY, name, b"\x00garbage")
    expected["input"] += len(extras)
    expected["quarantined"] += len(extras)
    result = run_stage(RunContext(spark, str(lake), DAY, conf), "clean")
    events = {r["source"]: r for r in result.notes["reconciliation"]}["events"]
    assert events["balanced"]
    assert events["files"] == len(files) + len(extras)
    assert (events["input_records"], events["accepted"], events["quarantined"], events["duplicates"]) == (
        expected["input"],
        expected["accepted"],
        expected["quarantined"],
        0,
    )
    shutil.rmtree(lake.parent, ignore_errors=True)
