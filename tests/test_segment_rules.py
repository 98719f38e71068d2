"""Segment rules: what operators may write, and the errors for what they may not."""
from __future__ import annotations

import pytest

from portrait.lib.segments import SegmentRuleError, compile_rule, load_segments

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
        ("lifecycle_stage == \"it's\"", "(`lifecycle_stage` = 'it\\'s')"),
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
