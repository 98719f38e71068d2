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
    run.add_argument("--from", dest="from_stage", default=None, help="start at this stage (default: the first)")
    run.add_argument("--to", dest="to_stage", default=None, help="stop after this stage (default: the last)")
    run.add_argument(
        "--orders",
        default=None,
        metavar="PATH",
        help="a shop's order export (CSV or Parquet; columns mapped in conf/pipeline.yaml external_orders) "
        "landed as --date's orders before the run",
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

    evaluate = commands.add_parser(
        "evaluate", parents=[shared, engine], help="score a snapshot's model tags against a generated lake's truth"
    )
    evaluate.add_argument("--date", type=_date, required=True)

    bench = commands.add_parser("bench", parents=[shared], help="time the daily run at a given size, per stage")
    bench.add_argument("--users", type=int, default=100_000)
    bench.add_argument("--days", type=int, default=90)
    bench.add_argument("--end", type=_date, default=date(2026, 9, 30))
    bench.add_argument("--seed", type=int, default=7)
    bench.add_argument("--engine", choices=["sail", "spark"], default="sail")
    bench.add_argument("--json", dest="json_path", default=None, help="also write the figures here (default: {lake}/bench.json)")

    segment = commands.add_parser("segment", parents=[shared], help="audiences of conf/segments.yaml: list, count, export, report")
    segment.add_argument("action", choices=["list", "count", "export", "report"])
    segment.add_argument("name", nargs="?", help="the segment (count, export)")
    segment.add_argument("--date", type=_date, default=None, help="snapshot date (default: the newest with segments)")
    segment.add_argument("--out", default=None, metavar="PATH", help="export: write here (.csv or .jsonl; default: CSV on stdout)")
    segment.add_argument(
        "--where",
        default=None,
        metavar="RULE",
        help="count: users matching an ad-hoc rule over the bitmap tags instead of a segment, "
        "e.g. \"vip_tier == 'vip' and lifecycle_stage != 'new'\"",
    )

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


def cmd_run(args) -> int:
    from portrait.core import engine
    from portrait.core.pipeline import RunContext, run_stage, stages_between

    conf = _conf(args)
    stages = stages_between(args.from_stage, getattr(args, "to_stage", None))
    dates = _dates(args.date, getattr(args, "until", None))
    if getattr(args, "orders", None):
        _land_orders(args, conf, stages)
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


def _report(console, result) -> None:
    console.print(f"[bold]{result.dt} {result.stage}[/] published {len(result.versions)} tables in {result.seconds:.1f}s")
    for row in result.notes.get("reconciliation", []):
        mark = "ok" if row["balanced"] else "[red]UNBALANCED[/]"
        console.print(
            f"  {row['source']:<9} in {row['input_records']:>9,} = ok {row['accepted']:>9,}"
            f" + quar {row['quarantined']:>6,} + dup {row['duplicates']:>6,} {mark}",
            soft_wrap=True,
        )


def cmd_show(args) -> int:
    from portrait.core import engine
    from portrait.master.render import read_profile

    spark = engine.get_spark(args.engine, args.remote)
    profile = read_profile(spark, args.lake, _conf(args), args.user_id, sample=args.sample, dt=args.date)
    print(json.dumps(profile, ensure_ascii=False, indent=2, default=str))
    return 0


def cmd_export(args) -> int:
    from portrait.core import engine
    from portrait.master.render import export_profiles

    spark = engine.get_spark(args.engine, args.remote)
    with _progress() as bar:
        task = bar.add_task("rendering profiles", total=None)
        path, lines, dt = export_profiles(
            spark, args.lake, _conf(args), args.date, args.out, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    print(f"wrote {lines:,} profiles of {dt} to {path}")
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
    report = bench(lake, args.users, args.days, args.end, args.seed, args.engine, _conf(args), console=Console(stderr=True))
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
        print(_export(bitmaps.member_ids(catalog, dt, args.name), args.name, dt, args.out), file=sys.stderr)
    else:
        from portrait.segments.report import render

        path, summary = render(catalog, dt)
        print(summary)
        print(f"chart written to {path}")
    return 0


def _export(user_ids: list[str], segment: str, dt: date, out: str | None) -> str:
    """Write member ids as CSV (user_id header) or JSON lines (by the file's suffix); stdout without --out."""
    as_json = bool(out) and out.endswith((".jsonl", ".json"))
    if as_json:
        lines = [json.dumps({"segment": segment, "user_id": u, "dt": str(dt)}) for u in user_ids]
    else:
        lines = ["user_id", *user_ids]
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
    "tables": cmd_tables,
    "migrate": cmd_migrate,
    "rollback": cmd_rollback,
    "serve": cmd_serve,
    "index": cmd_index,
    "users": cmd_users,
}

if __name__ == "__main__":
    sys.exit(main())
