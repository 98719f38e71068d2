"""Behavior tags on hand-made events; expected values worked out in the comments.

Snapshot D = 2026-07-31. Windows (conf/tags.yaml, both ends inclusive):
7d = D-6..D, 30d = D-29..D, slices 30_20d = D-29..D-20, 20_10d = D-19..D-10, 10d = D-9..D;
activity is looked for in 180d. Activity tag: active <= 7 days, silent <= 30, lost otherwise.
"""

from __future__ import annotations

import pytest

from fact_rows import D, ago, by_user, check_declared_schema, local_ts, tag_dictionary, users
from portrait.subprofiles.behavior import behavior

EVENTS = "user_id string, dt date, ts timestamp, event_type string, rating int, wait_minutes double"
TZ = "Asia/Shanghai"


def event(user, day, event_type="app_open", hour=12, rating=None, wait=None, minute=0):
    return (user, day, local_ts(day, hour, minute), event_type, rating, wait)


@pytest.fixture(scope="module")
def result(spark):
    events = [
        # "busy": activity on D, D-1, D-2, D-3, D-6, D-7, D-29, D-30
        event("busy", D),
        event("busy", ago(6)),  # last day of 7d
        event("busy", ago(7), "login"),  # first day outside 7d
        event("busy", ago(29)),  # first day of 30d and of the 30_20d slice
        event("busy", ago(30)),  # outside 30d, inside the activity lookback
        event("busy", ago(1), "review", rating=2),  # bad review (rating <= 2)
        event("busy", ago(1), "review", rating=3, minute=5),
        event("busy", ago(30), "review", rating=1, minute=5),  # outside 30d
        event("busy", ago(3), "refund"),
        event("busy", ago(2), "delivery", wait=20.0),
        event("busy", ago(3), "delivery", wait=40.0, minute=5),
        event("busy", ago(31), "delivery", wait=100.0),  # outside 30d
        # activity-tag edges
        event("active_edge", ago(7)),
        event("silent", ago(8)),
        event("silent_edge", ago(30)),
        event("lost", ago(31)),
        event("lost", ago(-1)),  # D+1 must not make it active
        # preferred hours (Shanghai time): 9h x2, 12h x2, 0h x1 (UTC 16h the day before), 20h x1, 23h x5 outside 30d
        *[event("hours", D, hour=9, minute=m) for m in (0, 1)],
        *[event("hours", ago(1), hour=12, minute=m) for m in (0, 1)],
        event("hours", D, hour=0, minute=30),
        event("hours", ago(2), hour=20),
        *[event("hours", ago(40), hour=23, minute=m) for m in range(5)],
        # anonymous events are not anyone's
        event(None, D),
    ]
    everyone = users(spark, "busy", "idle", "active_edge", "silent", "silent_edge", "lost", "hours")
    df = behavior(everyone, spark.createDataFrame(events, EVENTS), D, tag_dictionary(), TZ)
    check_declared_schema(df, "profile.behavior")
    return by_user(df)


def test_user_without_events_gets_zeros(result):
    row = result["idle"]
    assert (row["active_days_30d"], row["app_opens_30d"], row["logins_30d"], row["reviews_30d"], row["refunds_30d"]) == (0, 0, 0, 0, 0)
    assert row["last_active_dt"] is None and row["days_since_last_active"] is None
    assert (row["activity_tag"], row["preferred_hours"], row["avg_wait_minutes_30d"]) == ("lost", [], None)
    assert set(result) == {"busy", "idle", "active_edge", "silent", "silent_edge", "lost", "hours"}


def test_active_days_and_counts_per_window(result):
    row = result["busy"]
    # active days: 7d = {D, D-1, D-2, D-3, D-6} = 5; 30d adds D-7 and D-29 = 7;
    # slices: 30_20d {D-29} = 1, 20_10d none, 10d {D, D-1, D-2, D-3, D-6, D-7} = 6
    assert [row[f"active_days_{w}"] for w in ("7d", "30d", "30_20d", "20_10d", "10d")] == [5, 7, 1, 0, 6]
    # app opens on D, D-6, D-29 (D-30 outside): 7d 2, 30d 3, 30_20d 1, 10d 2
    assert [row[f"app_opens_{w}"] for w in ("7d", "30d", "30_20d", "20_10d", "10d")] == [2, 3, 1, 0, 2]
    # one login on D-7: not in 7d, in 30d and in the last-10-days slice
    assert [row[f"logins_{w}"] for w in ("7d", "30d", "30_20d", "20_10d", "10d")] == [0, 1, 0, 0, 1]
    assert (row["reviews_30d"], row["bad_reviews_30d"], row["refunds_30d"]) == (2, 1, 1)
    assert row["avg_wait_minutes_30d"] == 30.0  # (20 + 40) / 2; the 100 minutes of D-31 is outside
    assert (row["last_active_dt"], row["days_since_last_active"], row["activity_tag"]) == (D, 0, "active")


def test_activity_tag_thresholds_are_inclusive(result):
    assert (result["active_edge"]["days_since_last_active"], result["active_edge"]["activity_tag"]) == (7, "active")
    assert (result["silent"]["days_since_last_active"], result["silent"]["activity_tag"]) == (8, "silent")
    assert (result["silent_edge"]["days_since_last_active"], result["silent_edge"]["activity_tag"]) == (30, "silent")
    assert (result["lost"]["days_since_last_active"], result["lost"]["activity_tag"]) == (31, "lost")


def test_preferred_hours_in_business_time_zone(result):
    # 9h and 12h twice each (ties -> earlier first), then 0h and 20h once (tie -> 0h); 23h is outside 30d
    assert result["hours"]["preferred_hours"] == [9, 12, 0]
