"""A hand-written dirty landing zone over two days, one record per rule.

Every line says why it is there; tests/test_clean.py states what must come of it.
Day 1 is 2026-07-01, day 2 is 2026-07-02 (Asia/Shanghai landing dates).
"""

from __future__ import annotations

import json
from pathlib import Path

DAY1, DAY2 = "2026-07-01", "2026-07-02"


def _write(lake: Path, source: str, dt: str, lines: list, part: int = 0) -> None:
    folder = lake / "landing" / source / f"dt={dt}"
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n" for line in lines)
    (folder / f"part-{part:05d}.jsonl").write_text(text, encoding="utf-8")  # no lines: an empty file, "nothing today"


def user(user_id, name, **extra):
    return {
        "user_id": user_id,
        "name": name,
        "gender": "M",
        "birth_year": 1990,
        "registered_at": "2026-06-01T09:00:00+08:00",
        "channel": "app_store",
        "city": "北京",
        "phone": "13800138000",
        **extra,
    }


def order(order_id, user_id, ts, amount=45.0, **extra):
    items = [{"sku": "salad-fruit-1", "category": "fruit", "qty": 1, "price": amount}]
    return {
        "order_id": order_id,
        "user_id": user_id,
        "ts": ts,
        "amount": amount,
        "coupon_amount": 0.0,
        "items": items,
        "address_id": "a1",
        "product_line": "salad",
        "status": "paid",
        **extra,
    }


def event(event_id, user_id, device_id, event_type, ts, **props):
    return {
        "event_id": event_id,
        "user_id": user_id,
        "device_id": device_id,
        "event_type": event_type,
        "ts": ts,
        "product_line": "salad",
        "props": props,
    }


def write_day1(lake: Path, bot_events: int = 6) -> None:
    write_day1_consent(lake)
    _write(
        lake,
        "users",
        DAY1,
        [
            user("u1", "张伟"),  # accepted
            user("u2", "王芳", gender=None),  # accepted, no self-reported gender
            user("t1", "测试用户01", channel="internal_test"),  # test_account
            '{"user_id": "u3", "name": "李',  # malformed_json (truncated)
            {k: v for k, v in user("u4", "赵敏").items() if k != "name"},  # missing_field: name
            user("u5", "钱多", birth_year="nineteen ninety"),  # wrong_type: birth_year
            user("u2", "王芳", gender="F"),  # a later version of u2 the same day: wins, earlier counted duplicate
        ],
    )
    _write(
        lake,
        "addresses",
        DAY1,
        [
            {
                "address_id": "a1",
                "user_id": "u1",
                "text": "北京市海淀区中关村大街27号 张伟 13812345678",
                "lat": 39.98345,
                "lon": 116.31678,
                "poi_type": "office",
                "city": "北京",
            },
            {
                "address_id": "a9",
                "user_id": "t1",
                "text": "北京市朝阳区测试路1号",
                "lat": 39.9,
                "lon": 116.4,
                "poi_type": "residential",
            },  # test_account
            {
                "address_id": "a2",
                "user_id": "u2",
                "text": "上海市徐汇区漕溪北路88号",
                "lat": 31.19,
                "lon": 121.43,
                "poi_type": "castle",
            },  # unknown_value
        ],
    )
    _write(
        lake,
        "orders",
        DAY1,
        [
            order("o1", "u1", 1782874800000),  # epoch ms: 2026-07-01T03:00:00Z, accepted
            order("o2", "u1", "2026-07-01T12:00:00+08:00", amount=-5.0),  # out_of_range
            order("o3", "t1", "2026-07-01T12:00:00+08:00"),  # test_account
            {
                **order("o4", "u2", "2026-07-01T12:30:00+08:00"),
                "items": [{"sku": "x", "category": "fruit", "qty": 1}],
            },  # wrong_type: item without price
            order("o5", "u2", "2026-07-05T12:00:00+08:00"),  # future_timestamp
            order("o1", "u1", 1782874800000),  # duplicate of o1 the same day
            order("o6", "u2", "2026-07-01 12:00:00"),  # wrong_type: ts without offset
        ],
    )
    _write(
        lake,
        "events",
        DAY1,
        [
            event("e1", "u1", "d1", "app_open", "2026-07-01T08:00:00+08:00"),
            event(
                "e2", None, "d2", "view", "2026-07-01T10:00:00+08:00", sku="salad-fruit-1", category="fruit"
            ),  # anonymous; d2 logs in at 11:00 -> u2
            event("e3", "u2", "d2", "login", "2026-07-01T11:00:00+08:00"),
            event("e4", "u1", "d1", "hover", "2026-07-01T11:30:00+08:00"),  # unknown_value
            event("e5", None, "d3", "view", "2026-07-01T23:00:00+08:00", category="seafood"),  # anonymous; d3 logs in only on day 2
            event("e6", "t1", "d9", "app_open", "2026-07-01T09:00:00+08:00"),  # test_account
            event("e7", "u1", "d1", "review", "2026-07-01T13:00:00+08:00", order_id="o1", rating=2),
            event("e1", "u1", "d1", "app_open", "2026-07-01T08:00:00+08:00"),  # duplicate of e1 the same day
            {
                "event_id": "e8",
                "user_id": "u1",
                "event_type": "click",
                "ts": "2026-07-01T09:00:00+08:00",
                "product_line": "salad",
            },  # missing_field: device_id
            event(123, "u1", "d1", "click", "2026-07-01T09:00:00+08:00"),  # wrong_type: event_id is a number
            "not json at all",  # malformed_json
            *[
                event(f"bot{n}", None, "dbot", "view", "2026-07-01T03:00:00+08:00") for n in range(bot_events)
            ],  # bot_device (limit 5 in the test conf)
        ],
    )


def consent(consent_id, user_id, channel, status, ts):
    return {"consent_id": consent_id, "user_id": user_id, "channel": channel, "status": status, "ts": ts}


def write_day1_consent(lake: Path) -> None:
    _write(
        lake,
        "consent",
        DAY1,
        [
            consent("c1", "u1", "push", "granted", "2026-07-01T08:00:00+08:00"),  # accepted
            consent("c2", "u1", "email", "granted", "2026-07-01T08:00:00+08:00"),  # accepted, withdrawn on day 2
            consent("c3", "u2", "push", "granted", "2026-07-01T08:00:00+08:00"),  # accepted: u2 grants push...
            consent("c4", "u2", "push", "withdrawn", "2026-07-01T10:00:00+08:00"),  # ... then withdraws it: the later holds
            consent("c5", "u1", "fax", "granted", "2026-07-01T08:00:00+08:00"),  # unknown_value: fax is no channel
            consent("c6", "t1", "push", "granted", "2026-07-01T08:00:00+08:00"),  # test_account
        ],
    )


def write_day2(lake: Path) -> None:
    _write(lake, "users", DAY2, [user("u1", "张伟", city="上海")])  # u1 moved: a new version
    _write(lake, "consent", DAY2, [consent("c7", "u1", "email", "withdrawn", "2026-07-02T09:00:00+08:00")])  # a withdrawal landing later
    _write(lake, "addresses", DAY2, [])  # delivered, empty: no address changed
    _write(
        lake,
        "orders",
        DAY2,
        [
            order("o1", "u1", 1782874800000),  # re-sent a day later: still a duplicate
            order("o7", "u2", "2026-06-30T20:00:00+08:00"),  # late: business date 2026-06-30
        ],
    )
    _write(
        lake,
        "events",
        DAY2,
        [
            event("e1", "u1", "d1", "app_open", "2026-07-01T08:00:00+08:00"),  # cross-day duplicate
            event("e9", "u1", "d3", "login", "2026-07-02T01:00:00+08:00"),  # d3 logs in: e5 (day 1) belongs to u1
            event("e10", "u1", "d1", "app_open", 1782835200000),  # 2026-06-30T16:00Z = 2026-07-01 00:00 Shanghai: late, business date day 1
            event("e11", "t1", "d9", "app_open", "2026-07-02T09:00:00+08:00"),  # test account known from day 1's quarantine
        ],
    )
