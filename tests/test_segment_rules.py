"""Segment rules: what operators may write, and the errors for what they may not."""

from __future__ import annotations

from datetime import date

import pytest

from portrait.core.config import Conf
from portrait.segments.rules import SegmentBook, SegmentRuleError, UnknownSegment, compile_rule, load_book, load_segments

TAGS = {"vip", "churn_probability", "lifecycle_stage", "is_student", "days_since_last_order", "orders_30d"}
THRESHOLDS = {"retention": 0.6}


@pytest.mark.parametrize(
    "rule, sql",
    [
        ("vip and churn_probability >= threshold('retention')", "(`vip` AND (`churn_probability` >= 0.6))"),
        ("lifecycle_stage in ('new', 'old') and not is_student", "((`lifecycle_stage` IN ('new', 'old')) AND (NOT `is_student`))"),
        ("lifecycle_stage not in ['potential']", "(`lifecycle_stage` NOT IN ('potential'))"),
        ("days_since_last_order > 30 or orders_30d == 0", "((`days_since_last_order` > 30) OR (`orders_30d` = 0))"),
        ("0.2 < churn_probability <= 0.8", "(0.2 < `churn_probability` AND `churn_probability` <= 0.8)"),
        ("vip == True", "(`vip` = TRUE)"),
        ('lifecycle_stage == "it\'s"', "(`lifecycle_stage` = 'it\\'s')"),
    ],
)
def test_rules_render_to_spark_sql(rule, sql):
    assert compile_rule("s", rule, TAGS, THRESHOLDS) == sql


@pytest.mark.parametrize(
    "rule, message",
    [
        ("vip and churn_prob > 0.5", "segment s: unknown tag 'churn_prob' (did you mean 'churn_probability'?)"),
        ("vip and", "segment s: bad syntax"),
        ("__import__('os').system('x')", "segment s: only threshold('name') may be called"),
        ("vip and churn_probability > threshold('winback')", "segment s: unknown threshold 'winback' (declared: retention)"),
        ("vip.real", "segment s: attribute is not allowed"),
        ("lifecycle_stage in lifecycle_stage", "segment s: 'in' needs a list of values"),
        ("vip is True", "segment s: comparison Is is not allowed"),
    ],
)
def test_invalid_rules_are_refused_with_the_reason(rule, message):
    with pytest.raises(SegmentRuleError) as caught:
        compile_rule("s", rule, TAGS, THRESHOLDS)
    assert str(caught.value).startswith(message)


def test_load_segments_stops_at_the_first_bad_rule():
    declarations = {
        "thresholds": THRESHOLDS,
        "segments": {"ok": {"rule": "vip"}, "broken": {"rule": "vipp"}},
    }
    with pytest.raises(SegmentRuleError, match="segment broken: unknown tag 'vipp'"):
        load_segments(declarations, TAGS)
    assert [s.name for s in load_segments({"segments": {"ok": {"rule": "vip"}}}, TAGS)] == ["ok"]


# --------------------------------------------------------------------------- the whole file: SegmentBook
BOOK = {
    "thresholds": {"retention": {"value": 0.5, "chosen_by": "ops.threshold_curve"}, "student": 0.5},
    "computed_tags": {"office_peers_same_day": {"window_days": 30, "poi_type": "office"}},
    "bands": {"churn_band": {"tag": "churn_probability", "edges": [0.2, 0.5]}},
    "derived_tags": {"vip": "vip_tier in ('vip', 'super_vip')", "at_risk": "vip and churn_probability >= threshold('retention')"},
    "segments": {
        "vip_at_risk": {"rule": "at_risk", "description": "d"},
        "back_to_school": {"rule": "p_student >= threshold('student')", "season": {"from": "08-15", "to": "09-30"}},
        "winter": {"rule": "vip", "season": {"from": "12-01", "to": "02-28"}},
        "groups": {"rule": "office_peers_same_day >= 5 and churn_band == 'unknown'"},
    },
    "analysis": {"distribution_tags": ["vip_tier", "churn_band"], "transition_tags": ["vip"]},
}
SNAPSHOT_TAGS = {"vip_tier", "churn_probability", "p_student"}


def test_book_compiles_derived_tags_bands_and_chosen_thresholds():
    book = SegmentBook.compile(BOOK, SNAPSHOT_TAGS, chosen={"retention": 0.37})
    assert [t.name for t in book.derived] == ["vip", "at_risk"]
    assert book.derived[1].sql == "((`vip_tier` IN ('vip', 'super_vip')) AND (`churn_probability` >= 0.37))"
    assert book.segment("vip_at_risk").sql == book.derived[1].sql  # derived tags are inlined: the rule shows its thresholds
    assert book.threshold_sources == {"retention": "ops.threshold_curve", "student": "conf"}
    assert SegmentBook.compile(BOOK, SNAPSHOT_TAGS).thresholds["retention"] == 0.5
    assert book.bands[0].sql == (
        "CASE WHEN `churn_probability` IS NULL THEN 'unknown' WHEN `churn_probability` < 0.2 THEN '<0.2' "
        "WHEN `churn_probability` < 0.5 THEN '0.2-0.5' ELSE '>=0.5' END"
    )
    school, winter = book.segment("back_to_school"), book.segment("winter")
    assert school.sql_on(date(2026, 9, 1)) == "(`p_student` >= 0.5)" and school.sql_on(date(2026, 10, 1)) == "FALSE"
    assert winter.in_season(date(2026, 1, 10)) and winter.in_season(date(2026, 12, 1)) and not winter.in_season(date(2026, 3, 1))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"derived_tags": {"vip": "vip_teir == 'vip'"}}, "segment vip: unknown tag 'vip_teir' (did you mean 'vip_tier'?)"),
        ({"derived_tags": {"vip_tier": "true"}}, "derived tag vip_tier: already a tag of the snapshot"),
        ({"bands": {"b": {"tag": "churn", "edges": [0.5]}}}, "band b: unknown tag 'churn'"),
        ({"bands": {"b": {"tag": "churn_probability", "edges": [0.5, 0.2]}}}, "band b: edges must be increasing"),
        ({"thresholds": {"retention": "high"}}, "threshold retention: needs a number"),
        ({"segments": {"s": {"rule": "vip", "season": {"from": "13-01", "to": "09-30"}}}}, "segment s: season needs from/to as MM-DD"),
        ({"segments": {"all_users": {"rule": "vip"}}}, "segment all_users: the name is reserved"),
        ({"segments": {"s": "vip"}}, "segment s: needs `rule:` (a string), got 'vip'"),
        ({"analysis": {"distribution_tags": ["tier"]}}, "analysis distribution_tags: unknown tag 'tier'"),
        (
            {"segments": {"s": {"rule": "vip and p_student > threshold('teen')"}}},
            "segment s: unknown threshold 'teen' (declared: retention, student)",
        ),
    ],
)
def test_book_refuses_bad_declarations(change, message):
    with pytest.raises(SegmentRuleError) as caught:
        SegmentBook.compile({**BOOK, **change}, SNAPSHOT_TAGS)
    assert str(caught.value).startswith(message)


def test_unknown_segment_names_the_declared_ones():
    with pytest.raises(
        UnknownSegment,
        match=r"unknown segment 'vip_at_rsk' \(did you mean 'vip_at_risk'\?\); declared segments: vip_at_risk, back_to_school, winter, groups",
    ):
        SegmentBook.compile(BOOK, SNAPSHOT_TAGS).segment("vip_at_rsk")


def test_the_repository_segments_compile_against_the_master_profile():
    book = load_book(Conf())
    assert {"vip_at_risk", "new_user_no_repeat", "students_back_to_school", "potential_users", "group_order_candidates"} <= set(
        book.names()
    )
    assert all(segment.description and segment.reason for segment in book.segments)
