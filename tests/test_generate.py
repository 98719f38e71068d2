"""The synthetic landing-zone generator: deterministic, streaming, on contract, dirty on purpose, learnable.

Everything here reads the generated files the way a cleaner would (json per
line, the contract from conf/landing.yaml) and never the generator's internals,
so a count that matches the summary is an independent check.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml

from portrait.devtools.generate import COMMON_GIVEN_NAME_SHARE, COMMON_GIVEN_NAMES, DIRT_KINDS, DirtRates, generate, read_truth

CONTRACT = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "landing.yaml").read_text(encoding="utf-8"))
SOURCES = CONTRACT["sources"]
SHANGHAI = timezone(timedelta(hours=8))
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$")
BOT_LIMIT = 300  # conf/pipeline.yaml clean.bot_events_per_device_per_day
FUTURE_TOLERANCE = timedelta(minutes=60)  # conf/pipeline.yaml clean.future_tolerance_minutes
# Small lakes need higher rates for every kind to show up.
DIRTY = DirtRates(
    malformed_json=0.004,
    missing_field=0.004,
    wrong_type=0.004,
    unknown_event_type=0.004,
    duplicate_event=0.004,
    duplicate_order=0.01,
    late_arrival=0.005,
    future_timestamp=0.004,
    bot_device=0.01,
    test_account=0.02,
)
SMALL = dict(users=300, days=10, seed=11, end_date="2026-07-10", dirt=DIRTY)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    lake = tmp_path_factory.mktemp("small")
    return lake, generate(lake, **SMALL)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """Enough users and a window from May to September for the behavioural checks."""
    lake = tmp_path_factory.mktemp("medium")
    return lake, generate(lake, users=4000, days=150, seed=5, end_date="2026-09-30")


def lake_files(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*")) if p.is_file()}


def landing_lines(lake: Path, source: str):
    """(landing date, line) in folder and part order: the order a cleaner reads them."""
    for folder in sorted((lake / "landing" / source).glob("dt=*")):
        for part in sorted(folder.glob("*.jsonl")):
            for line in part.read_text(encoding="utf-8").splitlines():
                yield date.fromisoformat(folder.name[3:]), line


def parse(line: str) -> dict | None:
    """A line as a dict, None when it is not a JSON object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def instant(ts) -> datetime:
    return datetime.fromtimestamp(ts / 1000, SHANGHAI) if isinstance(ts, int) else datetime.fromisoformat(ts)


def business_date(ts) -> date:
    return instant(ts).date()


def type_ok(value, declared: str) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "string": isinstance(value, str),
        "long": isinstance(value, int) and not isinstance(value, bool),
        "double": number,
        "boolean": isinstance(value, bool),
        "timestamp": (isinstance(value, str) and bool(ISO.match(value))) or (isinstance(value, int) and not isinstance(value, bool)),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }[declared]


def contract_problem(source: str, record) -> str | None:
    """The dirt kind a line's content shows against the contract, None if it is on contract."""
    if record is None:
        return "malformed_json"
    fields = SOURCES[source]["fields"]
    if any(decl.get("required") and record.get(name) is None for name, decl in fields.items()):
        return "missing_field"
    if any(record.get(name) is not None and not type_ok(record[name], decl["type"]) for name, decl in fields.items()):
        return "wrong_type"
    for name, decl in fields.items():
        if "values" in decl and record.get(name) is not None and record[name] not in decl["values"]:
            assert name == "event_type", f"only event types are spoiled with unknown values, got {name}={record[name]!r}"
            return "unknown_event_type"
    return None


def audit(lake: Path) -> tuple[Counter, dict[str, list]]:
    """Classify every landed line independently: dirt counts per kind, and the valid records per source."""
    dirt, valid = Counter(), defaultdict(list)
    for source in ("users", "addresses", "events", "orders", "consent"):
        key, seen = SOURCES[source]["key"], set()
        for dt, line in landing_lines(lake, source):
            record = parse(line)
            problem = contract_problem(source, record)
            if problem:
                dirt[problem] += 1
                continue
            record["_dt"] = dt
            if source in ("events", "orders"):
                if record[key] in seen:
                    dirt[f"duplicate_{source[:-1]}"] += 1
                    continue
                seen.add(record[key])
            valid[source].append(record)
    tests = {r["user_id"] for r in valid["users"] if r["channel"] == "internal_test"}
    dirt["test_account"] = sum(1 for rows in valid.values() for r in rows if r.get("user_id") in tests)
    per_device = Counter((r["_dt"], r["device_id"]) for r in valid["events"])
    bots = {k for k, n in per_device.items() if n > BOT_LIMIT}
    dirt["bot_device"] = sum(1 for r in valid["events"] if (r["_dt"], r["device_id"]) in bots)
    for source in ("events", "orders"):
        for r in valid[source]:
            if r.get("user_id") in tests or (r["_dt"], r.get("device_id")) in bots:
                continue
            end_of_day = datetime.combine(r["_dt"] + timedelta(days=1), datetime.min.time(), SHANGHAI)
            if business_date(r["ts"]) < r["_dt"]:
                dirt["late_arrival"] += 1
            elif instant(r["ts"]) > end_of_day + FUTURE_TOLERANCE:
                dirt["future_timestamp"] += 1
    return dirt, valid


# --------------------------------------------------------------------------- determinism and streaming


def test_same_seed_gives_identical_files_and_another_seed_does_not(small, tmp_path):
    lake, _ = small
    first = lake_files(lake)
    generate(tmp_path / "again", **SMALL)
    assert lake_files(tmp_path / "again") == first
    generate(tmp_path / "other", **{**SMALL, "seed": SMALL["seed"] + 1})
    other = lake_files(tmp_path / "other")
    events = [name for name in first if name.startswith("landing/events/")]
    assert events and all(other.get(name) != first[name] for name in events)
    assert other["truth/users.parquet"] != first["truth/users.parquet"]


def test_rerun_replaces_previous_output(small, tmp_path):
    """A rerun with fewer chunks must not leave part files of the earlier run behind."""
    lake = tmp_path / "lake"
    generate(lake, users=2100, days=3, seed=1, chunk_users=1000)
    generate(lake, users=300, days=3, seed=1)
    assert {p.name for p in (lake / "landing").rglob("*.jsonl")} == {"part-00000.jsonl"}
    assert len(read_truth(lake)) == 300


def test_chunk_size_changes_part_files_but_never_the_lines(tmp_path):
    """Blocks of users, not chunks, key the random streams: streaming in chunks is invisible in the data."""
    args = dict(users=2500, days=5, seed=3, end_date="2026-07-10", dirt=DIRTY)
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    one = generate(whole, **args)
    three = generate(chunked, **args, chunk_users=1000)
    assert {p.name for p in (chunked / "landing" / "events").rglob("*.jsonl")} == {
        "part-00000.jsonl",
        "part-00001.jsonl",
        "part-00002.jsonl",
    }
    for source in SOURCES:
        assert list(landing_lines(whole, source)) == list(landing_lines(chunked, source)), source
    pd.testing.assert_frame_equal(read_truth(whole), read_truth(chunked))
    assert (one.records, one.dirt) == (three.records, three.dirt)


def test_progress_is_reported(tmp_path):
    calls = []
    generate(tmp_path, users=1500, days=2, progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert ("simulate users", 1500, 1500) in calls and ("write landing", 1500, 1500) in calls and ("write truth", 1, 1) in calls


# --------------------------------------------------------------------------- the contract


def test_layout_and_valid_lines_follow_the_contract(small):
    lake, summary = small
    first, last = date(2026, 7, 1), date(2026, 7, 10)
    assert (summary.first_date, summary.last_date) == (first, last)
    folders = {p.name for p in (lake / "landing" / "events").iterdir()}
    assert folders == {f"dt={first + timedelta(days=d)}" for d in range(10)}
    assert all(re.fullmatch(r"part-\d{5}\.jsonl", p.name) for p in (lake / "landing").rglob("*") if p.is_file())

    _, valid = audit(lake)
    categories = CONTRACT["categories"]
    for source, rows in valid.items():
        for r in rows:
            assert contract_problem(source, r) is None
    forms = Counter(type(r["ts"]).__name__ for r in valid["events"])
    assert forms["str"] and forms["int"] and 0.2 < forms["int"] / sum(forms.values()) < 0.4

    props_keys = {
        "view": ({"sku", "category"}, {"item_id", "genre", "seconds"}),
        "click": ({"sku", "category"},),
        "add_cart": ({"sku", "category"},),
        "search": ({"query"},),
        "order": ({"order_id", "amount"},),
        "review": ({"order_id", "rating"},),
        "delivery": ({"order_id", "wait_minutes"},),
        "refund": ({"order_id", "amount"},),
        "play": ({"item_id", "genre", "seconds"},),
    }
    for e in valid["events"]:
        if e["event_type"] in props_keys:
            assert set(e["props"]) in props_keys[e["event_type"]], e
            if "category" in e["props"]:
                assert e["props"]["category"] in categories["salad"]
            if "genre" in e["props"]:
                assert e["props"]["genre"] in categories[e["product_line"]]
            if e["event_type"] == "review":
                assert 1 <= e["props"]["rating"] <= 5
        else:
            assert "props" not in e
    assert {e["event_type"] for e in valid["events"]} >= set(SOURCES["events"]["fields"]["event_type"]["values"])

    for o in valid["orders"]:
        assert o["items"] and all(set(i) == {"sku", "category", "qty", "price"} for i in o["items"])
        assert o["amount"] == pytest.approx(sum(i["qty"] * i["price"] for i in o["items"]) - o["coupon_amount"]) and o["amount"] >= 0
        if o["product_line"] == "salad":
            assert o["address_id"] and all(25 <= i["price"] <= 60 and i["category"] in categories["salad"] for i in o["items"])
    assert {a["poi_type"] for a in valid["addresses"]} == set(SOURCES["addresses"]["fields"]["poi_type"]["values"])
    assert any(re.search(r" 1[3-9]\d{9}$", a["text"]) for a in valid["addresses"])  # some addresses carry a phone number


def test_every_dirt_kind_is_present_and_counted(small):
    lake, summary = small
    dirt, _ = audit(lake)
    assert set(summary.dirt) == set(DIRT_KINDS)
    assert dict(dirt) == summary.dirt
    assert all(n > 0 for n in summary.dirt.values()), summary.dirt
    assert sum(1 for _ in landing_lines(lake, "events")) == summary.records["events"]


def test_duplicates_land_the_same_day_and_later(small):
    lake, _ = small
    days = defaultdict(list)
    for dt, line in landing_lines(lake, "events"):
        days[(parse(line) or {}).get("event_id")].append(dt)
    days.pop(None, None)
    gaps = {(d[1] - d[0]).days for d in days.values() if len(d) > 1} | {(d[2] - d[0]).days for d in days.values() if len(d) > 2}
    assert gaps == {0, 1}


def test_anonymous_devices_log_in_later(small):
    """Anonymous events (bots aside) are followed by a login on their device within three days (identity stitching)."""
    _, valid = audit(small[0])
    logins = defaultdict(list)
    for e in valid["events"]:
        if e["event_type"] == "login":
            logins[e["device_id"]].append(instant(e["ts"]))
    busy = Counter((e["_dt"], e["device_id"]) for e in valid["events"])
    bots = {device for (_, device), n in busy.items() if n > BOT_LIMIT}
    settled = small[1].last_date - timedelta(days=3)  # later logins may fall after the window
    anonymous = [e for e in valid["events"] if e["user_id"] is None and e["device_id"] not in bots and e["_dt"] <= settled]
    stitched = [any(timedelta(0) <= t - instant(e["ts"]) <= timedelta(hours=72) for t in logins[e["device_id"]]) for e in anonymous]
    assert anonymous and sum(stitched) / len(stitched) > 0.95  # the rest: the login line was spoiled


# --------------------------------------------------------------------------- truth and traits


def test_truth_has_one_row_per_user_within_range(small):
    lake, summary = small
    truth = read_truth(lake)
    assert len(truth) == SMALL["users"] and truth["user_id"].is_unique
    landed = {(parse(line) or {}).get("user_id") for _, line in landing_lines(lake, "users")} - {None}
    assert len(landed) > 0.9 * SMALL["users"] and landed <= set(truth["user_id"])
    assert set(truth["true_gender"]) == {"M", "F"} and set(truth["occupation"]) <= {"white_collar", "student", "other"}
    taste = truth.filter(like="taste_")
    assert list(taste.columns) == [f"taste_{c}" for c in CONTRACT["categories"]["salad"]]
    assert (taste.sum(axis=1) - 1).abs().max() < 1e-9
    for column in ("price_sensitivity", "discount_sensitivity", "p_churn_true", *taste.columns):
        assert truth[column].between(0, 1).all(), column
    after = truth[truth["churns_after_last_day"]]
    assert (after["churn_date"] > summary.last_date).all() and (after["churn_date"] <= summary.last_date + timedelta(days=30)).all()
    assert truth.loc[truth["is_potential"], "churn_date"].isna().all()
    assert 0.05 < truth["is_potential"].mean() < 0.16
    assert truth["is_test_account"].sum() == summary.test_accounts
    assert truth.loc[truth["occupation"] == "white_collar", "office_address_id"].notna().all()
    assert truth.loc[truth["occupation"] == "student", "school_address_id"].notna().all()


def test_names_are_drawn_from_ngender_characters_or_whole_by_true_gender(small):
    import ngender

    chars = set(pd.read_csv(importlib.resources.files("ngender") / "charfreq.csv", dtype={"char": str})["char"])
    truth = read_truth(small[0])
    users = {}
    for _, line in landing_lines(small[0], "users"):
        record = parse(line)
        if contract_problem("users", record) is None:
            users.setdefault(record["user_id"], record)
    people = truth[~truth["is_test_account"] & truth["user_id"].isin(users)]
    names = people["user_id"].map(lambda u: users[u]["name"])
    assert names.str.len().between(2, 3).all()
    assert all(set(name[1:]) <= chars for name in names)
    whole = names.str[1:].isin(list(COMMON_GIVEN_NAMES)).mean()  # common names recur whole (surnames here are one character)
    assert COMMON_GIVEN_NAME_SHARE / 2 < whole < COMMON_GIVEN_NAME_SHARE * 2
    guessed = names.map(lambda name: "M" if ngender.guess(name)[0] == "male" else "F")
    assert (guessed == people["true_gender"]).mean() > 0.7
    reported = people["user_id"].map(lambda u: users[u].get("gender"))
    assert 0.3 < reported.isna().mean() < 0.5
    wrong = (reported.notna() & (reported != people["true_gender"])).mean()
    assert 0.01 < wrong < 0.12


# --------------------------------------------------------------------------- behaviour depends on traits


@pytest.fixture(scope="module")
def medium_orders(medium) -> pd.DataFrame:
    """Valid, unique, non-skewed salad orders of the medium lake with their business date."""
    rows, seen = [], set()
    for dt, line in landing_lines(medium[0], "orders"):
        o = parse(line)
        if contract_problem("orders", o) or o["order_id"] in seen or o["product_line"] != "salad" or business_date(o["ts"]) > dt:
            continue
        seen.add(o["order_id"])
        rows.append(
            {
                "user_id": o["user_id"],
                "day": pd.Timestamp(business_date(o["ts"])),
                "coupon": o["coupon_amount"] > 0,
                "price": sum(i["price"] * i["qty"] for i in o["items"]) / sum(i["qty"] for i in o["items"]),
            }
        )
    return pd.DataFrame(rows)


def test_churners_order_less_in_the_30_days_before_churn_then_stop(medium, medium_orders):
    lake, summary = medium
    truth = read_truth(lake).set_index("user_id")
    orders = medium_orders.join(truth[["churn_date", "registered_at"]], on="user_id")
    start = pd.Timestamp(summary.first_date)
    churners = truth[
        (pd.to_datetime(truth["churn_date"]) >= start + pd.Timedelta(days=60))
        & (pd.to_datetime(truth["churn_date"]) <= pd.Timestamp(summary.last_date))
        & (truth["registered_at"].dt.tz_localize(None) < start)
    ]
    assert len(churners) > 150
    mine = orders[orders["user_id"].isin(churners.index)]
    before = (pd.to_datetime(mine["churn_date"]) - mine["day"]).dt.days
    last_30, earlier_30 = (before.between(1, 30)).sum(), (before.between(31, 60)).sum()
    assert earlier_30 > 100 and last_30 < 0.6 * earlier_30
    assert (before <= 0).sum() == 0  # no orders from the churn date on


def test_churners_get_slower_deliveries_and_worse_reviews_before_churning(medium):
    """Reviews and deliveries in the 30 days before a churn date, against those of users who stay."""
    lake, _ = medium
    churn_date = read_truth(lake).set_index("user_id")["churn_date"]
    bad, wait = defaultdict(list), defaultdict(list)
    for _, line in landing_lines(lake, "events"):
        if '"review"' not in line and '"delivery"' not in line:
            continue
        e = parse(line)
        if contract_problem("events", e) or e["user_id"] not in churn_date.index:
            continue
        churn = churn_date[e["user_id"]]
        if pd.isna(churn):
            group = "stays"
        elif 0 < (churn - business_date(e["ts"])).days <= 30:
            group = "leaving"
        else:
            continue
        if e["event_type"] == "review":
            bad[group].append(e["props"]["rating"] <= 2)
        if e["event_type"] == "delivery":
            wait[group].append(e["props"]["wait_minutes"])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(bad["leaving"]) > 1.5 * mean(bad["stays"])
    assert mean(wait["leaving"]) > 1.15 * mean(wait["stays"])


def test_students_order_less_in_the_summer_holiday(medium, medium_orders):
    truth = read_truth(medium[0])
    students = set(truth.loc[truth["occupation"] == "student", "user_id"])
    orders = medium_orders
    month = orders.loc[orders["user_id"].isin(students), "day"].dt.month.value_counts()
    per_day = {m: month.get(m, 0) / days for m, days in ((6, 30), (7, 31), (8, 31), (9, 30))}
    assert per_day[7] < 0.5 * per_day[6] and per_day[8] < 0.5 * per_day[6]
    assert per_day[9] > 2 * per_day[8]  # back at school in September


def test_sensitivities_show_in_prices_and_coupons(medium, medium_orders):
    truth = read_truth(medium[0]).set_index("user_id")
    per_user = medium_orders.groupby("user_id").agg(price=("price", "mean"), coupon=("coupon", "mean"), n=("price", "size"))
    per_user = per_user[per_user["n"] >= 3].join(truth)
    assert per_user["price"].corr(per_user["price_sensitivity"]) < -0.3
    assert per_user["coupon"].corr(per_user["discount_sensitivity"]) > 0.3


def test_taste_drives_the_categories_ordered(medium):
    lake, _ = medium
    truth = read_truth(lake).set_index("user_id")
    favourite = truth.filter(like="taste_").idxmax(axis=1).str.removeprefix("taste_").to_dict()
    hits = Counter()
    for _, line in landing_lines(lake, "orders"):
        o = parse(line)
        if contract_problem("orders", o) is None and o["product_line"] == "salad" and o["user_id"] in favourite:
            hits.update(i["category"] == favourite[o["user_id"]] for i in o["items"])
    assert hits[True] / sum(hits.values()) > 0.5  # a uniform choice would give 0.25


def test_churn_is_learnable_from_sliced_windows(medium, medium_orders):
    """A plain GBM on 10-day window counts before the last day predicts who churns in the next 30 days."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import cross_val_score

    lake, summary = medium
    end = summary.last_date
    features = defaultdict(Counter)
    for dt, line in landing_lines(lake, "events"):
        if not any(f'"{kind}"' in line for kind in ("app_open", "review", "delivery")):
            continue
        e = parse(line)
        if contract_problem("events", e) or e["user_id"] is None or business_date(e["ts"]) > dt:
            continue
        window = min((end - business_date(e["ts"])).days // 10, 3)  # 0-9, 10-19, 20-29, 30+ days before the end
        features[e["user_id"]][f"{e['event_type']}_{window}"] += 1
        if e["event_type"] == "review":
            features[e["user_id"]][f"bad_{window}"] += e["props"]["rating"] <= 2
        if e["event_type"] == "delivery":
            features[e["user_id"]][f"wait_{window}"] += e["props"]["wait_minutes"]
    for user, day in zip(medium_orders["user_id"], medium_orders["day"]):
        features[user][f"orders_{min((end - day.date()).days // 10, 3)}"] += 1
    truth = read_truth(lake).set_index("user_id")
    alive = truth[(truth["churn_date"].isna() | (truth["churn_date"] > end)) & ~truth["is_test_account"]]
    table = pd.DataFrame.from_dict(features, orient="index").reindex(alive.index).fillna(0)
    table = table[table.filter(like="orders_").sum(axis=1) > 0]
    label = alive.loc[table.index, "churns_after_last_day"]
    assert 50 < label.sum() < 0.5 * len(label)
    auc = cross_val_score(GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0), table, label, cv=4, scoring="roc_auc")
    assert auc.mean() >= 0.8, auc
