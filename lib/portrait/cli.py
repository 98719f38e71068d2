"""The ``portrait`` command: generate, run, rerun, show, export, evaluate, segment, tables.

Errors are one clear line on stderr and a non-zero exit (1 for data or gate
failures, 2 for usage), never a stack trace; ``--debug`` shows the trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import date, timedelta

from portrait.core.config import ConfError, default_lake

log = logging.getLogger("portrait")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--lake", default=default_lake(), help="lakehouse root (default: %(default)s, env PORTRAIT_LAKE)")
    shared.add_argument("--conf", default=None, help="conf directory (default: the repo's conf/, env PORTRAIT_CONF)")
    shared.add_argument("--debug", action="store_true", help="show stack traces and engine logs")
    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument(
        "--engine", choices=["sail", "remote", "spark"], default=None, help="engine (default: embedded sail, env PORTRAIT_ENGINE)"
    )
    engine.add_argument("--remote", default=None, help="Spark Connect URL sc://host:port (env PORTRAIT_REMOTE)")

    parser = argparse.ArgumentParser(prog="portrait", description="User-profile (用户画像) lakehouse jobs.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", parents=[shared], help="write a synthetic landing zone")
    generate.add_argument("--users", type=int, default=2000)
    generate.add_argument("--days", type=int, default=60)
    generate.add_argument("--end", type=_date, default=date(2026, 9, 30), help="last landing date (default: %(default)s)")
    generate.add_argument("--seed", type=int, default=7)

    run = commands.add_parser("run", parents=[shared, engine], help="run the daily pipeline for a date or a range")
    run.add_argument("--date", type=_date, required=True)
    run.add_argument("--until", type=_date, default=None, help="last date of a range (inclusive)")
    run.add_argument(
        "--create", action="store_true", help="start a new lake at --lake (without it, a lake with no landing/ folder is refused)"
    )
    run.add_argument("--from", dest="from_stage", default=None, help="start at this stage (default: the first)")
    run.add_argument("--to", dest="to_stage", default=None, help="stop after this stage (default: the last)")
    run.add_argument(
        "--orders",
        default=None,
        metavar="PATH",
        help="a shop's order export (CSV or Parquet; columns mapped in conf/pipeline.yaml external_orders) "
        "landed as --date's orders before the run",
    )
    run.add_argument(
        "--dates-per-process",
        type=int,
        default=DATES_PER_PROCESS,
        metavar="N",
        help="a range longer than N dates runs N dates per child process, so its memory stays bounded "
        "(the embedded engine's grows with every date a process runs; 0: all in this process; default: %(default)s)",
    )

    rerun = commands.add_parser("rerun", parents=[shared, engine], help="redo one date from a stage (on-call)")
    rerun.add_argument("--date", type=_date, required=True)
    rerun.add_argument("--from", dest="from_stage", default=None)

    show = commands.add_parser("show", parents=[shared, engine], help="print a user's master profile as JSON (latest snapshot or --date)")
    show.add_argument("user_id", nargs="?")
    show.add_argument("--sample", action="store_true", help="show some user with orders")
    show.add_argument("--date", type=_date, default=None)

    export = commands.add_parser("export", parents=[shared, engine], help="write every user's profile as JSON lines")
    export.add_argument("--date", type=_date, default=None, help="snapshot date (default: the latest)")
    export.add_argument("--out", default=None, metavar="PATH", help="output file (default: {lake}/exports/profile-{date}.jsonl)")
    export.add_argument("--with-pii", action="store_true", help="keep personal fields (name, addresses) in clear; recorded in ops.exports")

    evaluate = commands.add_parser(
        "evaluate", parents=[shared, engine], help="score a snapshot's model tags against a generated lake's truth"
    )
    evaluate.add_argument("--date", type=_date, required=True)

    bench = commands.add_parser("bench", parents=[shared, engine], help="time the daily run at a given size, per stage")
    bench.add_argument("--users", type=int, default=100_000)
    bench.add_argument("--days", type=int, default=90)
    bench.add_argument("--end", type=_date, default=date(2026, 9, 30))
    bench.add_argument("--seed", type=int, default=7)
    bench.add_argument("--json", dest="json_path", default=None, help="also write the figures here (default: {lake}/bench.json)")

    segment = commands.add_parser("segment", parents=[shared], help="audiences of conf/segments.yaml: list, count, export, report")
    segment.add_argument("action", choices=["list", "count", "export", "report"])
    segment.add_argument("name", nargs="?", help="the segment (count, export)")
    segment.add_argument("--date", type=_date, default=None, help="snapshot date (default: the newest with segments)")
    segment.add_argument("--out", default=None, metavar="PATH", help="export: write here (.csv or .jsonl; default: CSV on stdout)")
    segment.add_argument(
        "--with-pii", action="store_true", help="export: add the members' personal fields (name) in clear; recorded in ops.exports"
    )
    segment.add_argument(
        "--where",
        default=None,
        metavar="RULE",
        help="count: users matching an ad-hoc rule over the bitmap tags instead of a segment, "
        "e.g. \"vip_tier == 'vip' and lifecycle_stage != 'new'\"",
    )

    campaign = commands.add_parser("campaign", parents=[shared], help="campaigns of conf/campaigns.yaml: list, preview, send, report")
    campaign.add_argument("action", choices=["list", "preview", "send", "report"])
    campaign.add_argument("name", nargs="?", help="the campaign (preview, send, report)")
    campaign.add_argument("--date", type=_date, default=None, help="send date (preview, send; default: the newest assigned)")
    campaign.add_argument("--dry-run", action="store_true", help="send: print what would be sent, send nothing")
    campaign.add_argument("--out", default=None, metavar="PATH", help="report: the chart's path (default: {lake}/ops/reports/)")

    tables = commands.add_parser("tables", parents=[shared], help="list declared tables with their current version")
    tables.add_argument("--history", metavar="TABLE", default=None, help="show the commit history of one table")

    migrate = commands.add_parser("migrate", parents=[shared], help="add declared columns stored tables lack (nullable, history kept)")
    migrate.add_argument("--dry-run", action="store_true", help="print what would be added, change nothing")

    serve = commands.add_parser("serve", parents=[shared], help="the profile explorer and API on http://HOST:PORT (docs/explorer.md)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, loopback only)")
    commands.add_parser("index", parents=[shared], help="rebuild the explorer's serving index from the latest master snapshot")
    users = commands.add_parser("users", parents=[shared], help="explorer accounts: add (prints a token), remove, token (a new one)")
    users.add_argument("action", choices=["add", "remove", "token", "list"])
    users.add_argument("account", nargs="?")
    users.add_argument("--role", default=None, help="add: a role of conf/explorer.yaml (operator sees personal fields, analyst not)")

    forget = commands.add_parser(
        "forget", parents=[shared], help="erase people from every table, file and old version (docs/privacy.md; no engine)"
    )
    forget.add_argument("user_ids", nargs="+", metavar="USER_ID")
    forget.add_argument("--reason", default="", help="why (kept in ops.erasure_log; no personal data here)")
    forget.add_argument("--no-purge", dest="purge", action="store_false", help="leave vacuuming old versions to the next maintenance run")

    rollback = commands.add_parser("rollback", parents=[shared], help="restore a table to an earlier Delta version (on-call)")
    rollback.add_argument("table", help="declared table name, e.g. silver.orders")
    rollback.add_argument("--version", type=int, required=True, help="the version to restore (see `portrait tables --history TABLE`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.debug:
        os.environ.setdefault("RUST_LOG", "info")
    try:
        from portrait.core import storage

        storage.check_lake(getattr(args, "lake", None) or "")  # an object-store lake: one clear line if unreachable
        return COMMANDS[args.command](args)
    except storage.LakeError as exc:
        print(f"portrait {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for people; the trace with --debug
        if args.debug:
            raise
        print(f"portrait {args.command}: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text if "\n" not in text or isinstance(exc, ConfError) else text.splitlines()[0] + " (…; --debug for all)"


def _conf(args):
    from portrait.core.config import Conf

    return Conf(args.conf)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)


def cmd_generate(args) -> int:
    from portrait.devtools.generate import generate

    with _progress() as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        summary = generate(
            args.lake, users=args.users, days=args.days, seed=args.seed, end_date=args.end, conf_dir=args.conf, progress=progress
        )
    print(summary)
    return 0


def _dates(first: date, last: date | None) -> list[date]:
    last = last or first
    if last < first:
        raise ValueError(f"--until {last} is before --date {first}")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


#: Dates one process runs of a longer range (``portrait run --until``). The embedded engine's native
#: memory grows by about 77 MiB with every date a process cleans and gives none back (measured: 1,257 MiB
#: after 10 dates, 2,784 MiB after 30; the Python heap stays flat, so it is the engine's), so a backfill
#: of 90 dates in one process would end near 7 GiB. In chunks of 15 a process ends at what 15 dates take
#: (about 1.4 GiB on a small lake), for one more process start (a few seconds) per 15 dates.
DATES_PER_PROCESS = 15


def cmd_run(args) -> int:
    from portrait.clean.landing import require_landing_zone
    from portrait.core.validate import validate_once

    conf = _conf(args)
    stages = stages_between_args(args)
    dates = _dates(args.date, getattr(args, "until", None))
    validate_once(conf)  # a conf problem is named first, before the lake is looked at
    require_landing_zone(args.lake, create=getattr(args, "create", False))  # a wrong --lake is refused, never created
    if getattr(args, "orders", None):
        _land_orders(args, conf, stages)
    per_process = getattr(args, "dates_per_process", 0) or 0
    if 0 < per_process < len(dates):
        return _run_in_chunks(args, dates, per_process)
    return _run_here(args, conf, stages, dates)


def stages_between_args(args) -> list[str]:
    from portrait.core.pipeline import stages_between

    return stages_between(args.from_stage, getattr(args, "to_stage", None))


def _run_in_chunks(args, dates: list[date], per_process: int) -> int:
    """Run ``dates`` in child processes of ``per_process`` dates each, in order; stop at the first that fails."""
    import subprocess

    for first in range(0, len(dates), per_process):
        chunk = dates[first : first + per_process]
        command = [sys.executable, "-m", "portrait.cli", "run", "--date", str(chunk[0]), "--until", str(chunk[-1])]
        command += ["--lake", args.lake, "--dates-per-process", "0"]
        for flag, value in (
            ("--conf", args.conf),
            ("--from", args.from_stage),
            ("--to", getattr(args, "to_stage", None)),
            ("--engine", args.engine),
            ("--remote", args.remote),
        ):
            if value:
                command += [flag, str(value)]
        if args.debug:
            command.append("--debug")
        done = subprocess.run(command)
        if done.returncode != 0:
            print(f"portrait run: the dates {chunk[0]} .. {chunk[-1]} failed; dates before {chunk[0]} are done", file=sys.stderr)
            return done.returncode
    return 0


def _run_here(args, conf, stages: list[str], dates: list[date]) -> int:
    from portrait.core import engine
    from portrait.core.pipeline import RunContext, run_stage

    spark = engine.get_spark(args.engine, args.remote)
    with _progress() as bar:
        task = bar.add_task("daily run", total=len(dates) * len(stages))
        for dt in dates:
            for stage in stages:
                bar.update(task, description=f"{dt} {stage}")
                ctx = RunContext(spark, args.lake, dt, conf)
                result = run_stage(ctx, stage)
                bar.advance(task)
                _report(bar.console, result)
    return 0


def _land_orders(args, conf, stages: list[str]) -> None:
    """Land the export as --date's orders (and its unknown customers), for the clean stage to take in."""
    from portrait.clean.external_orders import land_export

    if "clean" not in stages:
        raise ValueError("--orders lands an export for the clean stage: run from clean (drop --from)")
    print(land_export(args.orders, args.lake, args.date, conf))


def _rss_mb() -> float:
    """Resident memory of this process and its children (a JVM engine), MiB."""
    from portrait.devtools.backfill_memory import rss_mb

    return rss_mb()


def _report(console, result) -> None:
    console.print(
        f"[bold]{result.dt} {result.stage}[/] published {len(result.versions)} tables in {result.seconds:.1f}s, rss {_rss_mb():,.0f} MiB"
    )
    for row in result.notes.get("reconciliation", []):
        mark = "ok" if row["balanced"] else "[red]UNBALANCED[/]"
        console.print(
            f"  {row['source']:<9} in {row['input_records']:>9,} = ok {row['accepted']:>9,}"
            f" + quar {row['quarantined']:>6,} + dup {row['duplicates']:>6,} {mark}",
            soft_wrap=True,
        )
    for problem in result.notes.get("landing_problems", []):
        console.print("  landing: " + problem, soft_wrap=True, markup=False)  # file names may hold brackets


def cmd_show(args) -> int:
    from portrait.core import engine
    from portrait.master.render import read_profile

    spark = engine.get_spark(args.engine, args.remote)
    profile = read_profile(spark, args.lake, _conf(args), args.user_id, sample=args.sample, dt=args.date)
    print(json.dumps(profile, ensure_ascii=False, indent=2, default=str))
    return 0


def cmd_export(args) -> int:
    from portrait.core import engine
    from portrait.core.tables import Catalog
    from portrait.master.render import export_profiles
    from portrait.privacy import exports

    spark = engine.get_spark(args.engine, args.remote)
    with _progress() as bar:
        task = bar.add_task("rendering profiles", total=None)
        path, lines, dt = export_profiles(
            spark,
            args.lake,
            conf := _conf(args),
            args.date,
            args.out,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            with_pii=args.with_pii,
        )
    catalog = Catalog(args.lake, conf)
    pii = catalog.spec("gold.profile_snapshot").pii
    exports.record(catalog, "export", "gold.profile_snapshot", dt, lines, args.with_pii, pii, str(path))
    masked = "" if args.with_pii else f" (personal fields {', '.join(pii)} left out; --with-pii keeps them)"
    print(f"wrote {lines:,} profiles of {dt} to {path}{masked}")
    return 0


def cmd_forget(args) -> int:
    from portrait.privacy.erasure import forget

    done = forget(args.lake, _conf(args), args.user_ids, reason=args.reason, do_purge=args.purge)
    print(
        f"erased {done['users']} user(s) ({done['already_erased']} already erased) from {len(done['tables'])} tables"
        f" and {len(done['files'])} files in {done['seconds']}s; "
        + ("old versions purged" if done["purged"] else "old versions left to the maintenance run (--no-purge)")
    )
    for name, rows in sorted({**done["tables"], **done["files"]}.items()):
        print(f"  {name:<40} {rows:>8,}")
    return 0


def cmd_evaluate(args) -> int:
    from portrait.core import engine
    from portrait.devtools.model_report import render, run_evaluation

    spark = engine.get_spark(args.engine, args.remote)
    print(render(run_evaluation(spark, args.lake, _conf(args), args.date)))
    return 0


def cmd_bench(args) -> int:
    from rich.console import Console

    from portrait.core import storage
    from portrait.devtools.bench import bench, render

    lake = args.lake if args.lake != default_lake() else f"bench-lake/u{args.users}-d{args.days}-s{args.seed}"
    report = bench(
        lake, args.users, args.days, args.end, args.seed, args.engine, _conf(args), console=Console(stderr=True), remote=args.remote
    )
    print(render(report))
    out = args.json_path or storage.join(lake, "bench.json")
    storage.write_text(out, json.dumps(report, indent=2))
    print(f"figures written to {out}")
    return 0


def cmd_segment(args) -> int:
    """Served from the bitmaps and memberships with delta-rs: no engine is started."""
    from portrait.core.tables import Catalog
    from portrait.segments import bitmaps
    from portrait.segments.rules import load_book

    conf = _conf(args)
    book = load_book(conf)  # refuses a bad rule in conf with its segment and fault
    catalog = Catalog(args.lake, conf)
    if args.where and (args.action != "count" or args.name):
        raise ValueError("--where counts an ad-hoc rule: use it with `segment count` and no segment name")
    if args.action in ("count", "export") and not args.where:
        if not args.name:
            raise ValueError(f"segment {args.action} needs a segment name; declared segments: {', '.join(book.names())}")
        book.segment(args.name)
    elif args.name:
        raise ValueError(f"segment {args.action} takes no segment name")
    dt = args.date or bitmaps.newest_date(catalog)
    if args.action == "list":
        stored = bitmaps.counts(catalog, dt)
        print(f"segments on {dt}")
        for segment in book.segments:
            members = stored.get(segment.name)
            print(f"{segment.name:<26} {'-' if members is None else f'{members:,}':>10}  {segment.description}")
    elif args.action == "count" and args.where:
        print(bitmaps.count_where(catalog, dt, args.where, book))
    elif args.action == "count":
        print(bitmaps.counts(catalog, dt, args.name)[args.name])
    elif args.action == "export":
        from portrait.privacy import exports

        members = bitmaps.member_ids(catalog, dt, args.name)
        pii, extra = exports.member_columns(catalog, dt, members) if args.with_pii else ([], {})
        print(_export(members, args.name, dt, args.out, pii, extra), file=sys.stderr)
        exports.record(catalog, "segment export", args.name, dt, len(members), args.with_pii, pii, args.out or "stdout")
    else:
        from portrait.segments.report import render

        path, summary = render(catalog, dt)
        print(summary)
        print(f"chart written to {path}")
    return 0


def cmd_campaign(args) -> int:
    """Served with delta-rs: no engine is started (assignments are built by the campaigns stage)."""
    from portrait.campaigns import report
    from portrait.campaigns.declarations import load_campaigns
    from portrait.core.tables import Catalog

    conf = _conf(args)
    book = load_campaigns(conf)  # refuses a bad declaration with its campaign and key
    catalog = Catalog(args.lake, conf)
    if args.action == "list":
        for c in book.campaigns.values():
            print(
                f"{c.name:<16} {c.audience:<40} {c.contact:<9} {c.channel.name}/{c.channel.protocol:<10} "
                f"{c.start}..{c.end} holdout {c.holdout:.0%} horizon {c.horizon_days}d offer {c.offer_value:g}/{c.offer_cost:g}"
            )
        return 0
    if not args.name:
        raise ValueError(f"campaign {args.action} needs a campaign name; declared campaigns: {', '.join(book.campaigns)}")
    campaign = book.campaign(args.name)
    if args.action == "report":
        rows = report.latest_results(catalog, campaign.name)
        print(report.summary(campaign.name, rows))
        if not rows.empty:
            print(f"chart written to {report.plot(catalog, campaign.name, rows, args.out)}")
        return 0
    assigned = report.read_table(catalog, "gold.campaign_assignments", [("campaign", "=", campaign.name)])
    dt = args.date or (assigned["dt"].max() if not assigned.empty else None)
    if dt is None:
        raise LookupError(f"campaign {campaign.name} has no assignments in {args.lake}; run the campaigns stage first")
    if args.action == "preview":
        day = assigned[assigned["dt"] == dt]
        arms = day["arm"].value_counts().to_dict()
        print(
            f"campaign {campaign.name} on {dt}: {len(day):,} assigned, treatment {arms.get('treatment', 0):,}, holdout {arms.get('holdout', 0):,}"
        )
        for message in day[day["arm"] == "treatment"]["message"].head(5):
            print(f"  {message}")
        return 0
    from portrait.campaigns.delivery import send
    from portrait.core.pipeline import RunContext

    outcome = send(RunContext(None, args.lake, dt, conf), campaign.name, dry_run=args.dry_run)
    print(json.dumps(outcome, ensure_ascii=False, default=str))
    return 0 if not outcome.get("failed") else 1


def _export(user_ids: list[str], segment: str, dt: date, out: str | None, pii=(), extra=None) -> str:
    """Write member ids (and with ``pii`` their personal columns) as CSV or JSON lines (by the file's suffix); stdout without --out."""
    import csv
    import io

    extra = extra or {}
    as_json = bool(out) and out.endswith((".jsonl", ".json"))
    if as_json:
        lines = [
            json.dumps({"segment": segment, "user_id": u, **(extra.get(u, dict.fromkeys(pii))), "dt": str(dt)}, ensure_ascii=False)
            for u in user_ids
        ]
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([["user_id", *pii], *([u, *(extra.get(u, {}).get(c) for c in pii)] for u in user_ids)])
        lines = buffer.getvalue().splitlines()
    text = "\n".join(lines) + "\n"
    if out is None:
        sys.stdout.write(text)
        return f"{len(user_ids):,} members of {segment} on {dt}"
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(text)
    return f"{len(user_ids):,} members of {segment} on {dt} written to {out}"


def cmd_tables(args) -> int:
    from portrait.core import maintenance
    from portrait.core.tables import Catalog

    catalog = Catalog(args.lake, _conf(args))
    if args.history:
        for commit in maintenance.history(catalog, args.history):
            print(json.dumps({k: commit.get(k) for k in ("version", "timestamp", "operation", "operationParameters")}, default=str))
        return 0
    for name in catalog.names():
        version = catalog.version(name) if catalog.exists(name) else "-"
        print(f"{name:<28} v{version!s:<5} {catalog.spec(name).path}")
    from portrait.core.pipeline import half_published

    for row in half_published(args.lake, _conf(args)):
        print(
            f"HALF-PUBLISHED: stage {row['stage']} for {row['dt']} (run {row['run_id']}, began {row['recorded_at']}): "
            f"its tables may be partly new; stages reading it refuse {row['dt']} until its publish is retried or it is rerun"
        )
    return 0


def cmd_migrate(args) -> int:
    """Add the declared columns each stored table lacks; refuse a type change or an undeclared stored column."""
    from portrait.core.migrate import migrate
    from portrait.core.tables import Catalog

    done = migrate(Catalog(args.lake, _conf(args)), dry_run=args.dry_run)
    for line in done:
        print(line)
    if not done:
        print(f"every stored table in {args.lake} matches its declaration")
    return 0


def cmd_rollback(args) -> int:
    """Restore TABLE to --version as a new commit (history is kept, so a rollback can be rolled back)."""
    from portrait.core import maintenance
    from portrait.core.pipeline import RunContext, publish_artefacts
    from portrait.core.tables import Catalog

    conf = _conf(args)
    catalog = Catalog(args.lake, conf)
    before = catalog.version(args.table) if catalog.exists(args.table) else None
    if before is not None and not 0 <= args.version < before:
        raise ValueError(f"{args.table} is at version {before}; restore one of 0..{before - 1}")
    maintenance.restore(catalog, args.table, args.version)
    print(f"{args.table}: restored version {args.version} as version {catalog.version(args.table)} (was {before})")

    for name, state in publish_artefacts(RunContext(None, args.lake, date.today(), conf), source=args.table).items():
        print(f"{name}: rebuilt from the restored {args.table} {state}")
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from portrait.explorer import index
    from portrait.explorer.app import create_app
    from portrait.explorer.lake import Lake

    conf = _conf(args)
    print(f"serving index: {index.status(Lake(args.lake, conf))}", file=sys.stderr)
    print(f"portrait explorer on http://{args.host}:{args.port}/ (accounts: portrait users add NAME --role ROLE)", file=sys.stderr)
    uvicorn.run(create_app(args.lake, conf), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_index(args) -> int:
    from portrait.explorer import index
    from portrait.explorer.lake import Lake

    conf = _conf(args)
    print(f"{index.index_path(args.lake, conf)}: {index.build(Lake(args.lake, conf))}")
    return 0


def cmd_users(args) -> int:
    from portrait.explorer.auth import Users

    users = Users(args.lake, _conf(args).load("explorer")["roles"])
    if args.action == "list":
        for account, row in sorted(users.accounts().items()):
            print(f"{account:<24} {row['role']:<12} created {row.get('created', '-')}")
        for role, spec in users.roles.items():
            print(f"role {role}: {spec.get('description', '')}", file=sys.stderr)
        return 0
    if not args.account:
        raise ValueError(f"users {args.action} needs an account name")
    if args.action == "add":
        if not args.role:
            raise ValueError("users add needs --role (roles: " + ", ".join(users.roles) + ")")
        print(users.add(args.account, args.role))
    elif args.action == "token":
        print(users.token(args.account))
    else:
        users.remove(args.account)
        print(f"removed {args.account}", file=sys.stderr)
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "run": cmd_run,
    "rerun": cmd_run,
    "show": cmd_show,
    "export": cmd_export,
    "evaluate": cmd_evaluate,
    "bench": cmd_bench,
    "segment": cmd_segment,
    "campaign": cmd_campaign,
    "tables": cmd_tables,
    "migrate": cmd_migrate,
    "rollback": cmd_rollback,
    "forget": cmd_forget,
    "serve": cmd_serve,
    "index": cmd_index,
    "users": cmd_users,
}

if __name__ == "__main__":
    sys.exit(main())
