"""Latency of the profile API under load: a large snapshot, `portrait serve`, and wrk on loopback.

    python -m portrait.devtools.serve_bench --from LAKE --users 50000 --bench-lake bench-lake/serve-50k

1. Builds a bench lake whose ``gold.profile_snapshot`` (latest date) holds
   ``--users`` profiles: the rows of LAKE's latest snapshot repeated under new
   user ids (b00000000, ...). Only the serving path is measured here, which
   reads that one table; running the whole pipeline at that size is
   `portrait bench`'s job.
2. Builds the serving index (`portrait index`), adds an account, starts
   `portrait serve` on a free loopback port.
3. Runs ``wrk`` (Debian's package) with a Lua script asking for random user
   ids, at each ``--clients`` count, and prints p50 / p99 and requests per
   second, with the load average of the machine beside them.
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
local users = %(users)d
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  return wrk.format("GET", string.format("/api/profile/b%%08d", math.random(0, users - 1)))
end
"""


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


def measure(bench_lake: str, users: int, clients: list[int], seconds: int, threads: int) -> list[dict]:
    portrait = [sys.executable, "-m", "portrait.cli"]
    started = time.monotonic()
    subprocess.run([*portrait, "index", "--lake", bench_lake], check=True)
    index_seconds = time.monotonic() - started
    store = Path(bench_lake) / "_explorer" / "users.json"
    store.unlink(missing_ok=True)
    token = subprocess.run(
        [*portrait, "users", "add", "bench", "--role", "operator", "--lake", bench_lake], check=True, capture_output=True, text=True
    ).stdout.strip()
    port = _free_port()
    server = subprocess.Popen([*portrait, "serve", "--lake", bench_lake, "--port", str(port)], stderr=subprocess.DEVNULL)
    results = []
    try:
        _wait(port)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(LUA % {"users": users, "token": token})
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
    for r in results:
        r["index_build_seconds"] = round(index_seconds, 1)
    return results


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
    parser.add_argument("--from", dest="source", required=True, help="a lake with a master snapshot (e.g. the demo lake)")
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--bench-lake", default=None)
    parser.add_argument("--clients", default="10,50")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    args = parser.parse_args(argv)
    lake = args.bench_lake or f"bench-lake/serve-{args.users}"
    replicate(args.source, lake, args.users)
    results = measure(lake, args.users, [int(c) for c in args.clients.split(",")], args.seconds, args.threads)
    print(json.dumps({"users": args.users, "results": results}, indent=2))
    (Path(lake) / "serve_bench.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
