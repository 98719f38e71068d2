"""A generated silver history of a few hundred users over ~60 landing days, written straight to the silver tables.

For tests/test_daily_aggregates.py, which computes every sub-profile of every
date both from raw silver rows and from the daily aggregates. Written directly
(no landing files, no clean stage: cleaning 60 dates takes minutes) but with
what makes "as known on D" hard: rows landing 1-3 days late, rows of the day
after their landing day (the clean stage's future tolerance), anonymous
events attributed later by logins on the device (some landing late, some
beyond the stitching window, one device shared by two users), events already
stitched when cleaned, cancelled orders with line items, orders without an
address, items and events without a category, reviews, refunds and
deliveries with and without amounts, user records re-sent with changes and
addresses recorded after their first use. Seeded: the same history each run.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np

from fact_rows import local_ts

EVENT_TYPES = ["app_open", "login", "logout", "view", "click", "search", "add_cart", "order", "review", "refund", "delivery", "play"]
EVENT_WEIGHTS = [12, 4, 2, 20, 10, 6, 6, 3, 3, 1, 3, 8]
CATEGORIES = ["chicken", "beef", "seafood", "vegan", "fruit", "drama", "comedy", None]
LINES = ["salad", "content", "video"]
STATUSES = ["paid", "delivered", "cancelled", "refunded"]
CITIES = ["北京", "上海", "深圳", "成都"]
POI = ["residential", "office", "school", "other"]


def _end_of(day: date) -> datetime:
    return local_ts(day + timedelta(days=1), 0)


class _History:
    def __init__(self, users: int, days: int, end: date, seed: int):
        self.rng = np.random.default_rng(seed)
        self.end, self.first = end, end - timedelta(days=days - 1)
        self.days = days
        self.users = [f"u{n:04d}" for n in range(users)]
        self.rows = {t: [] for t in ("users_history", "orders", "order_items", "events", "device_map", "addresses")}
        self.logins: dict[tuple[str, str, date], list[datetime]] = {}

    def day(self, n: int) -> date:
        return self.first + timedelta(days=int(n))

    def landing(self, dt: date, ts: datetime) -> tuple[date, date]:
        """(dt, landing_dt): mostly the same day; some late, some of the day after landing (future tolerance)."""
        draw = self.rng.random()
        if draw < 0.06:
            return dt, min(dt + timedelta(days=int(self.rng.integers(1, 4))), self.end)
        if ts.hour == 16 and dt > self.first and draw < 0.5:  # 00:00-00:59 Shanghai: may land the evening before
            return dt, dt - timedelta(days=1)
        return dt, dt

    def moment(self, dt: date) -> datetime:
        hour = int(self.rng.choice(24, p=_hour_weights()))
        return local_ts(dt, hour, int(self.rng.integers(0, 60)))

    def build(self) -> dict[str, list[dict]]:
        rng = self.rng
        for u, user_id in enumerate(self.users):
            registered = self.day(rng.integers(-40, self.days - 5))
            landed = max(registered, self.first)
            record = dict(
                user_id=user_id,
                name="王国庆",
                gender=rng.choice(["M", "F", None]),
                birth_year=int(rng.integers(1960, 2008)) if rng.random() < 0.9 else None,
                registered_at=local_ts(registered, 9),
                channel="app_store",
                city=str(rng.choice(CITIES)),
                has_phone=True,
                updated_at=_end_of(landed),
                dt=landed,
            )
            self.rows["users_history"].append(record)
            if rng.random() < 0.15:  # re-sent later with another city
                later = landed + timedelta(days=int(rng.integers(1, 20)))
                if later <= self.end:
                    self.rows["users_history"].append(
                        {**record, "city": str(rng.choice(CITIES)), "updated_at": _end_of(later), "dt": later}
                    )
            addresses = [f"a{u:04d}_{k}" for k in range(int(rng.integers(1, 4)))]
            for address_id in addresses:
                self.rows["addresses"].append(
                    dict(
                        address_id=address_id,
                        user_id=user_id,
                        place_name="北京市海淀区",
                        lat=39.96,
                        lon=116.3,
                        poi_type=str(rng.choice(POI)),
                        city="北京",
                        updated_at=_end_of(self.day(rng.integers(-10, self.days))),
                    )
                )
            devices = [f"d{u:04d}_{k}" for k in range(int(rng.integers(1, 3)))]
            activity = rng.uniform(0.05, 0.9)
            for n in range(self.days):
                dt = self.day(n)
                if dt < registered:
                    continue
                if rng.random() < activity:
                    self._session(user_id, str(rng.choice(devices)), dt)
                for _ in range(rng.poisson(0.12 + 0.3 * activity)):
                    self._order(user_id, addresses, dt)
        self._shared_device()
        self._device_map()
        return self.rows

    def _event(self, user_id, device, dt, event_type, anonymous=False, ts=None):
        rng = self.rng
        ts = ts or self.moment(dt)
        dt, landing = self.landing(dt, ts)
        category = rng.choice(CATEGORIES) if event_type in ("view", "play", "add_cart", "click") else None
        self.rows["events"].append(
            dict(
                event_id=f"e{len(self.rows['events'])}",
                user_id=user_id,
                anonymous=anonymous,
                device_id=device,
                event_type=event_type,
                ts=ts,
                product_line=str(rng.choice(LINES, p=[0.6, 0.25, 0.15])),
                category=category,
                sku=None,
                item_id=None,
                order_id=None,
                rating=int(rng.integers(1, 6)) if event_type == "review" and rng.random() < 0.9 else None,
                wait_minutes=float(np.round(rng.uniform(10, 90), 1)) if event_type == "delivery" and rng.random() < 0.8 else None,
                refund_amount=float(np.round(rng.uniform(5, 80), 2)) if event_type == "refund" and rng.random() < 0.8 else None,
                seconds=None,
                dt=dt,
                landing_dt=landing,
            )
        )
        return ts

    def _session(self, user_id, device, dt):
        rng = self.rng
        kinds = rng.choice(EVENT_TYPES, size=int(rng.integers(1, 7)), p=np.array(EVENT_WEIGHTS) / sum(EVENT_WEIGHTS))
        draw = rng.random()
        if draw < 0.2:  # anonymous browsing; a login on the device may come later (or too late)
            last = None
            for kind in kinds:
                last = self._event(None, device, dt, str(kind), anonymous=True)
            if rng.random() < 0.7:
                self._login(user_id, device, last + timedelta(hours=float(rng.uniform(0.1, 80))))
            return
        stitched = draw < 0.3  # anonymous but stitched by the clean stage (a login it had seen)
        for kind in kinds:
            ts = self._event(user_id, device, dt, str(kind), anonymous=stitched)
            if kind == "login":
                self._login(user_id, device, ts)

    def _login(self, user_id, device, ts):
        if ts > _end_of(self.end):
            return
        dt = (ts + timedelta(hours=8)).date()
        landed = min(dt + timedelta(days=int(self.rng.integers(1, 3))), self.end) if self.rng.random() < 0.15 else dt
        self.logins.setdefault((device, user_id, landed), []).append(ts)

    def _order(self, user_id, addresses, dt):
        rng = self.rng
        ts = self.moment(dt)
        dt, landing = self.landing(dt, ts)
        order_id = f"o{len(self.rows['orders'])}"
        amount = float(rng.choice([200.0, 30.0, 99.9])) if rng.random() < 0.2 else float(np.round(rng.uniform(5, 260), 2))
        self.rows["orders"].append(
            dict(
                order_id=order_id,
                user_id=user_id,
                ts=ts,
                amount=amount,
                coupon_amount=float(np.round(rng.uniform(1, 20), 2)) if rng.random() < 0.3 else 0.0,
                item_count=1,
                address_id=str(rng.choice(addresses)) if rng.random() < 0.85 else None,
                product_line=str(rng.choice(LINES, p=[0.8, 0.1, 0.1])),
                status=str(rng.choice(STATUSES, p=[0.3, 0.55, 0.08, 0.07])),
                dt=dt,
                landing_dt=landing,
            )
        )
        for line_no in range(1, int(rng.integers(1, 4)) + 1):
            category = rng.choice(CATEGORIES[:5] + [None], p=[0.2, 0.2, 0.2, 0.2, 0.15, 0.05])
            self.rows["order_items"].append(
                dict(
                    order_id=order_id,
                    line_no=line_no,
                    user_id=user_id,
                    sku=f"{category}-1",
                    category=category,
                    qty=1,
                    price=30.0,
                    dt=dt,
                    landing_dt=landing,
                )
            )

    def _shared_device(self):
        """Two users log in on one device within hours: the earlier login takes the anonymous visit before both."""
        a, b = self.users[0], self.users[1]
        dt = self.day(self.days // 2)
        visit = self._event(None, "shared", dt, "view", anonymous=True, ts=local_ts(dt, 10))
        self._login(b, "shared", visit + timedelta(hours=5))
        self._login(a, "shared", visit + timedelta(hours=2))

    def _device_map(self):
        for (device, user_id, landed), moments in self.logins.items():
            self.rows["device_map"].append(
                dict(device_id=device, user_id=user_id, first_login_ts=min(moments), last_login_ts=max(moments), dt=landed)
            )


def _hour_weights() -> np.ndarray:
    weights = np.array([4, 1, 1, 1, 1, 1, 2, 4, 6, 6, 5, 8, 10, 8, 5, 5, 6, 8, 10, 10, 8, 6, 3, 2], dtype=float)
    return weights / weights.sum()


def history(users: int = 200, days: int = 60, end: date = date(2026, 7, 31), seed: int = 16) -> dict[str, list[dict]]:
    """Rows for each silver table (``silver.{name}``) of a generated history of ``users`` over ``days`` landing days."""
    return {f"silver.{table}": rows for table, rows in _History(users, days, end, seed).build().items()}
