"""A deterministic synthetic landing zone for the seed business, with ground truth.

The seed business is an app selling salads (product line ``salad``) that also
offers two media lines (``content`` and ``video`` in the contract). Users have
latent traits (gender, occupation, taste, price and discount sensitivity,
activity, churn hazard) and their behaviour depends on them, so that profile
tags and models built downstream can be checked against the truth written to
``{lake}/truth/users.parquet``.

The file layout, fields, types and value sets come from ``conf/landing.yaml``
(the contract); this module only knows what the business means by them.

Streaming and determinism: users are simulated in fixed blocks of
``BLOCK_USERS``; each block has its own random streams (``SeedSequence(seed,
spawn_key=(1, block))``, and ``(2, block)`` for the whole given names) and its
own id ranges, so its records do not depend on which other blocks are in
memory. A chunk of blocks is written as one part file per (source, landing
date), lines ordered by (landing date, block, ts):
concatenating the parts of a folder gives the same lines whatever
``chunk_users`` is. Lines are serialized with vectorized Arrow string kernels,
not one ``json.dumps`` per record.

Dirt is injected at small rates (:class:`DirtRates`) and counted per kind in
the :class:`GenerateSummary`; see ``DIRT_KINDS`` for how a cleaner recognises
each kind.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from portrait.core import storage
from portrait.core.config import Conf

BLOCK_USERS = 1000  # RNG streams and ids are keyed by blocks of this many users
SALAD = "salad"  # the seed line: ordered, delivered, reviewed; every other line is media
TIME_ZONE = "Asia/Shanghai"  # no DST: +08:00 all year, which the ISO timestamps spell out
OFFSET_MS = 8 * 3600 * 1000
DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)
EPOCH_MS_SHARE = 0.3  # upstream systems disagree on the timestamp format
DECLINE_DAYS = 30  # order and app-open rates fall over this many days before churn
STRAIN_DAYS = 45  # deliveries get slower and reviews worse this many days before churn
LABEL_DAYS = 30  # churns_after_last_day looks this far past end_date
POTENTIAL_SHARE = 0.10  # registered but never order
PRE_WINDOW_DAYS = 540  # users registered before the window did so within this many days
TEST_CHANNEL = "internal_test"  # conf/pipeline.yaml clean.test_account_channels
TEST_NAME_PREFIX = "测试"  # conf/pipeline.yaml clean.test_account_name_prefixes
BOT_EVENTS_PER_DAY = (400, 3000)  # well above clean.bot_events_per_device_per_day (300)
UNKNOWN_EVENT_TYPES = ("hover", "scroll", "share_click")

# Deliberately rough business figures: the shape matters, not the exact values.
SKU_TIERS = 8  # salad skus per category, priced 25..60 yuan
MEMBER_PLANS = (("month", 19), ("quarter", 49), ("year", 168))  # media memberships, yuan
COUPONS_YUAN = (3, 5, 8, 10, 15)
MAX_ITEMS = 3
OCCUPATIONS = ("white_collar", "student", "other")
OCCUPATION_SHARES = (0.5, 0.2, 0.3)
HOME, OFFICE, SCHOOL, OTHER = range(4)  # address slots, one poi_type each
FEMALE_SHARE = 0.55
# Common whole given names, equally common among themselves, with their share of men
# (seed: 国庆 95 %, 爱华 55 %; the others rough). Real names are not drawn character by
# character: these recur whole, and their own share of men is not what their characters say.
COMMON_GIVEN_NAMES = {
    "国庆": 0.95,
    "建国": 0.97,
    "志强": 0.98,
    "建华": 0.75,
    "爱华": 0.55,
    "文华": 0.55,
    "春华": 0.45,
    "海燕": 0.03,
    "婷婷": 0.02,
    "秀英": 0.02,
    "丽娟": 0.02,
    "晓燕": 0.03,
}
COMMON_GIVEN_NAME_SHARE = 0.08  # of all users; everyone else's given name is drawn character by character
SLOT_POI = ("residential", "office", "school", "other")
CATEGORY_LABELS = {"vegetable": "蔬菜", "fruit": "水果", "seafood": "海鲜", "chicken": "鸡肉"}  # for search text
GENERIC_QUERIES = ("沙拉", "轻食", "低卡", "减脂餐", "优惠套餐")
CHANNELS = {
    "app_store": 0.25,
    "huawei_store": 0.15,
    "xiaomi_store": 0.1,
    "wechat_mini_program": 0.2,
    "douyin_ad": 0.15,
    "referral": 0.1,
    "offline_event": 0.05,
}
HOUR_WEIGHTS = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1.2, 3, 4, 3, 2.5, 3.5, 5, 3.5, 2.5, 2.5, 2.8, 3.5, 4.5, 5, 5.5, 5, 3.5, 2])
# (name, lat, lon, weight, districts): real city centres and districts.
CITIES = (
    ("北京", 39.9042, 116.4074, 12, ("海淀区", "朝阳区", "东城区", "西城区", "丰台区")),
    ("上海", 31.2304, 121.4737, 12, ("浦东新区", "徐汇区", "静安区", "长宁区", "杨浦区")),
    ("广州", 23.1291, 113.2644, 9, ("天河区", "越秀区", "海珠区", "番禺区")),
    ("深圳", 22.5431, 114.0579, 9, ("南山区", "福田区", "罗湖区", "宝安区")),
    ("杭州", 30.2741, 120.1551, 7, ("西湖区", "上城区", "拱墅区", "滨江区")),
    ("成都", 30.5728, 104.0668, 7, ("武侯区", "锦江区", "青羊区", "成华区")),
    ("武汉", 30.5928, 114.3055, 6, ("武昌区", "洪山区", "江汉区", "江岸区")),
    ("南京", 32.0603, 118.7969, 6, ("鼓楼区", "玄武区", "秦淮区", "建邺区")),
    ("西安", 34.3416, 108.9398, 5, ("雁塔区", "碑林区", "未央区", "新城区")),
    ("重庆", 29.5630, 106.5516, 6, ("渝中区", "江北区", "南岸区", "渝北区")),
    ("苏州", 31.2990, 120.5853, 5, ("姑苏区", "吴中区", "相城区")),
    ("天津", 39.3434, 117.3616, 5, ("和平区", "南开区", "河西区")),
)
STREETS = (
    "中山路",
    "人民路",
    "解放路",
    "建设路",
    "和平路",
    "新华路",
    "长江路",
    "文化路",
    "学府路",
    "科技路",
    "花园路",
    "光明路",
    "青年路",
    "胜利路",
    "东风路",
    "朝阳路",
)
COMMUNITIES = ("阳光花园", "幸福家园", "金色家园", "碧水湾", "锦绣华庭", "翠苑", "华府", "春天里")
TOWERS = ("国际", "世纪", "金融", "科技", "环球", "时代", "财富", "创新")
UNIVERSITIES = ("大学", "理工大学", "师范大学", "财经大学", "医科大学")
OTHER_PLACES = ("健身房", "父母家", "咖啡馆", "瑜伽馆")
# About 100 common surnames with rough shares (%), most common first.
SURNAMES = (
    "王7.1 李7.0 张6.6 刘5.3 陈4.5 杨3.1 黄2.2 赵2.2 吴2.0 周1.9 徐1.6 孙1.5 马1.4 朱1.3 胡1.3 郭1.2 何1.2 "
    "高1.1 林1.1 罗1.0 郑.9 梁.9 谢.8 宋.8 唐.8 许.7 韩.7 冯.7 邓.7 曹.6 彭.6 曾.6 肖.6 田.5 董.5 袁.5 潘.5 "
    "于.5 蒋.5 蔡.5 余.5 杜.5 叶.5 程.5 苏.4 魏.4 吕.4 丁.4 任.4 沈.4 姚.4 卢.4 姜.4 崔.3 钟.3 谭.3 陆.3 汪.3 "
    "范.3 金.3 石.3 廖.3 贾.3 夏.3 韦.3 付.3 方.3 白.2 邹.2 孟.2 熊.2 秦.2 邱.2 江.2 尹.2 薛.2 闫.2 段.2 雷.2 "
    "侯.2 龙.2 史.2 陶.2 黎.2 贺.2 顾.2 毛.2 郝.2 龚.2 邵.2 万.1 钱.1 严.1 覃.1 武.1 戴.1 莫.1 孔.1 向.1 汤.1"
)


@dataclass(frozen=True)
class DirtRates:
    """How much of the landing zone is dirty: shares of records, except the last two (shares of users)."""

    malformed_json: float = 0.001  # truncated line, every source
    missing_field: float = 0.001  # a required field absent or null, every source
    wrong_type: float = 0.001  # a field of another JSON type, every source
    unknown_event_type: float = 0.001  # events: an event_type outside the contract
    duplicate_event: float = 0.003  # events re-sent the same day and the next day
    duplicate_order: float = 0.003  # orders re-sent 1-2 days later
    late_arrival: float = 0.005  # events and orders landing 1-3 days after their ts
    future_timestamp: float = 0.001  # events and orders with ts 2-10 days ahead (clock skew)
    bot_device: float = 0.0002  # bot devices per user
    test_account: float = 0.0003  # users that are internal test accounts


#: Dirt kinds as counted in GenerateSummary.dirt (dirty lines), and how a cleaner recognises each.
DIRT_KINDS = {
    "malformed_json": "the line is not a JSON object (cut short)",
    "missing_field": "a required field (contract) is absent or null",
    "wrong_type": 'a non-key field has another JSON type: string->123, long/double/object/array->"abc", timestamp->true',
    "unknown_event_type": f"events.event_type outside the contract values ({', '.join(UNKNOWN_EVENT_TYPES)})",
    "duplicate_event": "an event_id already seen: a copy the same landing day and one the next day",
    "duplicate_order": "an order_id already seen on an earlier landing day (1-2 days before)",
    "late_arrival": "a unique event/order whose ts business date is 1-3 days before its landing dt",
    "future_timestamp": "an event/order whose ts lies 2-10 days after the end of its landing day",
    "bot_device": f"events of a device with {BOT_EVENTS_PER_DAY[0]}-{BOT_EVENTS_PER_DAY[1]} view/click events in a landing day, user_id null, no orders",
    "test_account": f"users with channel {TEST_CHANNEL} and a name starting with {TEST_NAME_PREFIX}, and all their events, orders, addresses",
}
CLEAN = 0
(MALFORMED, MISSING, WRONG_TYPE, UNKNOWN_TYPE, DUP_EVENT, DUP_ORDER, LATE, FUTURE, BOT, TEST) = range(1, len(DIRT_KINDS) + 1)
LINE_DIRT = (MALFORMED, MISSING, WRONG_TYPE, UNKNOWN_TYPE)  # applied to the serialized line
WRONG_VALUES = {"string": 123, "long": "abc", "double": "abc", "boolean": "abc", "timestamp": True, "object": "abc", "array": "abc"}
SOURCES = ("users", "addresses", "events", "orders", "consent")


@dataclass
class GenerateSummary:
    """What a generate run wrote: lines per source (dirt included), dirty lines per kind."""

    lake: str
    first_date: date
    last_date: date
    users: int
    records: dict[str, int]
    dirt: dict[str, int]
    bot_devices: int
    test_accounts: int
    files: int
    bytes: int
    landing: str
    truth: str
    seconds: float

    def __str__(self) -> str:
        records = ", ".join(f"{source} {n:,}" for source, n in self.records.items())
        dirt = ", ".join(f"{kind} {n:,}" for kind, n in self.dirt.items())
        return (
            f"landing zone {self.landing} ({self.first_date} .. {self.last_date}, {self.users:,} users, "
            f"{self.files:,} files, {self.bytes / 1e6:,.1f} MB, {self.seconds:.1f} s)\n"
            f"  lines: {records}\n  dirt: {dirt}; {self.bot_devices} bot devices, {self.test_accounts} test accounts\n"
            f"  truth: {self.truth}"
        )


def generate(
    lake: str | Path,
    users: int,
    days: int,
    seed: int = 7,
    end_date: date | str = "2026-09-30",
    conf_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    chunk_users: int = 50_000,
    dirt: DirtRates | None = None,
    campaign_effects: list[CampaignEffect] | tuple = (),
) -> GenerateSummary:
    """Write ``days`` landing dates ending at ``end_date`` for ``users`` users, and their truth.

    Replaces the generator's own output in ``lake`` (the contract's source folders
    under landing/ and truth/users.parquet) so reruns are byte-identical.
    ``chunk_users`` (rounded up to whole blocks of BLOCK_USERS) bounds memory;
    it changes how lines are split into part files, never the lines.
    """
    if users < 1 or days < 1:
        raise ValueError(f"users and days must be positive, got users={users} days={days}")
    started = time.perf_counter()
    end = date.fromisoformat(end_date) if isinstance(end_date, str) else end_date
    world = _World(_Contract.load(conf_dir), users, days, end, seed, dirt or DirtRates(), tuple(campaign_effects))
    lake = str(lake)
    landing, truth_path = storage.join(lake, "landing"), storage.join(lake, "truth", "users.parquet")
    for source in world.contract.sources:
        storage.remove_tree(storage.join(landing, source))
    storage.remove(truth_path)
    report = progress or (lambda stage, done, total: None)

    n_blocks = math.ceil(users / BLOCK_USERS)
    per_chunk = max(1, math.ceil(chunk_users / BLOCK_USERS))
    tally = _Tally()
    truth_parts, bots, tests = [], 0, 0
    for chunk, first_block in enumerate(range(0, n_blocks, per_chunk)):
        blocks = []
        for block in range(first_block, min(first_block + per_chunk, n_blocks)):
            blocks.append(_simulate_block(world, block))
            report("simulate users", min((block + 1) * BLOCK_USERS, users), users)
        for source in SOURCES:
            _write_chunk(world, landing, source, _concat([b.records.pop(source) for b in blocks]), chunk, tally)
        truth_parts += [b.truth for b in blocks]
        bots += sum(b.bots for b in blocks)
        tests += sum(b.tests for b in blocks)
        report("write landing", min((first_block + per_chunk) * BLOCK_USERS, users), users)
        del blocks
    _write_empty_days(world, landing, tally)

    report("write truth", 0, 1)
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.concat_tables(truth_parts).combine_chunks(), buffer)
    storage.write_bytes(truth_path, buffer.getvalue().to_pybytes())
    report("write truth", 1, 1)
    return GenerateSummary(
        lake=lake,
        first_date=world.day0,
        last_date=end,
        users=users,
        records={s: tally.records.get(s, 0) for s in SOURCES},
        dirt={kind: int(tally.dirt[code]) for code, kind in enumerate(DIRT_KINDS, start=1)},
        bot_devices=bots,
        test_accounts=tests,
        files=tally.files,
        bytes=tally.bytes,
        landing=landing,
        truth=truth_path,
        seconds=round(time.perf_counter() - started, 1),
    )


def read_truth(lake: str | Path) -> pd.DataFrame:
    """The ground truth of a generated lake: one row per user (see ``_truth_table``)."""
    import io

    return pd.read_parquet(io.BytesIO(storage.read_bytes(storage.join(str(lake), "truth", "users.parquet"))))


# --------------------------------------------------------------------------- contract and world


@dataclass(frozen=True)
class _Contract:
    """The parts of conf/landing.yaml the generator writes against."""

    sources: dict
    categories: dict[str, list[str]]

    @classmethod
    def load(cls, conf_dir: str | Path | None) -> _Contract:
        conf = Conf(conf_dir)
        data = conf.landing
        if conf.pipeline["time_zone"] != TIME_ZONE:
            raise ValueError(
                f"the generator writes {TIME_ZONE} (+08:00) days, conf/pipeline.yaml time_zone says {conf.pipeline['time_zone']}"
            )
        contract = cls(data["sources"], data["categories"])
        needed = {
            ("events", "event_type"): {
                "app_open",
                "login",
                "logout",
                "view",
                "click",
                "search",
                "add_cart",
                "order",
                "review",
                "refund",
                "delivery",
                "play",
            },
            ("orders", "status"): {"paid", "delivered", "cancelled", "refunded"},
            ("addresses", "poi_type"): set(SLOT_POI),
            ("events", "product_line"): {SALAD},
        }
        for (source, name), wanted in needed.items():
            if missing := wanted - set(contract.values(source, name)):
                raise ValueError(f"conf/landing.yaml {source}.{name} lacks {sorted(missing)}")
        if set(contract.categories) != set(contract.values("events", "product_line")):
            raise ValueError("conf/landing.yaml: categories must list every product line")
        return contract

    def values(self, source: str, name: str) -> list[str]:
        return list(self.sources[source]["fields"][name]["values"])

    def required(self, source: str) -> list[str]:
        return [name for name, decl in self.sources[source]["fields"].items() if decl.get("required")]


class _World:
    """Everything shared by all blocks: contract vocabularies, calendar, name tables."""

    def __init__(self, contract: _Contract, users: int, days: int, end: date, seed: int, dirt: DirtRates, campaign_effects: tuple = ()):
        self.contract, self.users, self.days, self.seed, self.dirt = contract, users, days, seed, dirt
        self.campaign_effects = campaign_effects
        self.day0 = end - timedelta(days=days - 1)
        self.day0_ms = ((self.day0 - EPOCH).days * DAY_MS) - OFFSET_MS  # UTC ms of the first local midnight

        self.lines = contract.values("events", "product_line")
        self.salad = self.lines.index(SALAD)
        self.media = [i for i in range(len(self.lines)) if i != self.salad]
        # one global category code space: salad categories and every media line's genres
        self.cat_names = [c for line in self.lines for c in contract.categories[line]]
        self.cat_base = np.cumsum([0] + [len(contract.categories[line]) for line in self.lines])[:-1]
        self.salad_cats = contract.categories[SALAD]
        # sku codes: salad (category, tier) first, then one membership plan per media line
        self.sku_names = [f"{SALAD}-{c}-{t + 1}" for c in self.salad_cats for t in range(SKU_TIERS)]
        self.sku_names += [f"{self.lines[m]}-vip-{plan}" for m in self.media for plan, _ in MEMBER_PLANS]
        self.queries = list(GENERIC_QUERIES) + [
            q for c in self.salad_cats for q in (f"{CATEGORY_LABELS.get(c, c)}沙拉", CATEGORY_LABELS.get(c, c))
        ]
        self.event_types = contract.values("events", "event_type") + list(UNKNOWN_EVENT_TYPES)
        self.statuses = contract.values("orders", "status")
        self.poi = contract.values("addresses", "poi_type")

        dates = [self.day0 + timedelta(days=d) for d in range(days)]
        self.weekday = np.array([d.weekday() for d in dates])
        self.month = np.array([d.month for d in dates])
        doy = np.array([d.timetuple().tm_yday for d in dates])
        self.season = 1 + 0.3 * np.cos(2 * np.pi * (doy - 196) / 365.25)  # salads peak mid-July
        calendar = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0,))))
        self.promo = calendar.random(days) < 0.15  # platform-wide coupon days

        self.q = {  # JSON-quoted vocabularies, taken by code when rendering
            "event_type": _quoted(self.event_types),
            "line": _quoted(self.lines),
            "status": _quoted(self.statuses),
            "poi": _quoted(self.poi),
            "cat": _quoted(self.cat_names),
            "sku": _quoted(self.sku_names),
            "query": _quoted(self.queries),
            "city": _quoted([c[0] for c in CITIES]),
            "channel": _quoted(list(CHANNELS) + [TEST_CHANNEL]),
            "gender": _quoted(["M", "F"]),
            "item": pa.array([f'"{self.lines[i]}-{g}-' for i in range(len(self.lines)) for g in contract.categories[self.lines[i]]]),
        }
        self.sku_cat = np.array([self.cat_names.index(c) for c in self.salad_cats for _ in range(SKU_TIERS)])

    def etype(self, name: str) -> int:
        return self.event_types.index(name)


@lru_cache(maxsize=1)
def _given_name_chars() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ngender's per-character name frequencies: characters, P(char | male), P(char | female)."""
    table = pd.read_csv(importlib.resources.files("ngender") / "charfreq.csv", dtype={"char": str})
    male, female = table["male"].to_numpy(float), table["female"].to_numpy(float)
    return table["char"].to_numpy(object), male / male.sum(), female / female.sum()


def _whole_given_names(rng, female: np.ndarray) -> np.ndarray:
    """A name of COMMON_GIVEN_NAMES per user drawn whole, or None (characters drawn one by one).

    Each gender draws from the table with its own probability and mix, chosen
    so that COMMON_GIVEN_NAME_SHARE of all users carry such a name, the names
    are equally common and each name's share of men is the declared one. Its
    own stream (not the block's) keeps every other trait and record as it was.
    """
    names = np.array(list(COMMON_GIVEN_NAMES), dtype=object)
    men = np.array(list(COMMON_GIVEN_NAMES.values()))
    of_men, of_women = men / men.sum(), (1 - men) / (1 - men).sum()
    p_whole_man = COMMON_GIVEN_NAME_SHARE * men.mean() / (1 - FEMALE_SHARE)
    p_whole_woman = COMMON_GIVEN_NAME_SHARE * (1 - men).mean() / FEMALE_SHARE
    n = len(female)
    drawn = np.where(female, rng.choice(names, n, p=of_women), rng.choice(names, n, p=of_men))
    return np.where(rng.random(n) < np.where(female, p_whole_woman, p_whole_man), drawn, None)


@lru_cache(maxsize=1)
def _surnames() -> tuple[np.ndarray, np.ndarray]:
    pairs = [(entry[0], float(entry[1:])) for entry in SURNAMES.split()]
    weights = np.array([w for _, w in pairs])
    return np.array([s for s, _ in pairs], dtype=object), weights / weights.sum()


# --------------------------------------------------------------------------- one block of users

# Stages of a session, in the order their events happen.
(LOGIN_FIRST, APP_OPEN, SEARCH, VIEW, CLICK, LOGIN_CHECKOUT, ADD_CART, ORDER, PLAY, LOGOUT) = range(10)
STAGE_EVENT = ("login", "app_open", "search", "view", "click", "login", "add_cart", "order", "play", "logout")
STAGE_GAP_SECONDS = np.array([5, 3, 15, 25, 10, 20, 15, 30, 120, 10], dtype=float)
BROWSE, ORDERING, MEDIA, MEMBERSHIP = range(4)  # session kinds
# props shapes of events
P_NONE, P_SKU, P_QUERY, P_MEDIA, P_AMOUNT, P_RATING, P_WAIT = range(7)


@dataclass
class _Block:
    records: dict[str, dict[str, np.ndarray]]
    truth: pa.Table
    bots: int
    tests: int


def _simulate_block(w: _World, block: int) -> _Block:
    """All records of one block of users over the whole window, dirt included."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(w.seed, spawn_key=(1, block))))
    first = block * BLOCK_USERS
    u = _draw_traits(rng, w, first, min(BLOCK_USERS, w.users - first))
    after_traits = rng.bit_generator.state  # where the untreated twin of a campaign effect starts again
    sessions = _draw_sessions(rng, w, u)
    orders = _draw_orders(rng, w, u, sessions)
    orders["num"] = (block + 1) * 10**8 + np.arange(len(orders["uid"]))
    events = _session_events(rng, w, u, sessions, orders)
    events = _concat([events, _after_order_events(rng, w, u, orders), _bot_events(rng, w, u["n"])])
    events = _landed(w, events)
    events = _take(events, np.lexsort((events["ts"], events["landing"])))
    events["num"] = (block + 1) * 10**10 + np.arange(len(events["ts"]))
    events["dirt"][(events["uid"] >= 0) & u["is_test"][np.maximum(events["uid"] - first, 0)]] = TEST
    _campaign_outcomes(w, u, first, orders, after_traits)

    orders_rec = _landed(w, orders)
    users = _user_records(rng, w, u)
    addresses = _address_records(rng, w, u, orders_rec)
    r = w.dirt
    broken = {MALFORMED: r.malformed_json, MISSING: r.missing_field, WRONG_TYPE: r.wrong_type}
    mistimed = {LATE: r.late_arrival, FUTURE: r.future_timestamp}
    records = {
        "users": _add_dirt(rng, w, users, broken),
        "addresses": _add_dirt(rng, w, addresses, broken),
        "events": _add_dirt(rng, w, events, broken | {UNKNOWN_TYPE: r.unknown_event_type, DUP_EVENT: r.duplicate_event} | mistimed),
        "orders": _add_dirt(rng, w, orders_rec, broken | {DUP_ORDER: r.duplicate_order} | mistimed),
    }
    records["consent"] = _add_dirt(rng, w, _consent_records(rng, w, u, users), broken)  # drawn last: the other sources stay as they were
    for name, rec in records.items():
        key = (rec["landing"], rec["ts"]) if "ts" in rec else (rec["landing"],)
        records[name] = _take(rec, np.lexsort(key[::-1]))
    bots = len(np.unique(events["device"][events["dirt"] == BOT]))
    return _Block(records, _truth_table(w, u), bots, int(u["is_test"].sum()))


def _draw_traits(rng, w: _World, first: int, n: int) -> dict:
    """Latent traits of n users: who they are, what they like, how likely they are to leave."""
    u = {"n": n, "gidx": np.arange(first, first + n, dtype=np.int64)}
    u["is_test"] = rng.random(n) < w.dirt.test_account
    u["female"] = rng.random(n) < FEMALE_SHARE
    occ = rng.choice(len(OCCUPATIONS), n, p=OCCUPATION_SHARES)
    u["occupation"] = occ
    student, white = occ == 1, occ == 0
    u["birth_year"] = np.select([white, student], [rng.integers(1975, 2002, n), rng.integers(2002, 2009, n)], rng.integers(1958, 2005, n))
    u["city"] = rng.choice(len(CITIES), n, p=_norm([c[3] for c in CITIES]))
    in_window = rng.random(n) < w.days / (w.days + 180)  # a steady stream of sign-ups
    u["reg_day"] = np.where(in_window, rng.integers(0, w.days, n), -rng.integers(1, PRE_WINDOW_DAYS + 1, n))
    u["reg_sec"] = rng.integers(7 * 3600, 23 * 3600, n)
    u["channel"] = np.where(u["is_test"], len(CHANNELS), rng.choice(len(CHANNELS), n, p=_norm(list(CHANNELS.values()))))
    u["activity"] = rng.lognormal(0, 0.5, n)
    u["intensity"] = np.column_stack([rng.beta(2, 2.5, n) if i == w.salad else rng.beta(0.7, 2, n) for i in range(len(w.lines))])
    u["taste"] = rng.dirichlet(np.full(len(w.salad_cats), 0.7), n)
    u["interest"] = {m: rng.dirichlet(np.full(len(w.contract.categories[w.lines[m]]), 0.7), n) for m in w.media}
    u["price_sens"] = np.where(student, rng.beta(4, 2, n), rng.beta(2, 2.5, n))
    u["discount_sens"] = np.clip(0.5 * u["price_sens"] + 0.5 * rng.beta(2, 2, n), 0, 1)
    u["potential"] = (rng.random(n) < POTENTIAL_SHARE) & ~u["is_test"]
    u["slowness"] = rng.lognormal(0, 0.25, n)  # how slow deliveries to this user's area are

    salad = u["intensity"][:, w.salad]
    log_hazard = (
        np.log(0.005)
        - 1.3 * (salad - 0.44) / 0.2
        + 1.2 * np.log(u["slowness"]) / 0.25
        + 0.6 * (u["price_sens"] - u["discount_sens"]) / 0.15
        - 0.5 * np.log(u["activity"]) / 0.5
    )
    u["hazard"] = np.where(u["potential"], 0.0, np.minimum(np.exp(log_hazard), 0.2))
    start = np.maximum(u["reg_day"], 0)  # users from before the window are alive at its start
    lifetime = rng.geometric(np.where(u["potential"], 1.0, u["hazard"]))  # days from start to churn
    horizon = w.days - 1 + LABEL_DAYS
    u["churn_drawn"] = np.where(u["potential"] | (start + lifetime > horizon), np.iinfo(np.int32).max, start + lifetime)
    _campaign_effects(w, u, first)

    u["n_dev"] = 1 + (rng.random(n) < 0.35)
    u["devices"] = rng.integers(10**17, 10**18, (n, 2))
    has = np.zeros((n, 4), bool)
    has[:, HOME], has[:, OFFICE], has[:, SCHOOL], has[:, OTHER] = True, white, student, rng.random(n) < 0.15
    u["has_addr"] = has
    u["addr_num"] = u["gidx"][:, None] * 4 + np.arange(4)

    chars, p_male, p_female = _given_name_chars()
    surnames, p_surname = _surnames()
    sur = rng.choice(surnames, n, p=p_surname)
    given = np.where(u["female"][:, None], rng.choice(chars, (n, 2), p=p_female), rng.choice(chars, (n, 2), p=p_male))
    two = rng.random(n) < 0.72
    names_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(w.seed, spawn_key=(2, first // BLOCK_USERS))))
    whole = _whole_given_names(names_rng, u["female"])
    u["name"] = np.array(
        [
            f"{TEST_NAME_PREFIX}用户{g % 10000:04d}" if test else s + (common or g1 + (g2 if t else ""))
            for s, (g1, g2), t, common, test, g in zip(sur, given, two, whole, u["is_test"], u["gidx"])
        ],
        dtype=object,
    )
    phone = rng.choice([3, 5, 7, 8, 9], n) * 10**9 + rng.integers(0, 10**9, n)
    u["phone"] = np.array([f"1{p:010d}" for p in phone], dtype=object)
    return u


@dataclass(frozen=True)
class CampaignEffect:
    """A campaign's true effect: after ``start``, a user its hash puts in treatment churns with hazard x (1 - reduction).

    The arm is the pipeline's own (portrait.campaigns.assignment.arm_of), so whoever the campaign
    contacts among them, treatment and holdout differ by this effect only. The hazard is per day and
    memoryless, so a user still a customer on ``start`` draws the rest of their lifetime anew. Up to and
    including ``start`` (the send date, whose data picks the audience) behaviour follows the lifetime
    drawn before: the campaign cannot change who it selects, only what they do afterwards.
    """

    campaign: str
    holdout: float
    start: date
    hazard_reduction: float


def _campaign_effects(w: _World, u: dict, first: int, skip: int | None = None) -> None:
    """Apply each campaign effect but ``skip`` to the drawn lifetimes: churn_day, and what held before each effect.

    ``changed`` (per effect) are the users an effect gave a new lifetime: treated, and still customers on its start.
    """
    from portrait.campaigns.assignment import arm_of

    never, horizon = np.iinfo(np.int32).max, w.days - 1 + LABEL_DAYS
    u["churn_day"], u["churn_before"], u["changed"] = u["churn_drawn"], [], {}
    for k, effect in enumerate(w.campaign_effects):
        day = (effect.start - w.day0).days
        ids = [f"u{g + 1:08d}" for g in u["gidx"]]
        treated = np.array([arm_of(effect.campaign, uid, effect.holdout) == "treatment" for uid in ids])
        u[f"treated_{effect.campaign}"] = treated
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(w.seed, spawn_key=(3, first // BLOCK_USERS, k))))
        reduced = np.maximum(u["hazard"] * (1 - effect.hazard_reduction), 1e-9)
        rest = rng.geometric(reduced)  # drawn for all, so the stream does not depend on who is alive
        alive = treated & ~u["potential"] & (u["churn_day"] > day) & (k != skip)
        start = np.maximum(day, np.maximum(u["reg_day"], 0))
        redrawn = np.where(start + rest > horizon, never, start + rest)
        u["churn_before"].append((day, alive, u["churn_day"]))  # what _daily_rates uses up to ``day``
        u["changed"][k] = alive
        u["churn_day"] = np.where(alive, redrawn, u["churn_day"])


def _campaign_outcomes(w: _World, u: dict, first: int, orders: dict, after_traits: dict) -> None:
    """Each effect's conversions in the truth: the first converting order after its start, with and without the campaign.

    Without it, a user the effect did not change orders as they did; a changed user is simulated again
    from the random state after the traits (``after_traits``) with the lifetime they had without this
    effect: their sessions, orders and order times drawn anew, as the world without the campaign would have them.
    """
    for k, effect in enumerate(w.campaign_effects):
        day = (effect.start - w.day0).days
        treated_outcome = untreated = _first_converting_day(w, u["n"], orders, day)
        if u["changed"][k].any():
            twin = dict(u)
            _campaign_effects(w, twin, first, skip=k)
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = after_traits
            sessions = _draw_sessions(rng, w, twin)
            twin_orders = _draw_orders(rng, w, twin, sessions)
            twin_orders["num"] = np.zeros(len(twin_orders["uid"]), np.int64)
            _session_events(rng, w, twin, sessions, twin_orders)  # gives the orders their times
            untreated = np.where(u["changed"][k], _first_converting_day(w, u["n"], twin_orders, day), treated_outcome)
        u[f"first_order_after_{effect.campaign}"] = treated_outcome
        u[f"first_order_untreated_{effect.campaign}"] = untreated


def _first_converting_day(w: _World, n: int, orders: dict, day: int) -> np.ndarray:
    """Per user of the block, the window day of their first converting order after ``day`` (int32 max: none)."""
    from portrait.campaigns.results import CONVERTING_STATUS

    on = (orders["ts"] - w.day0_ms) // DAY_MS
    converting = np.isin(orders["status"], [w.statuses.index(s) for s in CONVERTING_STATUS])
    keep = converting & (on > day) & (on < w.days)
    first = np.full(n, np.iinfo(np.int32).max, np.int64)
    np.minimum.at(first, orders["user"][keep], on[keep])
    return first


def _daily_rates(w: _World, u: dict) -> dict[str, np.ndarray]:
    """Expected sessions per user and day (users x days): where the traits turn into behaviour."""
    day = np.arange(w.days)[None, :]
    alive = day >= u["reg_day"][:, None]
    churn = np.broadcast_to(u["churn_day"][:, None].astype(np.int64), (u["n"], w.days))
    for until, changed, before in reversed(u["churn_before"]):  # a campaign effect holds only after its start
        churn = np.where(changed[:, None] & (day <= until), before[:, None].astype(np.int64), churn)
    left = churn - day  # days until churn
    decline = np.where(left > DECLINE_DAYS, 1.0, np.clip(left / DECLINE_DAYS, 0, 1) ** 3)
    session_factor = np.where(left <= 0, 0.03, np.maximum(decline, 0.05)) * alive  # churned users barely open the app
    order_factor = decline * alive * ~u["potential"][:, None]

    white, student = (u["occupation"] == 0)[:, None], (u["occupation"] == 1)[:, None]
    weekday = (w.weekday < 5)[None, :]
    holiday = np.isin(w.month, (7, 8))[None, :] & student  # students go home for July and August
    workday = np.where(white, np.where(weekday, 1.2, 0.6), np.where(weekday, 0.95, 1.15))
    promo = 1 + 1.2 * u["price_sens"][:, None] * w.promo[None, :]  # price-sensitive users order more with a coupon
    salad = u["intensity"][:, w.salad][:, None]
    act = u["activity"][:, None]
    season = w.season[None, :]
    rates = {
        "order": 0.28 * salad**1.5 * act**0.3 * season * workday * np.where(holiday, 0.2, 1) * promo * order_factor,
        "browse": 0.08 * act * (0.3 + salad) * season**0.5 * np.where(holiday, 0.4, 1) * session_factor,
    }
    for m in w.media:
        intensity = u["intensity"][:, m][:, None]
        rates[f"media{m}"] = 0.15 * act * intensity * session_factor
        rates[f"member{m}"] = 0.003 * intensity * order_factor
    rates["strain"] = np.where((left > 0) & (left <= STRAIN_DAYS), np.sqrt(np.clip(1 - left / STRAIN_DAYS, 0, 1)), 0.0)
    return rates


def _draw_sessions(rng, w: _World, u: dict) -> dict:
    """App sessions: who, which day, what for, when, on which device, logged in or not."""
    rates = _daily_rates(w, u)
    kinds = [("order", ORDERING, w.salad), ("browse", BROWSE, w.salad)]
    kinds += [(f"{prefix}{m}", kind, m) for m in w.media for prefix, kind in (("media", MEDIA), ("member", MEMBERSHIP))]
    parts = []
    for name, kind, line in kinds:
        counts = rng.poisson(rates[name])
        user, day = np.nonzero(counts)
        reps = counts[user, day]
        user, day = np.repeat(user, reps), np.repeat(day, reps)
        parts.append({"user": user, "day": day, "kind": np.full(len(user), kind), "line": np.full(len(user), line)})
    s = _concat(parts)
    ns = len(s["user"])
    lunch = rng.random(ns) < np.where((u["occupation"][s["user"]] == 0) & (w.weekday[s["day"]] < 5), 0.8, 0.55)
    meal = np.where(lunch, rng.normal(12.1, 0.5, ns), rng.normal(18.6, 0.7, ns))
    any_hour = rng.choice(24, ns, p=_norm(HOUR_WEIGHTS)) + rng.random(ns)
    s["start"] = (np.where(s["kind"] == ORDERING, np.clip(meal, 9.5, 21.5), any_hour) * 3600).astype(np.int64)
    s["lunch"] = (s["kind"] == ORDERING) & lunch
    s["device"] = u["devices"][s["user"], ((u["n_dev"][s["user"]] == 2) & (rng.random(ns) < 0.3)).astype(int)]
    anon_share = np.where(s["kind"] == MEDIA, 0.05, np.where(s["kind"] == MEMBERSHIP, 0.0, 0.1))
    s["anon"] = (rng.random(ns) < anon_share) & ~u["is_test"][s["user"]]
    s["login_first"] = ~s["anon"] & (rng.random(ns) < 0.06)
    s["strain"] = rates["strain"][s["user"], s["day"]]
    before_signup = (s["day"] == u["reg_day"][s["user"]]) & (s["start"] < u["reg_sec"][s["user"]])
    return _take(s, np.flatnonzero(~before_signup))


def _draw_orders(rng, w: _World, u: dict, s: dict) -> dict:
    """One order per ordering or membership session: items, coupon, address, delivery experience."""
    sess = np.flatnonzero((s["kind"] == ORDERING) | (s["kind"] == MEMBERSHIP))
    no = len(sess)
    user, day, line = s["user"][sess], s["day"][sess], s["line"][sess]
    salad = line == w.salad
    o = {"session": sess, "user": user, "uid": u["gidx"][user], "line": line}

    n_items = np.where(salad, 1 + rng.binomial(MAX_ITEMS - 1, 0.2, no), 1)
    slot = np.arange(MAX_ITEMS)[None, :] < n_items[:, None]
    mix = 0.9 * u["taste"][user][:, None, :] + 0.1 / len(w.salad_cats)
    cat = _pick(rng, np.broadcast_to(mix, (no, MAX_ITEMS, mix.shape[-1])).reshape(no * MAX_ITEMS, -1)).reshape(no, MAX_ITEMS)
    tier = _pick(rng, np.repeat(_tier_weights(u["price_sens"][user]), MAX_ITEMS, axis=0)).reshape(no, MAX_ITEMS)
    qty = rng.choice([1, 2, 3], (no, MAX_ITEMS), p=[0.8, 0.17, 0.03])
    price = (25 + 5 * tier) * 100
    sku = cat * SKU_TIERS + tier
    item_cat = w.cat_base[w.salad] + cat
    # a media order is a membership: one plan, filed under the user's favourite genre of that line
    plan = rng.choice(len(MEMBER_PLANS), no, p=[0.6, 0.25, 0.15])
    for k, m in enumerate(w.media):
        mine = line == m
        sku[mine, 0] = len(w.salad_cats) * SKU_TIERS + k * len(MEMBER_PLANS) + plan[mine]
        price[mine, 0] = np.array([p for _, p in MEMBER_PLANS])[plan[mine]] * 100
        item_cat[mine, 0] = w.cat_base[m] + u["interest"][m][user[mine]].argmax(axis=1)
        qty[mine, 0] = 1
    o["item_sku"], o["item_cat"] = np.where(slot, sku, -1), np.where(slot, item_cat, -1)
    o["item_qty"], o["item_price"] = np.where(slot, qty, 0), np.where(slot, price, 0)
    subtotal = (o["item_qty"] * o["item_price"]).sum(axis=1)

    ds = u["discount_sens"][user]
    coupon_p = np.clip((0.04 + 0.6 * ds**1.5) * np.where(w.promo[day], 2.0, 1.0), 0, 0.95)
    coupon = np.where(rng.random(no) < coupon_p, rng.choice(COUPONS_YUAN, no) * 100, 0)
    o["coupon"] = np.minimum(coupon, subtotal)
    o["amount"] = subtotal - o["coupon"]

    occ = u["occupation"][user]
    weekday, term = w.weekday[day] < 5, ~np.isin(w.month[day], (7, 8))
    addr = np.select([(occ == 0) & weekday & s["lunch"][sess], (occ == 1) & term], [OFFICE, SCHOOL], HOME)
    addr = np.where(u["has_addr"][user, OTHER] & (rng.random(no) < 0.1), OTHER, addr)
    o["address"] = np.where(salad, u["addr_num"][user, addr], -1)

    # the delivery experience worsens as churn approaches: longer waits, bad reviews, refunds
    strain = s["strain"][sess]
    wait = 28 * u["slowness"][user] * (1 + 0.8 * strain) * np.where(s["lunch"][sess], 1.15, 1.0) * rng.lognormal(0, 0.25, no)
    o["wait"] = np.clip(np.round(wait), 8, 180).astype(np.int64)
    bad = rng.random(no) < 1 / (1 + np.exp(3.0 - 0.04 * (o["wait"] - 30) - 2.2 * strain))
    o["rating"] = np.where(bad, rng.integers(1, 3, no), rng.choice([3, 4, 5], no, p=[0.15, 0.35, 0.5]))
    cancelled = salad & (rng.random(no) < 0.015 + 0.04 * strain)
    o["reviewed"] = salad & ~cancelled & (rng.random(no) < 0.25 + 0.35 * bad)
    o["refunded"] = salad & ~cancelled & (rng.random(no) < 0.01 + 0.12 * bad)
    o["refund"] = np.where(rng.random(no) < 0.6, o["amount"], o["amount"] // 2)
    code = w.statuses.index
    o["status"] = np.select([~salad, cancelled, o["refunded"]], [code("paid"), code("cancelled"), code("refunded")], code("delivered"))
    o["cancelled"] = cancelled
    o["device"] = s["device"][sess]
    o["iso"] = rng.random(no) >= EPOCH_MS_SHARE
    o["dirt"] = np.where(u["is_test"][user], TEST, CLEAN).astype(np.int8)
    return o


def _session_events(rng, w: _World, u: dict, s: dict, o: dict) -> dict:
    """Expand sessions into their events, vectorized: one row per (session, stage, k)."""
    ns = len(s["user"])
    kind, salad = s["kind"], s["line"] == w.salad
    sess_order = np.full(ns, -1)
    sess_order[o["session"]] = np.arange(len(o["session"]))
    n_items = (o["item_sku"] >= 0).sum(axis=1)

    c = np.zeros((ns, len(STAGE_EVENT)), np.int64)
    c[:, LOGIN_FIRST] = s["login_first"]
    c[:, APP_OPEN] = 1
    c[:, SEARCH] = salad & (rng.random(ns) < 0.22)
    c[:, VIEW] = 1 + rng.poisson(np.select([kind == ORDERING, kind == BROWSE], [1.2, 2.0], 1.0))
    c[:, CLICK] = np.where(salad, rng.binomial(c[:, VIEW], 0.45), 0)
    c[:, ADD_CART] = np.select(
        [kind == ORDERING, kind == BROWSE], [np.where(sess_order >= 0, n_items[sess_order], 0), rng.random(ns) < 0.12], 0
    )
    c[:, ORDER] = sess_order >= 0
    c[:, PLAY] = np.where(kind == MEDIA, 1 + rng.poisson(1.2, ns), 0)
    checkout = c[:, ADD_CART] + c[:, ORDER] > 0
    c[:, LOGIN_CHECKOUT] = s["anon"] & checkout  # anonymous browsing, then a login to pay
    c[:, LOGOUT] = ~s["anon"] & (rng.random(ns) < 0.02)

    flat = c.ravel()
    sess = np.repeat(np.repeat(np.arange(ns), c.shape[1]), flat)
    stage = np.repeat(np.tile(np.arange(c.shape[1]), ns), flat)
    k = np.arange(len(stage)) - np.repeat(np.cumsum(flat) - flat, flat)  # index within its stage
    first = np.cumsum(c.sum(axis=1)) - c.sum(axis=1)
    gap = rng.exponential(STAGE_GAP_SECONDS[stage]) + 1
    gap[first] = 0  # every session starts with app_open (or a login)
    offset = np.cumsum(gap)
    offset -= offset[first][sess]
    ts = w.day0_ms + s["day"][sess] * DAY_MS + (s["start"][sess] + offset).astype(np.int64) * 1000 + rng.integers(0, 1000, len(sess))

    user = s["user"][sess]
    line = s["line"][sess]
    anon = s["anon"][sess] & np.isin(stage, (APP_OPEN, SEARCH, VIEW, CLICK, PLAY))
    e = _event_frame(w, len(sess), u["gidx"][user], s["device"][sess], np.array([w.etype(n) for n in STAGE_EVENT])[stage], ts, line)
    e["uid"][anon] = -1

    on_sku = salad[sess] & np.isin(stage, (VIEW, CLICK, ADD_CART))
    from_order = on_sku & (stage == ADD_CART) & (kind[sess] == ORDERING)
    browse_sku = on_sku & ~from_order
    idx = np.flatnonzero(browse_sku)
    mix = 0.75 * u["taste"][user[idx]] + 0.25 / len(w.salad_cats)
    e["sku"][idx] = _pick(rng, mix) * SKU_TIERS + _pick(rng, _tier_weights(u["price_sens"][user[idx]]))
    idx = np.flatnonzero(from_order)
    e["sku"][idx] = o["item_sku"][sess_order[sess[idx]], k[idx]]
    e["shape"][on_sku] = P_SKU

    idx = np.flatnonzero(stage == SEARCH)
    favourite = _pick(rng, u["taste"][user[idx]])
    e["query"][idx] = np.where(
        rng.random(len(idx)) < 0.6,
        len(GENERIC_QUERIES) + 2 * favourite + rng.integers(0, 2, len(idx)),
        rng.integers(0, len(GENERIC_QUERIES), len(idx)),
    )
    e["shape"][idx] = P_QUERY

    for m in w.media:
        idx = np.flatnonzero((line == m) & np.isin(stage, (VIEW, PLAY)))
        e["genre"][idx] = w.cat_base[m] + _pick(rng, 0.85 * u["interest"][m][user[idx]] + 0.15 / u["interest"][m].shape[1])
        e["item"][idx] = np.minimum(rng.zipf(1.4, len(idx)), 500) - 1
        e["seconds"][idx] = np.where(stage[idx] == PLAY, rng.integers(30, 2400, len(idx)), rng.integers(3, 120, len(idx)))
        e["shape"][idx] = P_MEDIA

    idx = np.flatnonzero(stage == ORDER)
    order = sess_order[sess[idx]]
    e["order"][idx], e["money"][idx], e["shape"][idx] = o["num"][order], o["amount"][order], P_AMOUNT
    o["ts"] = np.zeros(len(o["session"]), np.int64)
    o["ts"][order] = ts[idx]

    # anonymous sessions that never reached checkout: the device logs in later (hours, at most 3 days)
    late_login = np.flatnonzero(s["anon"] & ~checkout)
    last = first[late_login] + c[late_login].sum(axis=1) - 1
    delay = np.minimum(rng.exponential(8 * 3600 * 1000, len(late_login)) + 600_000, 70 * 3600 * 1000).astype(np.int64)
    logins = _event_frame(
        w,
        len(late_login),
        u["gidx"][s["user"][late_login]],
        s["device"][late_login],
        np.full(len(late_login), w.etype("login")),
        ts[last] + delay,
        s["line"][late_login],
    )
    events = _concat([e, logins])
    events["iso"] = rng.random(len(events["ts"])) >= EPOCH_MS_SHARE
    return events


def _after_order_events(rng, w: _World, u: dict, o: dict) -> dict:
    """Delivery, review and refund events, minutes to hours after a salad order."""
    parts = []
    delivered = np.flatnonzero((o["line"] == w.salad) & ~o["cancelled"])
    at = o["ts"][delivered] + o["wait"][delivered] * 60_000
    for name, mask, shape, after in (
        ("delivery", np.ones(len(delivered), bool), P_WAIT, 0),
        ("review", o["reviewed"][delivered], P_RATING, 3600_000),
        ("refund", o["refunded"][delivered], P_AMOUNT, 3 * 3600_000),
    ):
        idx = delivered[mask]
        ts = at[mask] + (rng.exponential(after, len(idx)).astype(np.int64) + 60_000 if after else 0)
        e = _event_frame(w, len(idx), o["uid"][idx], o["device"][idx], np.full(len(idx), w.etype(name)), ts, o["line"][idx])
        e["shape"][:] = shape
        for column, value in (("order", o["num"]), ("wait", o["wait"]), ("rating", o["rating"]), ("money", o["refund"])):
            e[column][:] = value[idx]
        parts.append(e)
    events = _concat(parts)
    events["iso"] = rng.random(len(events["ts"])) >= EPOCH_MS_SHARE
    return events


def _bot_events(rng, w: _World, n_users: int) -> dict:
    """A few anonymous devices scraping the menu: hundreds to thousands of views/clicks a day, no orders."""
    n_bots = rng.poisson(w.dirt.bot_device * n_users)
    parts = []
    for _ in range(n_bots):
        device, start, span = rng.integers(10**17, 10**18), rng.integers(0, w.days), rng.integers(1, 5)
        for day in range(start, min(start + span, w.days)):
            n = rng.integers(*BOT_EVENTS_PER_DAY)
            ts = w.day0_ms + day * DAY_MS + np.sort(rng.integers(0, DAY_MS, n))
            etype = np.where(rng.random(n) < 0.7, w.etype("view"), w.etype("click"))
            e = _event_frame(w, n, np.full(n, -1), np.full(n, device), etype, ts, np.full(n, w.salad))
            e["sku"][:], e["shape"][:], e["dirt"][:] = rng.integers(0, len(w.salad_cats) * SKU_TIERS, n), P_SKU, BOT
            e["iso"] = rng.random(n) >= EPOCH_MS_SHARE
            parts.append(e)
    return _concat(parts) if parts else _event_frame(w, 0, [], [], [], [], [])


def _event_frame(w: _World, n: int, uid, device, etype, ts, line) -> dict:
    e = {
        "uid": np.asarray(uid, np.int64),
        "device": np.asarray(device, np.int64),
        "etype": np.asarray(etype, np.int16),
        "ts": np.asarray(ts, np.int64),
        "line": np.asarray(line, np.int8),
        "iso": np.ones(n, bool),
        "shape": np.zeros(n, np.int8),
    }
    for name, dtype in (
        ("sku", np.int16),
        ("query", np.int16),
        ("genre", np.int16),
        ("item", np.int32),
        ("seconds", np.int32),
        ("order", np.int64),
        ("money", np.int64),
        ("rating", np.int8),
        ("wait", np.int16),
        ("dirt", np.int8),
    ):
        e[name] = np.zeros(n, dtype)
    return e


def _user_records(rng, w: _World, u: dict) -> dict:
    """Each user lands on the registration date (the first day if earlier); a few are re-sent later, changed."""
    n = u["n"]
    report = rng.random(n)
    gender = np.select([report < 0.40, report < 0.45], [-1, ~u["female"]], u["female"]).astype(np.int8)  # 40% unsaid, 5% wrong
    rec = {
        "uid": u["gidx"],
        "name": u["name"],
        "gender": gender,
        "birth_year": np.where(rng.random(n) < 0.15, -1, u["birth_year"]),
        "ts": w.day0_ms + u["reg_day"] * DAY_MS + u["reg_sec"] * 1000,
        "iso": rng.random(n) >= EPOCH_MS_SHARE,
        "channel": u["channel"],
        "city": np.where(rng.random(n) < 0.08, -1, u["city"]),
        "phone": np.where(rng.random(n) < 0.10, None, u["phone"]),
        "landing": np.maximum(u["reg_day"], 0),
        "dirt": np.where(u["is_test"], TEST, CLEAN).astype(np.int8),
    }
    updated = np.flatnonzero(~u["is_test"] & (rec["landing"] < w.days - 1) & (rng.random(n) < 0.04))
    update = _take(rec, updated)
    update["landing"] = rng.integers(update["landing"] + 1, w.days)
    moved = rng.random(len(updated)) < 0.7  # moved city, or re-attributed to another channel
    update["city"] = np.where(moved, (u["city"][updated] + rng.integers(1, len(CITIES), len(updated))) % len(CITIES), update["city"])
    update["channel"] = np.where(
        moved, update["channel"], (update["channel"] + rng.integers(1, len(CHANNELS), len(updated))) % len(CHANNELS)
    )
    return _concat([rec, update])


CONSENT_CHANNELS = {"push": 0.7, "email": 0.5, "sms": 0.6}  # share of users who grant each channel on registering
CONSENT_WITHDRAWN = 0.05  # of the grants, withdrawn on a later day of the window


def _consent_records(rng, w: _World, u: dict, users: dict) -> dict:
    """Grants land with the registration (the first day for users from before the window); a few are withdrawn later."""
    first = np.unique(users["uid"], return_index=True)[1]  # each user's first record (registration)
    uid, ts, landing = users["uid"][first], users["ts"][first], users["landing"][first]
    dirt = np.where(users["dirt"][first] == TEST, TEST, CLEAN).astype(np.int8)  # a test account's consent is its activity
    parts = []
    for code, share in enumerate(CONSENT_CHANNELS.values()):
        granted = np.flatnonzero(rng.random(len(uid)) < share)
        grant = {
            "uid": uid[granted],
            "channel": np.full(len(granted), code, np.int8),
            "granted": np.ones(len(granted), bool),
            "ts": np.maximum(ts[granted], w.day0_ms + landing[granted] * DAY_MS),
            "landing": landing[granted],
            "dirt": dirt[granted],
        }
        later = np.flatnonzero((rng.random(len(granted)) < CONSENT_WITHDRAWN) & (grant["landing"] < w.days - 1))
        withdraw = _take(grant, later)
        withdraw["landing"] = rng.integers(withdraw["landing"] + 1, w.days)
        withdraw["ts"] = w.day0_ms + withdraw["landing"] * DAY_MS + rng.integers(0, DAY_MS // 2, len(later))
        withdraw["granted"] = np.zeros(len(later), bool)
        parts += [grant, withdraw]
    return _concat(parts)


def _address_records(rng, w: _World, u: dict, orders: dict) -> dict:
    """Each address lands on its first use (the first day for users from before the window)."""
    user, slot = np.nonzero(u["has_addr"])
    num = u["addr_num"][user, slot]
    used = orders["address"] >= 0
    first_use = pd.Series(orders["landing"][used]).groupby(orders["address"][used]).min()
    landing = np.where(u["reg_day"][user] < 0, 0, first_use.reindex(num).fillna(-1).to_numpy(np.int64))
    keep = landing >= 0  # addresses of new users that were never used never landed
    user, slot, num, landing = user[keep], slot[keep], num[keep], landing[keep]
    n = len(user)
    city = u["city"][user]
    spread = np.array([0.06, 0.03, 0.05, 0.06])[slot]
    lat = np.array([c[1] for c in CITIES])[city] + rng.normal(0, 1, n) * spread
    lon = np.array([c[2] for c in CITIES])[city] + rng.normal(0, 1, n) * spread * 1.2
    picks = rng.integers(0, 10**6, (n, 6))
    contact = rng.random(n) < 0.35
    text = []
    for i in range(n):
        name, districts = CITIES[city[i]][0], CITIES[city[i]][4]
        p = picks[i]
        where = f"{name}市{districts[p[0] % len(districts)]}{STREETS[p[1] % len(STREETS)]}{1 + p[2] % 300}号"
        detail = (
            f"{COMMUNITIES[p[3] % len(COMMUNITIES)]}{1 + p[4] % 30}栋{1 + p[5] % 4}单元{1 + p[5] % 28}0{1 + p[4] % 4}室",
            f"{TOWERS[p[3] % len(TOWERS)]}大厦{'ABC'[p[4] % 3]}座{2 + p[5] % 40}层",
            f" {name}{UNIVERSITIES[p[3] % len(UNIVERSITIES)]}{1 + p[4] % 12}号宿舍楼",
            OTHER_PLACES[p[3] % len(OTHER_PLACES)],
        )[slot[i]]
        who = f" {u['name'][user[i]]} {u['phone'][user[i]]}" if contact[i] else ""
        text.append(where + detail + who)
    return {
        "num": num,
        "uid": u["gidx"][user],
        "text": np.array(text, dtype=object),
        "lat": np.round(lat * 1e6).astype(np.int64),
        "lon": np.round(lon * 1e6).astype(np.int64),
        "poi": np.array([w.poi.index(p) for p in SLOT_POI])[slot],
        "city": np.where(rng.random(n) < 0.1, -1, city),
        "landing": landing,
        "dirt": np.where(u["is_test"][user], TEST, CLEAN).astype(np.int8),
    }


def _landed(w: _World, rec: dict) -> dict:
    """Give timed records their landing date (their business date) and drop those after the window."""
    rec["landing"] = (rec["ts"] - w.day0_ms) // DAY_MS
    return _take(rec, np.flatnonzero(rec["landing"] < w.days))


def _add_dirt(rng, w: _World, rec: dict, rates: dict[int, float]) -> dict:
    """Spoil a small share of the clean records: one kind per record, chosen by a single draw."""
    n = len(rec["landing"])
    kinds = np.array(list(rates) + [CLEAN])
    pick = kinds[np.searchsorted(np.cumsum(list(rates.values())), rng.random(n), side="right")]
    dirt = np.where(rec["dirt"] == CLEAN, pick, rec["dirt"]).astype(np.int8)
    rec["arg"] = rng.integers(0, 2**31 - 1, n)  # picks the field or cut point when the line is spoiled
    last = w.days - 1

    lag = rng.integers(1, 4, n)
    late = dirt == LATE
    dirt[late & (rec["landing"] + lag > last)] = CLEAN  # would land after the window: stays on time
    rec["landing"] = np.where(dirt == LATE, rec["landing"] + lag, rec["landing"])
    if "ts" in rec:
        rec["ts"] = np.where(dirt == FUTURE, rec["ts"] + rng.integers(2 * DAY_MS, 10 * DAY_MS, n), rec["ts"])

    # events are re-sent the same day and the next; orders 1-2 days later
    resend = {DUP_EVENT: (np.zeros(n, np.int64), np.ones(n, np.int64)), DUP_ORDER: (rng.integers(1, 3, n),)}
    copies = []
    for code, shifts in resend.items():
        dup = np.flatnonzero(dirt == code)
        dirt[dup] = CLEAN  # the original is clean; its copies are the duplicates
        for shift in shifts:
            kept = dup[rec["landing"][dup] + shift[dup] <= last]
            copy = _take(rec, kept)
            copy["landing"] = copy["landing"] + shift[kept]
            copy["dirt"] = np.full(len(kept), code, np.int8)
            copies.append(copy)
    rec["dirt"] = dirt
    return _concat([rec] + copies)


def _truth_table(w: _World, u: dict) -> pa.Table:
    """The latent traits and outcomes of the block's users, one row each."""
    has = u["has_addr"]
    churn = u["churn_day"] < np.iinfo(np.int32).max
    columns = {
        "user_id": _user_id_strings(u["gidx"]),
        "is_test_account": u["is_test"],
        "true_gender": np.where(u["female"], "F", "M"),
        "birth_year": u["birth_year"],
        "occupation": np.array(OCCUPATIONS)[u["occupation"]],
        "city": np.array([c[0] for c in CITIES])[u["city"]],
        "channel": np.array(list(CHANNELS) + [TEST_CHANNEL])[u["channel"]],
        "registered_at": pa.array(w.day0_ms + u["reg_day"] * DAY_MS + u["reg_sec"] * 1000, pa.timestamp("ms", tz=TIME_ZONE)),
        "is_potential": u["potential"],
        "device_ids": pa.array([[f"d{d}" for d in devs[:k]] for devs, k in zip(u["devices"], u["n_dev"])], pa.list_(pa.string())),
    }
    for slot, name in enumerate(("home", "office", "school", "other")):
        columns[f"{name}_address_id"] = pa.array([f"a{a:09d}" for a in u["addr_num"][:, slot]], mask=~has[:, slot])
    columns["activity"] = u["activity"]
    for i, line in enumerate(w.lines):
        columns[f"intensity_{line}"] = u["intensity"][:, i]
    for k, cat in enumerate(w.salad_cats):
        columns[f"taste_{cat}"] = u["taste"][:, k]
    for m in w.media:
        for k, genre in enumerate(w.contract.categories[w.lines[m]]):
            columns[f"interest_{w.lines[m]}_{genre}"] = u["interest"][m][:, k]
    columns |= {
        "price_sensitivity": u["price_sens"],
        "discount_sensitivity": u["discount_sens"],
        "delivery_slowness": u["slowness"],
        "churn_hazard": u["hazard"],
        "p_churn_true": 1 - (1 - u["hazard"]) ** LABEL_DAYS,
        "churn_date": _window_dates(w, u["churn_day"]),
        "churns_after_last_day": churn & (u["churn_day"] > w.days - 1),
    }
    for effect in w.campaign_effects:
        columns[f"treated_{effect.campaign}"] = u[f"treated_{effect.campaign}"]
        columns[f"hazard_reduction_{effect.campaign}"] = np.full(u["n"], effect.hazard_reduction)
        columns[f"first_order_after_{effect.campaign}"] = _window_dates(w, u[f"first_order_after_{effect.campaign}"])
        columns[f"first_order_untreated_{effect.campaign}"] = _window_dates(w, u[f"first_order_untreated_{effect.campaign}"])
    return pa.table(columns)


def _window_dates(w: _World, days: np.ndarray) -> pa.Array:
    """Day numbers of the window (from day0; int32 max: never) as dates, null for never."""
    known = days < np.iinfo(np.int32).max
    return pa.array(np.where(known, (w.day0 - EPOCH).days + days, 0).astype(np.int32), mask=~known).cast(pa.date32())


# --------------------------------------------------------------------------- rendering and writing


class _Tally:
    def __init__(self):
        self.records: dict[str, int] = {}
        self.dirt = np.zeros(len(DIRT_KINDS) + 1, np.int64)
        self.files = self.bytes = 0


def _write_chunk(w: _World, landing: str, source: str, rec: dict, chunk: int, tally: _Tally) -> None:
    """One part file per landing date of this chunk; lines keep the (block, ts) order."""
    order = np.argsort(rec["landing"], kind="stable")
    bounds = np.searchsorted(rec["landing"][order], np.arange(w.days + 1))
    render = {
        "events": _render_events,
        "orders": _render_orders,
        "users": _render_users,
        "addresses": _render_addresses,
        "consent": _render_consent,
    }[source]
    for day in range(w.days):
        if bounds[day] == bounds[day + 1]:
            continue
        part = _take(rec, order[bounds[day] : bounds[day + 1]])
        lines = _spoil_lines(w, source, render(w, part), part["dirt"], part["arg"])
        folder = storage.join(landing, source, f"dt={w.day0 + timedelta(days=day)}")
        text = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n")[0].as_buffer()
        with storage.open_write(storage.join(folder, f"part-{chunk:05d}.jsonl")) as handle:  # streamed, no local copy
            handle.write(text)
            handle.write(b"\n")
        tally.files += 1
        tally.bytes += text.size + 1
        tally.records[source] = tally.records.get(source, 0) + len(lines)
        tally.dirt += np.bincount(part["dirt"], minlength=len(tally.dirt))


def _write_empty_days(w: _World, landing: str, tally: _Tally) -> None:
    """An empty file for each source and date without records: upstream says "nothing today" (a missing file fails clean)."""
    for source in SOURCES:
        for day in range(w.days):
            folder = storage.join(landing, source, f"dt={w.day0 + timedelta(days=day)}")
            if not storage.list_dir(folder):
                storage.write_bytes(storage.join(folder, "part-00000.jsonl"), b"")
                tally.files += 1


def _render_events(w: _World, e: dict) -> pa.Array:
    return _object(
        [
            ("event_id", _prefixed("e", e["num"])),
            ("user_id", _user_ids(e["uid"])),
            ("device_id", _prefixed("d", e["device"])),
            ("event_type", w.q["event_type"].take(e["etype"])),
            ("ts", _timestamps(e["ts"], e["iso"])),
            ("product_line", w.q["line"].take(e["line"])),
        ],
        tail=_event_props(w, e),
    )


def _event_props(w: _World, e: dict) -> pa.Array:
    """The ``,"props":{...}`` tail of each event, built per props shape and put back in order."""

    def order_id(x):
        return _prefixed("o", x["order"])

    shapes = {
        P_NONE: lambda x: pa.array([""]).take(np.zeros(len(x["shape"]), np.int64)),
        P_SKU: lambda x: [',"props":{"sku":', w.q["sku"].take(x["sku"]), ',"category":', w.q["cat"].take(w.sku_cat[x["sku"]]), "}"],
        P_QUERY: lambda x: [',"props":{"query":', w.q["query"].take(x["query"]), "}"],
        P_MEDIA: lambda x: [
            ',"props":{"item_id":',
            w.q["item"].take(x["genre"]),
            pc.utf8_lpad(_text(x["item"]), width=4, padding="0"),
            '","genre":',
            w.q["cat"].take(x["genre"]),
            ',"seconds":',
            _text(x["seconds"]),
            "}",
        ],
        P_AMOUNT: lambda x: [',"props":{"order_id":', order_id(x), ',"amount":', _decimal(x["money"], 2), "}"],
        P_RATING: lambda x: [',"props":{"order_id":', order_id(x), ',"rating":', _text(x["rating"]), "}"],
        P_WAIT: lambda x: [',"props":{"order_id":', order_id(x), ',"wait_minutes":', _text(x["wait"]), "}"],
    }
    parts, positions = [], []
    for shape, build in shapes.items():
        idx = np.flatnonzero(e["shape"] == shape)
        if len(idx):
            built = build(_take(e, idx))
            parts.append(built if isinstance(built, pa.Array) else _join(built))
            positions.append(idx)
    return pa.concat_arrays(parts).take(np.argsort(np.concatenate(positions)))


def _render_orders(w: _World, o: dict) -> pa.Array:
    items = None
    for j in range(MAX_ITEMS):
        present = o["item_sku"][:, j] >= 0
        entry = _join(
            [
                "{" if j == 0 else ",{",
                '"sku":',
                w.q["sku"].take(np.maximum(o["item_sku"][:, j], 0)),
                ',"category":',
                w.q["cat"].take(np.maximum(o["item_cat"][:, j], 0)),
                ',"qty":',
                _text(o["item_qty"][:, j]),
                ',"price":',
                _decimal(o["item_price"][:, j], 2),
                "}",
            ]
        )
        entry = pc.if_else(pa.array(present), entry, "")
        items = entry if items is None else _join([items, entry])
    address = pa.array(np.maximum(o["address"], 0), mask=o["address"] < 0)
    return _object(
        [
            ("order_id", _prefixed("o", o["num"])),
            ("user_id", _user_ids(o["uid"])),
            ("ts", _timestamps(o["ts"], o["iso"])),
            ("amount", _decimal(o["amount"], 2)),
            ("coupon_amount", _decimal(o["coupon"], 2)),
            ("items", _join(["[", items, "]"])),
            ("address_id", pc.fill_null(_join(['"a', pc.utf8_lpad(_text(address), width=9, padding="0"), '"']), "null")),
            ("product_line", w.q["line"].take(o["line"])),
            ("status", w.q["status"].take(o["status"])),
        ]
    )


def _render_users(w: _World, r: dict) -> pa.Array:
    birth = pa.array(r["birth_year"], mask=r["birth_year"] < 0)
    return _object(
        [
            ("user_id", _user_ids(r["uid"])),
            ("name", _quote(r["name"])),
            ("gender", _coded(w.q["gender"], r["gender"])),
            ("birth_year", pc.fill_null(_text(birth), "null")),
            ("registered_at", _timestamps(r["ts"], r["iso"])),
            ("channel", w.q["channel"].take(r["channel"])),
            ("city", _coded(w.q["city"], r["city"])),
            ("phone", _quote(r["phone"])),
        ]
    )


def _render_consent(w: _World, c: dict) -> pa.Array:
    channel = _quoted(list(CONSENT_CHANNELS)).take(c["channel"])
    status = pc.if_else(pa.array(c["granted"]), '"granted"', '"withdrawn"')
    key = _join(
        ['"c', _user_id_strings(c["uid"]), "-", pc.utf8_lpad(_text(c["landing"]), width=4, padding="0"), "-", _text(c["channel"]), '"']
    )
    return _object(
        [
            ("consent_id", key),
            ("user_id", _user_ids(c["uid"])),
            ("channel", channel),
            ("status", status),
            ("ts", _timestamps(c["ts"], np.ones(len(c["uid"]), bool))),
        ]
    )


def _render_addresses(w: _World, a: dict) -> pa.Array:
    return _object(
        [
            ("address_id", _join(['"a', pc.utf8_lpad(_text(a["num"]), width=9, padding="0"), '"'])),
            ("user_id", _user_ids(a["uid"])),
            ("text", _quote(a["text"])),
            ("lat", _decimal(a["lat"], 6)),
            ("lon", _decimal(a["lon"], 6)),
            ("poi_type", w.q["poi"].take(a["poi"])),
            ("city", _coded(w.q["city"], a["city"])),
        ]
    )


def _spoil_lines(w: _World, source: str, lines: pa.Array, dirt: np.ndarray, arg: np.ndarray) -> pa.Array:
    """Break the few lines marked malformed / missing field / wrong type / unknown event type."""
    idx = np.flatnonzero(np.isin(dirt, LINE_DIRT))
    if not len(idx):
        return lines
    spec = w.contract.sources[source]
    required = w.contract.required(source)
    spoiled = []
    for i in idx:
        line, a = lines[int(i)].as_py(), int(arg[i])
        if dirt[i] == MALFORMED:
            spoiled.append(line[: len(line) * (30 + a % 60) // 100])
            continue
        record = json.loads(line)
        if dirt[i] == MISSING:
            name = required[a % len(required)]
            if a // 1000 % 2:
                record[name] = None
            else:
                del record[name]
        elif dirt[i] == WRONG_TYPE:
            names = [f for f in spec["fields"] if f != spec["key"] and record.get(f) is not None]
            name = names[a % len(names)]
            record[name] = WRONG_VALUES[spec["fields"][name]["type"]]
        else:
            record["event_type"] = UNKNOWN_EVENT_TYPES[a % len(UNKNOWN_EVENT_TYPES)]
        spoiled.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    mask = np.zeros(len(lines), bool)
    mask[idx] = True
    return pc.replace_with_mask(lines, pa.array(mask), pa.array(spoiled, pa.string()))


# JSON fragments: each helper returns one string per row, already JSON-encoded.


def _object(pairs: list[tuple[str, pa.Array]], tail: pa.Array | None = None) -> pa.Array:
    pieces: list = []
    for i, (name, value) in enumerate(pairs):
        pieces += [("{" if i == 0 else ",") + f'"{name}":', value]
    return _join(pieces + ([tail] if tail is not None else []) + ["}"])


def _join(pieces: list) -> pa.Array:
    return pc.binary_join_element_wise(*pieces, "")


def _text(values) -> pa.Array:
    return pc.cast(pa.array(values) if not isinstance(values, pa.Array) else values, pa.string())


def _quoted(words: list[str]) -> pa.Array:
    return pa.array([json.dumps(word, ensure_ascii=False) for word in words])


def _quote(values: np.ndarray) -> pa.Array:
    """Free text as JSON strings (null stays null)."""
    text = pa.array(values, pa.string())
    text = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
    return pc.fill_null(_join(['"', text, '"']), "null")


def _coded(table: pa.Array, codes: np.ndarray) -> pa.Array:
    """A quoted vocabulary entry per code, null where the code is negative."""
    return pc.fill_null(table.take(pa.array(np.maximum(codes, 0), mask=codes < 0)), "null")


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    return _join([f'"{prefix}', _text(numbers), '"'])


def _user_ids(gidx: np.ndarray) -> pa.Array:
    ids = pa.array(gidx + 1, mask=gidx < 0)
    return pc.fill_null(_join(['"u', pc.utf8_lpad(_text(ids), width=8, padding="0"), '"']), "null")


def _user_id_strings(gidx: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise("u", pc.utf8_lpad(_text(gidx + 1), width=8, padding="0"), "")


def _decimal(units: np.ndarray, digits: int) -> pa.Array:
    """Non-negative fixed-point integers as JSON numbers the way Python prints them (45.0, 45.5, 39.98345)."""
    scale = 10**digits
    frac = pc.utf8_rtrim(pc.utf8_lpad(_text(units % scale), width=digits, padding="0"), characters="0")
    frac = pc.if_else(pc.equal(frac, ""), "0", frac)
    return _join([_text(units // scale), ".", frac])


_TWO_DIGITS = pa.array([f"{i:02d}" for i in range(60)])


def _timestamps(ms: np.ndarray, iso: np.ndarray) -> pa.Array:
    """ISO-8601 strings with +08:00 (to the second) or epoch milliseconds, per row."""
    local = ms + OFFSET_MS
    days, day_index = np.unique(local // DAY_MS, return_inverse=True)
    dates = pa.array([str(EPOCH + timedelta(days=int(d))) for d in days]).take(day_index)
    sec = (local % DAY_MS) // 1000
    text = _join(
        ['"', dates, "T", _TWO_DIGITS.take(sec // 3600), ":", _TWO_DIGITS.take(sec // 60 % 60), ":", _TWO_DIGITS.take(sec % 60), '+08:00"']
    )
    return pc.if_else(pa.array(iso), text, _text(ms))


# --------------------------------------------------------------------------- small helpers


def _take(rec: dict, idx) -> dict:
    return {k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in rec.items()}


def _concat(recs: list[dict]) -> dict:
    return {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}


def _norm(weights) -> np.ndarray:
    weights = np.asarray(weights, float)
    return weights / weights.sum()


def _pick(rng, probs: np.ndarray) -> np.ndarray:
    """One draw per row from a matrix of (unnormalised) row probabilities."""
    cum = np.cumsum(probs, axis=1)
    draw = rng.random(len(probs))[:, None] * cum[:, -1:]
    return np.minimum((draw > cum).sum(axis=1), probs.shape[1] - 1)


def _tier_weights(price_sens: np.ndarray) -> np.ndarray:
    """Price-sensitive users pick cheap skus; insensitive ones lean to premium."""
    slope = 3.0 * price_sens - 1.2
    return np.exp(-2 * slope[:, None] * np.arange(SKU_TIERS)[None, :] / (SKU_TIERS - 1))
