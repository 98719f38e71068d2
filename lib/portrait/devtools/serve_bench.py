"""Latency of the explorer under load: a large lake, `portrait serve`, and wrk on loopback.

    python -m portrait.devtools.serve_bench --lake bench-lake/1m            # a lake `portrait bench` built
    python -m portrait.devtools.serve_bench --from LAKE --users 50000       # a snapshot replicated to N users

1. With ``--lake``, measures that lake as it is (every page has its tables).
   With ``--from``, builds a bench lake whose ``gold.profile_snapshot`` (latest
   date) holds ``--users`` profiles: the rows of LAKE's latest snapshot
   repeated under new user ids (b00000000, ...); only the profile API has its
   table there.
2. Builds the serving index (`portrait index`, timed), adds an account, starts
   `portrait serve` on a free loopback port.
3. Times each page and the ad-hoc count once warm (``pages``; with ``--lake``).
4. Runs ``wrk`` (Debian's package) with a Lua script asking for random user
   ids of the snapshot, at each ``--clients`` count, and prints p50 / p99 and
   requests per second, with the load average of the machine beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LUA = """
math.randomseed(os.time())
local ids = {%(ids)s}
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  return wrk.format("GET", "/api/profile/" .. ids[math.random(1, #ids)])
end
"""
SAMPLED_IDS = 20_000  # user ids wrk picks from, sampled from the whole index
#: The ad-hoc count timed on the pages: two bitmap tags and a negation, as an operator types it.
COUNT_RULE = "vip_tier == 'vip' and lifecycle_stage != 'new'"


def replicate(source_lake: str, bench_lake: str, users: int) -> int:
    """Write ``users`` profiles (the source's latest snapshot rows under new ids) as the bench lake's snapshot."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    table = DeltaTable(f"{source_lake}/gold/profile_snapshot")
    latest = max(p["dt"] for p in table.partitions())
    rows = table.to_pyarrow_table(partitions=[("dt", "=", latest)])
    target = f"{bench_lake}/gold/profile_snapshot"
    shutil.rmtree(target, ignore_errors=True)
    written, chunk = 0, 20_000
    while written < users:
        n = min(chunk, users - written)
        take = pa.array([i % rows.num_rows for i in range(written, written + n)])
        part = rows.take(take)
        ids = pa.array([f"b{i:08d}" for i in range(written, written + n)])
        part = part.set_column(part.column_names.index("user_id"), "user_id", ids)
        write_deltalake(target, part, mode="append", partition_by=["dt"])
        written += n
    return written


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(bench_lake: str, clients: list[int], seconds: int, threads: int, pages: bool) -> dict:
    """Index build, page timings (when ``pages``) and wrk figures per client count, for the lake's latest snapshot."""
    import sqlite3

    from portrait.explorer.index import index_path

    portrait = [sys.executable, "-m", "portrait.cli"]
    started = time.monotonic()
    subprocess.run([*portrait, "index", "--lake", bench_lake], check=True, stdout=subprocess.DEVNULL)  # stdout: the figures only
    index_seconds = time.monotonic() - started
    with sqlite3.connect(f"file:{index_path(bench_lake)}?mode=ro", uri=True) as db:
        users = db.execute("SELECT count(*) FROM profiles").fetchone()[0]
        ids = [r[0] for r in db.execute("SELECT user_id FROM profiles ORDER BY random() LIMIT ?", (SAMPLED_IDS,))]
    store = Path(bench_lake) / "_explorer" / "users.json"
    store.unlink(missing_ok=True)
    token = subprocess.run(
        [*portrait, "users", "add", "bench", "--role", "operator", "--lake", bench_lake], check=True, capture_output=True, text=True
    ).stdout.strip()
    port = _free_port()
    server = subprocess.Popen([*portrait, "serve", "--lake", bench_lake, "--port", str(port)], stderr=subprocess.DEVNULL)
    results, timed = [], {}
    try:
        _wait(port)
        if pages:
            timed = time_pages(f"http://127.0.0.1:{port}", token, ids[0])
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(LUA % {"ids": ",".join(f'"{i}"' for i in ids), "token": token})
        for n in clients:
            subprocess.run(
                ["wrk", "-t1", "-c2", "-d2s", "-s", script.name, f"http://127.0.0.1:{port}/"], check=True, capture_output=True
            )  # warm
            load, cpu = os.getloadavg(), _cpu_seconds(server.pid)
            out = subprocess.run(
                ["wrk", f"-t{min(threads, n)}", f"-c{n}", f"-d{seconds}s", "--latency", "-s", script.name, f"http://127.0.0.1:{port}/"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            parsed = _parse(out)
            results.append(
                {
                    "clients": n,
                    **parsed,
                    # CPU the server spent per request: what the load of the machine does not change (much)
                    "server_cpu_ms_per_request": round(1000 * (_cpu_seconds(server.pid) - cpu) / max(parsed["requests"], 1), 3),
                    "load_before": [round(x, 2) for x in load],
                    "load_after": [round(x, 2) for x in os.getloadavg()],
                }
            )
        os.unlink(script.name)
    finally:
        server.terminate()
        server.wait(10)
    return {"users": users, "index_build_seconds": round(index_seconds, 1), "pages": timed, "results": results}


def time_pages(base: str, token: str, user_id: str, repeat: int = 3) -> dict:
    """Seconds (best of ``repeat``, after one warm-up) and status of each explorer page and of the ad-hoc count."""
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        segments = client.get("/api/segments").raise_for_status().json()
        segment = max(segments, key=lambda s: s["sizes"][-1]["members"] if s["sizes"] else 0)["name"]
        paths = [
            "/",
            f"/users/{user_id}",
            f"/users/{user_id}/tags/orders_30d",
            f"/users/{user_id}/tags/churn_probability",
            "/tags/orders_30d",
            "/segments",
            f"/segments/{segment}",
            f"/api/segments/{segment}/count",
            f"/api/segments/{segment}/members/{user_id}",
            f"/api/count?{httpx.QueryParams({'where': COUNT_RULE})}",
            "/runs",
            "/models",
        ]
        timed = {}
        for path in paths:
            status = client.get(path).status_code
            best = float("inf")
            for _ in range(repeat):
                started = time.perf_counter()
                client.get(path)
                best = min(best, time.perf_counter() - started)
            timed[path] = {"status": status, "seconds": round(best, 4)}
    return timed


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"portrait serve did not listen on {port}")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _parse(out: str) -> dict:
    found = {f"p{q}_ms": _ms(v) for q, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    found["requests_per_s"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    found["non_2xx"] = int(errors.group(1)) if errors else 0
    found["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve_bench", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--lake", help="measure this lake as it is (e.g. one `portrait bench` built)")
    where.add_argument("--from", dest="source", help="replicate this lake's latest snapshot to --users profiles (e.g. the demo lake)")
    parser.add_argument("--users", type=int, default=50_000, help="with --from: profiles in the replicated snapshot")
    parser.add_argument("--bench-lake", default=None, help="with --from: where the replicated lake goes")
    parser.add_argument("--clients", default="10,50")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    args = parser.parse_args(argv)
    lake = args.lake
    if lake is None:
        lake = args.bench_lake or f"bench-lake/serve-{args.users}"
        replicate(args.source, lake, args.users)
    figures = measure(lake, [int(c) for c in args.clients.split(",")], args.seconds, args.threads, pages=args.lake is not None)
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    (Path(lake) / "serve_bench.json").write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
