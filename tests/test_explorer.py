"""The profile explorer and API (`portrait serve`) on one small generated lake, served by a real uvicorn on loopback.

One lake for the module: 200 users x 16 days generated, the history cleaned,
the whole pipeline run for the last three days (so segments have moves and
tags have a history). Accounts are made with `portrait users add`. The
browser tests (marked ``browser``) drive Debian's chromium through
Playwright against the same server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import httpx
import jsonschema
import pytest
import uvicorn
from deltalake import DeltaTable

from portrait.cli import main
from portrait.core.config import Conf
from portrait.explorer import index
from portrait.explorer.app import create_app
from portrait.explorer.lake import Lake
from portrait.master.render import schema

pytestmark = pytest.mark.slow  # the module's lake takes 3-4 minutes to build
CONF = Conf()
END = date(2026, 9, 30)
CHROMIUM = "/usr/bin/chromium"


def _portrait(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "portrait.cli", *args], check=True, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("explorer") / "lake")
    built = os.environ.get("PORTRAIT_EXPLORER_TEST_LAKE")  # while editing: a lake this fixture built before (copied, not changed)
    if built:
        shutil.copytree(built, root, ignore=shutil.ignore_patterns("users.json"))
        return root
    # 16 days: a 30-day window still has orders, and three pipeline dates give history and moves
    _portrait("generate", "--users", "200", "--days", "16", "--end", END.isoformat(), "--lake", root, "--seed", "11")
    _portrait("run", "--date", "2026-09-15", "--until", "2026-09-27", "--to", "clean", "--lake", root)
    _portrait("run", "--date", "2026-09-28", "--until", END.isoformat(), "--lake", root)
    return root


def _cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue().strip()


@pytest.fixture(scope="module")
def tokens(lake) -> dict[str, str]:
    return {role: _cli("users", "add", f"{role}1", "--role", role, "--lake", lake) for role in ("operator", "analyst")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(lake, tokens):
    """`portrait serve`'s app on a free loopback port, serving the index the master stage published."""
    port = _free_port()
    app = create_app(lake, CONF)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "explorer did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    uv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def base(server) -> str:
    return server[0]


def _client(base: str, token: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"} if token else {}, follow_redirects=False, timeout=30)


def _snapshot(lake: str, columns: list[str]) -> list[dict]:
    return (
        DeltaTable(f"{lake}/gold/profile_snapshot").to_pyarrow_table(columns=columns, partitions=[("dt", "=", END.isoformat())]).to_pylist()
    )


@pytest.fixture(scope="module")
def some_user(lake) -> str:
    """A user with a name, an address and orders in the last 30 days."""
    rows = _snapshot(lake, ["user_id", "name", "orders_30d", "common_addresses"])
    picked = [r for r in rows if r["name"] and r["orders_30d"] and r["common_addresses"]]
    return sorted(picked, key=lambda r: (-r["orders_30d"], r["user_id"]))[0]["user_id"]


def _sample_path(path: str, user: str) -> str:
    values = {"user_id": user, "column": "spend_30d", "name": "x.png" if "/plots/" in path else "potential_users"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


# ------------------------------------------------------------------------ access


def test_nothing_answers_without_credentials(server, some_user):
    base, app = server
    paths = sorted({route.path for route in app.routes if "GET" in getattr(route, "methods", set()) and route.path != "/login"})
    assert "/api/profile/{user_id}" in paths and "/users/{user_id}/tags/{column}" in paths and "/api/openapi.json" in paths
    for credentials in (None, "operator1.not-the-token", "nobody.x", "garbage"):
        with _client(base, credentials) as anonymous:
            anonymous.cookies.set("portrait_session", "forged-session-id")
            for path in paths:
                r = anonymous.get(_sample_path(path, some_user))
                if path.startswith("/api/"):
                    assert r.status_code == 401, (path, credentials, r.status_code)
                    assert some_user not in r.text
                else:
                    assert r.status_code == 303 and r.headers["location"] == "/login", (path, credentials, r.status_code)
    with _client(base) as anonymous:
        assert anonymous.get("/login").status_code == 200
        assert anonymous.get("/docs").status_code == 404 and anonymous.get("/openapi.json").status_code == 404


def test_login_session_and_token_rotation(lake, base, tokens):
    with _client(base) as person:
        r = person.post("/login", data={"account": "analyst1", "token": "analyst1.wrong"})
        assert r.headers["location"] == "/login?failed=1" and "portrait_session" not in r.cookies
        r = person.post("/login", data={"account": "analyst1", "token": tokens["analyst"]})
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
        assert person.get("/").status_code == 200
        new = _cli("users", "token", "analyst1", "--lake", lake)  # a new token ends the old one and its sessions
        assert person.get("/").status_code == 303
    with _client(base, tokens["analyst"]) as old, _client(base, new) as fresh:
        assert old.get("/api/segments").status_code == 401
        assert fresh.get("/api/segments").status_code == 200
    tokens["analyst"] = new
    stored = json.loads((Path(lake) / "_explorer" / "users.json").read_text())
    assert new.split(".", 1)[1] not in json.dumps(stored), "tokens are stored hashed only"


def test_users_remove_and_bad_role(lake, base):
    token = _cli("users", "add", "temp", "--role", "analyst", "--lake", lake)
    with _client(base, token) as temp:
        assert temp.get("/api/segments").status_code == 200
        _cli("users", "remove", "temp", "--lake", lake)
        assert temp.get("/api/segments").status_code == 401
    assert main(["users", "add", "x", "--role", "admin", "--lake", lake]) == 1
    assert main(["users", "add", "../x", "--role", "analyst", "--lake", lake]) == 1


def _personal_values(lake: str) -> set[str]:
    values = set()
    for row in _snapshot(lake, ["name", "common_addresses"]):
        if row["name"]:
            values.add(row["name"])
        for a in row["common_addresses"] or []:
            values |= {a["place_name"], f"{a['lat']},{a['lon']}"} - {None}
    return values


def _crawl(client: httpx.Client, user: str) -> dict[str, str]:
    """Every page and endpoint a person or service would open about ``user`` (and the name search)."""
    bodies = {}
    paths = ["/", "/tags", "/tags/name", "/tags/common_addresses", "/tags/city", "/segments", "/runs", "/models"]
    paths += [f"/users/{user}", f"/api/profile/{user}", f"/api/profile/{user}?dt=2026-09-29"]
    columns = ["name", "common_addresses", "common_address_count", "city", "spend_30d", "logins_30d", "p_male", "churn_probability"]
    columns += ["lifecycle_stage", "product_lines"]
    paths += [f"/users/{user}/tags/{c}" for c in columns] + [f"/api/profile/{user}/tags/{c}" for c in columns]
    for path in paths:
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        bodies[path] = r.text
    segments = client.get("/api/segments").json()
    for s in segments:
        r = client.get(f"/segments/{s['name']}?user_id={user}")
        assert r.status_code == 200
        bodies[f"/segments/{s['name']}"] = r.text
    return bodies


def test_restricted_role_sees_no_personal_field_anywhere(lake, base, tokens, some_user):
    personal = _personal_values(lake)
    name = next(r["name"] for r in _snapshot(lake, ["user_id", "name"]) if r["user_id"] == some_user)
    with _client(base, tokens["operator"]) as operator:
        seen = _crawl(operator, some_user)
        assert name in seen[f"/users/{some_user}"] and name in seen[f"/api/profile/{some_user}"]  # the test can fail
        found = operator.get("/users", params={"q": name[1:]}, follow_redirects=True).text
        assert some_user in found, "the operator finds users by name"
    with _client(base, tokens["analyst"]) as analyst:
        seen = _crawl(analyst, some_user)
        searched = analyst.get("/users", params={"q": name}, follow_redirects=True).text
        assert some_user not in searched, "no search by name for the restricted role"
        seen["search"] = searched.replace(name, "")  # the analyst's own query, echoed in the search box
        for path, body in seen.items():
            leaked = [value for value in personal if value in body]
            assert not leaked, f"{path} shows personal values to the analyst: {len(leaked)} of them"
        masked = analyst.get(f"/api/profile/{some_user}").json()
        assert masked["姓名"] is None
        assert all(a["地理名称"] is None and a["经纬度"] is None for a in masked["社会属性"]["常用地址"].values())
        jsonschema.Draft202012Validator(schema(CONF)).validate(masked)


def test_the_profile_fast_path_answers_what_the_route_answers(base, tokens, some_user):
    """api.ProfileFastPath (before FastAPI's routing) and the documented route give the same answers, both roles."""
    for role, token in tokens.items():
        with _client(base, token) as client:
            fast, route = client.get(f"/api/profile/{some_user}"), client.get(f"/api/profile/{some_user}", params={"via": "route"})
            assert fast.status_code == route.status_code == 200 and fast.json() == route.json(), role
            assert fast.headers["content-type"] == "application/json"
            for path in ("/api/profile/nobody", f"/api/profile/{some_user}%0A", f"/api/profile/{some_user}/../x"):
                assert client.get(path).status_code == client.get(path, params={"via": "route"}).status_code != 200, path
    with _client(base, tokens["operator"][:-2] + "xx") as wrong:
        assert wrong.get(f"/api/profile/{some_user}").status_code == 401
    with _client(base) as nobody:
        assert nobody.get(f"/api/profile/{some_user}").status_code == 401


def test_a_user_id_in_a_url_cannot_read_outside_the_lake(lake, base, tokens):
    outside = Path(lake).parent / "secret.png"
    outside.write_bytes(b"\x89PNG outside the lake")
    (Path(lake) / "ops" / "reports").mkdir(parents=True, exist_ok=True)
    attempts = [
        "/api/profile/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/profile/..%2f_explorer%2fusers.json",
        "/api/profile/%2e%2e/tags/spend_30d",
        "/users/..%2F..%2F..%2Fetc%2Fpasswd",
        "/users/....%2F%2Fetc%2Fpasswd/tags/name",
        "/users/u1/tags/..%2F..%2F_explorer%2Fusers.json",
        "/models/plots/..%2F..%2Fsecret.png",
        "/models/plots/..%2F_explorer%2Fusers.json",
        "/models/plots/%2e%2e%2f%2e%2e%2fsecret.png",
        "/segments/..%2F..%2F_explorer/members.csv",
        "/api/segments/..%2F..%2Fetc/count",
    ]
    with _client(base, tokens["operator"]) as client:
        for path in attempts:
            r = client.get(path)
            assert r.status_code in (404, 422), (path, r.status_code)
            assert "outside the lake" not in r.text and "root:" not in r.text and '"hash"' not in r.text, path


def test_query_parameters_are_bound_not_formatted(lake, base, tokens, some_user):
    with _client(base, tokens["operator"]) as client:
        assert client.get("/api/profile/u' OR '1'='1").status_code == 422  # not an id: refused before any query
        everyone = client.get("/users", params={"q": "%"}).text
        assert "0 found" in everyone, "LIKE wildcards in a search are literal"
        assert "0 found" in client.get("/users", params={"q": "' OR 1=1 --"}).text
        r = client.get("/api/count", params={"where": "vip_tier == 'vip') OR (1 = 1"})
        assert r.status_code == 422
        r = client.get("/api/count", params={"where": "vip_tier == 'x'' OR ''1''=''1'"})
        assert r.status_code == 200 and r.json()["count"] == 0, "a quote inside a value stays in the value"
        assert client.get("/api/segments/potential_users' OR '1'='1/count").status_code in (404, 422)
    lake_reader = Lake(lake, CONF)
    assert lake_reader.rows("gold.profile_snapshot", ["user_id"], user_id="x' OR '1'='1") == []
    assert lake_reader.rows("gold.profile_snapshot", ["user_id"], user_id=some_user)  # the same call finds a real id
    reader = index.Index(lake)
    assert reader.search_name("%") == [] and reader.search_name("_") == []
    assert reader.profile_json("x' OR '1'='1") is None


# ----------------------------------------------------------------------- the API


def test_profile_api_is_portrait_show_and_follows_the_schema(lake, base, tokens, some_user):
    shown = json.loads(_cli("show", some_user, "--lake", lake))
    with _client(base, tokens["operator"]) as client:
        served = client.get(f"/api/profile/{some_user}").json()
        older = client.get(f"/api/profile/{some_user}", params={"dt": "2026-09-29"}).json()
        assert client.get("/api/profile/nobody").status_code == 404
        spec = client.get("/api/openapi.json").json()
    assert served == shown
    validator = jsonschema.Draft202012Validator(schema(CONF))
    validator.validate(served)
    validator.validate(older)
    assert older["快照日期"] == "2026-09-29"
    assert {"/api/profile/{user_id}", "/api/profile/{user_id}/tags/{column}", "/api/count"} <= set(spec["paths"])


def test_tag_history_segment_count_membership_and_adhoc_count(lake, base, tokens, some_user):
    from portrait.core.tables import Catalog
    from portrait.segments import bitmaps
    from portrait.segments.rules import load_book

    catalog = Catalog(lake, CONF)
    with _client(base, tokens["analyst"]) as client:
        history = client.get(f"/api/profile/{some_user}/tags/spend_30d").json()["history"]
        assert [h["dt"] for h in history] == ["2026-09-28", "2026-09-29", "2026-09-30"]
        stored = {
            r["dt"].isoformat(): r["spend_30d"]
            for r in DeltaTable(f"{lake}/gold/profile_snapshot").to_pyarrow_table(columns=["dt", "user_id", "spend_30d"]).to_pylist()
            if r["user_id"] == some_user
        }
        assert {h["dt"]: h["value"] for h in history} == stored
        for name, members in bitmaps.counts(catalog, END).items():
            assert client.get(f"/api/segments/{name}/count").json()["count"] == members
        member_ids = bitmaps.member_ids(catalog, END, "potential_users")
        assert member_ids
        assert client.get(f"/api/segments/potential_users/members/{member_ids[0]}").json()["member"] is True
        outsider = next(r["user_id"] for r in _snapshot(lake, ["user_id"]) if r["user_id"] not in member_ids)
        assert client.get(f"/api/segments/potential_users/members/{outsider}").json()["member"] is False
        rule = "vip_tier == 'vip' or lifecycle_stage != 'new'"
        expected = bitmaps.count_where(catalog, END, rule, load_book(CONF))
        assert client.get("/api/count", params={"where": rule}).json()["count"] == expected
        assert client.get("/api/count", params={"where": "no_such_tag == 1"}).status_code == 422
        assert client.get("/api/segments/no_such_segment/count").status_code == 404
        export = client.get("/segments/potential_users/members.csv").text.split()
        assert export == ["user_id", *member_ids]


def test_consumption_tag_shows_the_orders_of_its_window(lake, base, tokens, some_user):
    orders = DeltaTable(f"{lake}/silver/orders").to_pyarrow_table().to_pylist()
    window = [o["order_id"] for o in orders if o["user_id"] == some_user and date(2026, 9, 1) <= o["dt"] <= END]
    older = [o["order_id"] for o in orders if o["user_id"] == some_user and o["dt"] < date(2026, 9, 1)]
    assert window
    with _client(base, tokens["analyst"]) as client:
        page = client.get(f"/users/{some_user}/tags/orders_30d").text
        assert f"{len(window)} rows" in page
        assert all(order in page for order in window) and not any(order in page for order in older)
        model = client.get(f"/users/{some_user}/tags/p_male").text
        assert "Model gender version" in model


def test_the_master_stage_publishes_the_serving_index_and_rollback_rebuilds_it(lake, tmp_path):
    """The index is an artefact of the master stage (conf/pipeline.yaml), not built by the server."""
    reader = Lake(lake, CONF)
    assert index.is_fresh(reader), f"after `portrait run` the index is the snapshot's: {index.status(reader)}"
    state = index.stored_state(index.index_path(lake))
    assert state["dt"] == END.isoformat() and int(state["users"]) == len(_snapshot(lake, ["user_id"]))
    copy = tmp_path / "lake"
    shutil.copytree(Path(lake) / "gold" / "profile_snapshot", copy / "gold" / "profile_snapshot")
    shutil.copytree(Path(lake) / "_explorer" / "index", copy / "_explorer" / "index")
    served = index.Index(str(copy), CONF)
    assert served.state()["dt"] == END.isoformat()
    table = str(copy / "gold" / "profile_snapshot")
    first = next(v for v in range(DeltaTable(table).version() + 1) if DeltaTable(table, version=v).partitions())  # the first date's
    first_dates = {p["dt"] for p in DeltaTable(table, version=first).partitions()}
    _cli("rollback", "gold.profile_snapshot", "--version", str(first), "--lake", str(copy))
    rolled = index.stored_state(index.index_path(str(copy)))
    assert [rolled["dt"]] == sorted(first_dates) != [END.isoformat()], (rolled, first_dates)
    assert index.is_fresh(Lake(str(copy), CONF)), "a rollback rebuilds the index from the rows it restored"
    time.sleep(index.REOPEN_CHECK_SECONDS + 0.1)
    assert served.state() == rolled, "a running server reopens the replaced file"


def test_an_index_rendered_by_several_processes_equals_the_published_one(lake, tmp_path, monkeypatch):
    """A large snapshot is rendered by spawned processes (conf ``processes``), each taking every n-th batch."""
    conf_dir = tmp_path / "conf"
    shutil.copytree(CONF.dir, conf_dir)
    pipeline = (conf_dir / "pipeline.yaml").read_text()
    assert "      processes: 0\n" in pipeline and "rows_per_process: 100000" in pipeline
    (conf_dir / "pipeline.yaml").write_text(
        pipeline.replace("processes: 0\n", "processes: 3\n").replace("rows_per_process: 100000", "rows_per_process: 10")
    )
    monkeypatch.setattr(index, "BATCH", 7)  # many batches from a small lake, so each process gets several
    target = tmp_path / "profile.sqlite"
    state = index.build(Lake(lake, Conf(conf_dir)), target=target)
    published = index.index_path(lake)
    assert state == index.stored_state(published)
    assert list(tmp_path.glob("profile.sqlite*")) == [target], "the processes' part files are removed"
    query = "SELECT user_id, name, profile FROM profiles ORDER BY user_id"
    with contextlib.closing(sqlite3.connect(target)) as built, contextlib.closing(sqlite3.connect(published)) as reference:
        assert built.execute(query).fetchall() == reference.execute(query).fetchall()


# ----------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium (apt-get install -y chromium)")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
    args += ["--disable-component-update", "--disable-sync"]
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        yield chromium
        chromium.close()


def _log_in(browser, base: str, account: str, token: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/users")
    assert page.url.endswith("/login")
    page.fill("#account", account)
    page.fill("#token", token)
    page.click("#login")
    page.wait_for_url(f"{base}/")
    return page


@pytest.mark.browser
def test_browser_search_user_click_consumption_tag_and_segment(browser, lake, base, tokens, some_user, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    name = next(r["name"] for r in _snapshot(lake, ["user_id", "name"]) if r["user_id"] == some_user)
    page = _log_in(browser, base, "operator1", tokens["operator"])
    page.screenshot(path=str(shots / "home.png"), full_page=True)
    page.fill("#q", some_user)
    page.click("#search")
    page.wait_for_url(f"{base}/users/{some_user}")
    assert page.inner_text("#name") == name
    page.screenshot(path=str(shots / "user.png"), full_page=True)
    page.click("a.tag[href*='/tags/orders_30d']")
    page.wait_for_url(re.compile(r".*/tags/orders_30d.*"))
    records = page.locator("table.records tr")
    assert records.count() >= 2 and "order_id" in records.first.inner_text()
    assert page.locator("svg.chart").count() >= 1
    page.screenshot(path=str(shots / "tag_orders_30d.png"), full_page=True)
    page.click("nav >> text=segments")
    page.click("a.segment[href='/segments/potential_users']")
    page.wait_for_url(f"{base}/segments/potential_users")
    assert page.locator("#moves tr").count() >= 2
    assert int(page.inner_text("#members")) > 0
    page.screenshot(path=str(shots / "segment.png"), full_page=True)
    for path, shot in (("/runs", "runs.png"), ("/models", "models.png"), ("/tags/spend_30d", "tag_spend_30d.png")):
        page.goto(base + path)
        page.screenshot(path=str(shots / shot), full_page=True)
    page.close()
    print(f"screenshots in {shots}")


@pytest.mark.browser
def test_browser_restricted_login_sees_no_name(browser, lake, base, tokens, some_user, tmp_path):
    name = next(r["name"] for r in _snapshot(lake, ["user_id", "name"]) if r["user_id"] == some_user)
    page = _log_in(browser, base, "analyst1", tokens["analyst"])
    page.fill("#q", some_user)
    page.click("#search")
    page.wait_for_url(f"{base}/users/{some_user}")
    assert name not in page.content()
    assert page.locator("#name").count() == 0
    page.click("a.tag[href*='/tags/name']")
    page.wait_for_url(re.compile(r".*/tags/name.*"))
    assert name not in page.content() and "•••" in page.inner_text("#value")
    page.screenshot(path=str(tmp_path / "restricted_name.png"), full_page=True)
    page.goto(f"{base}/users?q={name}")
    assert some_user not in page.content()
    page.close()
