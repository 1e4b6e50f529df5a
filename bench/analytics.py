"""Analysts' query speed, aggregate rebuild speed and storage per event, on months of stories.

``python -m devtrail.bench.analytics [--events N] [--days D] [--database-url URL] [--json FILE]``:

1. writes ``--events`` story events (``devtrail.producers.stories``: requirements, tasks, agent
   sessions of 20 to 60 calls, pull requests, deployments, incidents) spread over ``--days``
   days, and stores them with the sink's COPY (no Kafka: this measures PostgreSQL);
2. rebuilds the projections and the aggregates from ``events`` (``devtrail projections
   rebuild``, ``devtrail aggregates rebuild``), timing each (events per second);
3. runs each documented ``analytics`` query for one project over the last 30 days, 20
   times, and reports its p50 and p95 (target: p95 <= 50 ms);
4. builds the HTML report for 30 days when ``devtrail.report`` exists (target <= 2 s);
5. reports bytes per event in ``events`` and in the aggregates (tables and claims).

On an embedded PostgreSQL unless ``--database-url`` names an admin DSN. The default 10,000,000
events take about 15 minutes here (2 cores); ``--events 1000000`` gives a first look.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from devtrail import migrate
from devtrail.bench.harness import Timer, fresh_database, say
from devtrail.consumers.aggregates.verify import rebuild_aggregates
from devtrail.consumers.clean import CLEAN_ROWS, CleanRow, encode_rows, event_to_row
from devtrail.consumers.processor.correlate import Correlator
from devtrail.consumers.projections.rebuild import RebuildOptions, rebuild_projections, vacuum_analyze
from devtrail.consumers.sink import EventSink
from devtrail.producers.stories import AGENT_SESSION_CALLS, Stories

CHUNK = 50_000
REPEATS = 20
TARGET_P95_MS = 50.0

#: The documented queries (docs/analytics.md), for one project ($1) over the last 30 days ($2);
#: those with one parameter take only the window ($1).
QUERIES: dict[str, str] = {
    "activity per day": """
        SELECT bucket, sum(events) AS events, sum(errors) AS errors FROM analytics.activity_daily
        WHERE project_id = $1 AND bucket >= $2::date GROUP BY bucket ORDER BY bucket""",
    "events per hour, one day": """
        SELECT bucket, event_type, sum(events) FROM analytics.activity_hourly
        WHERE project_id = $1 AND bucket >= $2 AND bucket < $2 + interval '1 day' GROUP BY 1, 2""",
    "LLM cost by model": """
        SELECT provider, model, sum(calls) AS calls, sum(input_tokens + output_tokens) AS tokens,
               sum(cost_usd) AS cost_usd
        FROM analytics.llm_usage_daily WHERE project_id = $1 AND bucket >= $2::date
        GROUP BY 1, 2 ORDER BY cost_usd DESC""",
    "LLM latency percentiles per day": """
        SELECT bucket, model, latency_p50_ms, latency_p95_ms, latency_p99_ms FROM analytics.llm_usage_daily
        WHERE project_id = $1 AND bucket >= $2::date""",
    "LLM latency percentiles over the window": """
        SELECT * FROM analytics.llm_latency($2, project => $1)""",
    "sessions per day": """
        SELECT bucket, sum(sessions) FROM analytics.sessions_daily
        WHERE project_id = $1 AND bucket >= $2::date GROUP BY 1""",
    "task flow per day": """
        SELECT * FROM analytics.task_flow_daily WHERE project_id = $1 AND bucket >= $2::date ORDER BY bucket""",
    "agent performance": """
        SELECT agent_id, sum(tasks_completed) AS done, sum(llm_cost_usd) AS cost
        FROM analytics.agent_performance_daily WHERE project_id = $1 AND bucket >= $2::date
        GROUP BY agent_id ORDER BY cost DESC""",
    "cost by requirement": """
        SELECT requirement_id, count(DISTINCT task_id) AS tasks, sum(calls) AS calls, sum(cost_usd) AS cost_usd
        FROM analytics.llm_cost_attributed WHERE project_id = $1 AND bucket >= $2::date
        GROUP BY requirement_id ORDER BY cost_usd DESC LIMIT 20""",
    "cost by task": """
        SELECT task_id, sum(calls) AS calls, sum(cost_usd) AS cost_usd
        FROM analytics.llm_cost_attributed WHERE project_id = $1 AND bucket >= $2::date
        GROUP BY task_id ORDER BY cost_usd DESC LIMIT 20""",
    "cost of one requirement, all time": """
        SELECT * FROM analytics.cost_by_requirement WHERE requirement_id = (
            SELECT requirement_id FROM analytics.requirements WHERE project_id = $1 AND created_at >= $2
            ORDER BY created_at DESC LIMIT 1)""",
    "cost of one task": """
        SELECT * FROM analytics.cost_by_task
        WHERE task_id = (SELECT task_id FROM analytics.tasks WHERE project_id = $1 AND created_at >= $2
                         ORDER BY created_at DESC LIMIT 1)""",
    "delivery per week": """
        SELECT * FROM analytics.delivery_weekly WHERE project_id = $1 AND week >= $2::date ORDER BY week""",
    "delivery per week, every project": """
        SELECT * FROM analytics.delivery_weekly_all WHERE week >= $1::date ORDER BY week""",
}


async def load(conn: asyncpg.Connection, events: int, days: int) -> dict[str, Any]:
    """Write and store about ``events`` story events spread over the last ``days`` days."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days + 2)
    shape: dict[str, Any] = {"seed": 3, "projects": 4, "start": start, "session_calls": AGENT_SESSION_CALLS}
    probe = Stories("qbp", story_gap=timedelta(hours=1), **shape)
    sample = probe.events(20_000)
    per_story = len(sample) / max(1, probe.truth.stories)
    stories_per_project = max(1.0, events / per_story / 4)
    gap = timedelta(seconds=days * 86_400 / stories_per_project)
    stories = Stories("qb", story_gap=gap, **shape)
    sink, timer, stored, correlator = EventSink(), Timer(), 0, Correlator()
    while stored < events:
        batch = stories.events(min(CHUNK, events - stored))
        encoded = []
        for event in batch:  # correlated as the processors do: calls naming only a session get its task
            found = correlator.observe(event)  # type: ignore[arg-type]  # a story event is an Event
            row = event_to_row(event) if found is None else event_to_row(event, found.values, found.attribution())
            encoded.append(orjson.dumps(row))
        rows = CLEAN_ROWS.decode("b", 0, 0, encode_rows(encoded))
        async with conn.transaction():
            await sink.write(conn, [r for r in rows if isinstance(r, CleanRow)])
        stored += len(batch)
        if stored // 500_000 != (stored - len(batch)) // 500_000:
            say(f"analytics: stored {stored:,}/{events:,} events ({stored / timer.seconds:,.0f}/s)")
    return {"events": stored, "load_seconds": round(timer.seconds, 1), "project": f"{stories.project_prefix}1"}


async def rebuilds(conn: asyncpg.Connection, url: str) -> dict[str, Any]:
    options = RebuildOptions(sink_group="none", writers_group="none", clean_topic="none", batch_events=20_000)
    timer = Timer()
    projections = await rebuild_projections(conn, options)
    projections_s = timer.seconds
    say(f"analytics: projections rebuilt: {projections.lines()[0]}")
    timer = Timer()
    aggregates = await rebuild_aggregates(url, options)
    aggregates_s = timer.seconds  # before the ANALYZE below (the JSONs of 2026-11-26 include it)
    say(f"analytics: aggregates rebuilt (and vacuumed, as the command does): {aggregates.lines()[0]}")
    await vacuum_analyze(conn, projections.tables)  # as `devtrail projections rebuild` does after its commit
    await conn.execute("ANALYZE")
    return {
        "projections_rebuild_events_per_second": round(projections.events / projections_s),
        "aggregates_rebuild_events_per_second": round(aggregates.events / aggregates_s),
        "aggregates_rebuild_seconds": round(aggregates_s, 1),
        "aggregate_rows": aggregates.rows,
    }


async def queries(conn: asyncpg.Connection, project: str) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(days=30)
    figures: dict[str, Any] = {}
    for name, sql in QUERIES.items():
        times, rows = [], 0
        for _ in range(REPEATS):
            started = time.perf_counter()
            rows = len(await conn.fetch(sql, project, since) if "$2" in sql else await conn.fetch(sql, since))
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p95 = times[int(0.95 * len(times)) - 1]
        figures[name] = {"rows": rows, "p50_ms": round(statistics.median(times), 2), "p95_ms": round(p95, 2)}
        verdict = "ok" if p95 <= TARGET_P95_MS else f"OVER the {TARGET_P95_MS:.0f} ms target"
        p50 = statistics.median(times)
        say(f"analytics: {name:<34} {rows:>6} rows  p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  {verdict}")
    return figures


async def report_build(conn: asyncpg.Connection, project: str) -> float | None:
    """Seconds to gather and render the HTML report for 30 days, if the report module exists."""
    try:
        from devtrail.report import gather  # type: ignore[import-not-found, attr-defined, unused-ignore]
        from devtrail.report_html import render_html  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    started = time.perf_counter()
    render_html(await gather(conn, datetime.now(UTC) - timedelta(days=30), None))
    return time.perf_counter() - started


async def storage(conn: asyncpg.Connection, events: int) -> dict[str, float]:
    sizes = await conn.fetchrow(
        """
        SELECT
          (SELECT sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i
           WHERE i.inhparent = 'events'::regclass) AS events,
          (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'aggregates' AND c.relkind = 'r' AND c.relname NOT LIKE 'claims%') AS aggregates,
          (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'aggregates' AND c.relkind = 'r' AND c.relname LIKE 'claims%') AS claims,
          (SELECT count(*) FROM aggregates.claims) + (SELECT count(*) FROM aggregates.claims_late) AS claimed
        """
    )
    claimed = int(sizes["claimed"]) or 1
    return {
        "events_bytes_per_event": round(int(sizes["events"]) / events, 1),
        "aggregates_bytes_per_event": round(int(sizes["aggregates"]) / events, 1),
        "claims_bytes_per_claimed_event": round(int(sizes["claims"]) / claimed, 1),
        "claims_held": claimed,
    }


async def measure(admin_url: str, events: int, days: int) -> dict[str, Any]:
    url = await fresh_database(admin_url)
    conn = await asyncpg.connect(url)
    try:
        figures: dict[str, Any] = {"days": days}
        figures |= await load(conn, events, days)
        figures |= await rebuilds(conn, url)
        figures |= await looked_at(conn, figures["project"], figures["events"])
    finally:
        await conn.close()
    return figures


async def looked_at(conn: asyncpg.Connection, project: str, events: int) -> dict[str, Any]:
    """What an analyst sees of a loaded database: the queries, the HTML report, the storage."""
    figures: dict[str, Any] = {"queries": await queries(conn, project)}
    figures["worst_query_p95_ms"] = max(q["p95_ms"] for q in figures["queries"].values())
    built = await report_build(conn, project)
    figures["html_report_seconds"] = None if built is None else round(built, 2)
    return figures | await storage(conn, events)


async def measure_again(url: str, revision: str = "head") -> dict[str, Any]:
    """The queries, the report and the storage of a database an earlier run loaded (``--again``),
    migrated to ``revision`` first (up or down): a change to the views or indexes measured on the
    same rows, before and after."""
    current = await _revision(url)
    if revision != "head" and current is not None and current > revision:
        await asyncio.to_thread(migrate.downgrade, url, revision)
    else:
        await asyncio.to_thread(migrate.upgrade, url, revision)
    conn = await asyncpg.connect(url)
    try:
        events = int(await conn.fetchval("SELECT count(*) FROM events"))
        project = await conn.fetchval("SELECT min(project_id) FROM events WHERE project_id LIKE '%1'")
        await conn.execute("VACUUM (ANALYZE)")
        figures: dict[str, Any] = {"events": events, "project": project, "again": True, "revision": revision}
        figures |= await looked_at(conn, project, events)
    finally:
        await conn.close()
    return figures


async def _revision(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version")  # type: ignore[no-any-return]
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.again:
        if not args.database_url:
            raise SystemExit("--again needs --database-url: the PostgreSQL holding that database")
        base, _, query = args.database_url.partition("?")
        url = f"{base.rsplit('/', 1)[0]}/{args.again}" + (f"?{query}" if query else "")
        return await measure_again(url, args.revision)
    if args.database_url:
        return await measure(args.database_url, args.events, args.days)
    from devtrail.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="dta-", dir="/tmp") as work:
        server = EmbeddedPostgres(Path(work) / "pg", database="postgres")
        try:
            return await measure(await server.start(), args.events, args.days)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="story events to store (default 10,000,000)")
    parser.add_argument("--days", type=int, default=90, help="days they spread over (default 90)")
    parser.add_argument("--database-url", help="an admin DSN of a PostgreSQL to use (default: embedded)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--again",
        metavar="DATABASE",
        help="measure the queries again on a database an earlier run with --database-url loaded (bench_...), "
        "after migrating it to --revision and a VACUUM (ANALYZE)",
    )
    parser.add_argument("--revision", default="head", help="with --again: the migration to measure at (default head)")
    args = parser.parse_args()
    figures = asyncio.run(main_async(args))
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
