"""Cost of the projection and aggregates writers per event, speed of ``projections rebuild``, plans of the views.

``python -m devtrail.bench.projections [--events N] [--database-url URL] [--json FILE]`` builds a
workload shaped like production (about 90 % ``llm.called`` / ``tool.called`` carrying a
session and an agent, the rest lifecycle events of tasks, sessions, requirements, pull
requests, commits, deployments, incidents, links), then measures on a fresh database
(embedded PostgreSQL unless ``--database-url`` names an admin DSN):

* each writer's ``reduce`` alone (Python), and its ``write`` (reduce + upsert), per event,
  in batches of ``--batch`` events as the writer host applies them, first pass and replay;
* the sink's COPY into ``events`` per event, with the analysts' indexes and without them;
* ``rebuild_projections`` in events per second;
* ``EXPLAIN ANALYZE`` of the views' typical queries: which indexes they use, how long.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import re
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from devtrail.bench.harness import fresh_database, say
from devtrail.consumers.aggregates import AggregatesWriter
from devtrail.consumers.clean import CLEAN_ROWS, CleanRow, encode_rows, event_to_row
from devtrail.consumers.projections import PROJECTIONS
from devtrail.consumers.projections.rebuild import RebuildOptions, rebuild_projections
from devtrail.consumers.sink import EventSink
from devtrail.schemas.events import (
    CommitPushed,
    CommitPushedPayload,
    DeploymentCompleted,
    DeploymentCompletedPayload,
    DeploymentStarted,
    DeploymentStartedPayload,
    LinearIssueLink,
    LinkCreated,
    LlmCalled,
    LlmCalledPayload,
    PullRequestOpened,
    PullRequestOpenedPayload,
    RequirementCreated,
    RequirementCreatedPayload,
    SessionEnded,
    SessionStarted,
    TaskCompleted,
    TaskCreated,
    TaskCreatedPayload,
    TaskDependencyAdded,
    TaskDependencyAddedPayload,
    TaskStarted,
    ToolCalled,
    ToolCalledPayload,
)

START = datetime.now(UTC) - timedelta(days=2)
LLM = LlmCalledPayload(provider="anthropic", model="claude", input_tokens=900, output_tokens=120, cost_usd=0.01)
TOOL = ToolCalledPayload(tool_name="bash", duration_ms=40)
EVENT_INDEXES = ("task_time", "session_time", "correlation_time", "agent_time", "type_time", "time_brin")


def workload(events: int, seed: int = 1) -> list[Any]:
    """About ``events`` events: 10 % lifecycle of ``events // 100`` tasks, the rest calls in their sessions."""
    rng = random.Random(seed)
    tasks = max(10, events // 100)
    out: list[Any] = []
    for i in range(tasks):
        out += _task_story(i, rng)
    calls = max(0, events - len(out))
    for _ in range(calls):
        i = rng.randrange(tasks)
        when = START + timedelta(seconds=i * 60 + rng.uniform(1, 50))
        refs = {"source": "bench", "occurred_at": when, "session_id": f"S-{i}", "correlation_id": f"C-{i}"}
        if rng.random() < 0.5:
            out.append(LlmCalled(**refs, agent_id=f"A-{i % 100}", payload=LLM))
        else:
            out.append(ToolCalled(**refs, agent_id=f"A-{i % 100}", payload=TOOL))
    out.sort(key=lambda e: e.occurred_at)
    return out


def _task_story(i: int, rng: random.Random) -> list[Any]:
    t0 = START + timedelta(seconds=i * 60)
    task, requirement, session, agent = f"T-{i}", f"R-{i // 10}", f"S-{i}", f"A-{i % 100}"
    refs: dict[str, Any] = {"source": "bench", "project_id": f"P-{i % 5}", "task_id": task}
    parent = f"T-{i - 1}" if i % 10 else None
    sha = hashlib.sha1(str(i).encode(), usedforsecurity=False).hexdigest()  # a real SHA: prefixes rarely collide
    story: list[Any] = [
        TaskCreated(
            **refs,
            occurred_at=t0,
            requirement_id=requirement,
            agent_id=agent,
            payload=TaskCreatedPayload(title=f"task {i}", parent_task_id=parent),
        ),
        TaskStarted(**refs, occurred_at=t0 + timedelta(seconds=1), agent_id=agent),
        SessionStarted(**refs, occurred_at=t0 + timedelta(seconds=1), session_id=session, agent_id=agent),
        SessionEnded(source="bench", occurred_at=t0 + timedelta(seconds=55), session_id=session),
        TaskCompleted(**refs, occurred_at=t0 + timedelta(seconds=56)),
        LinkCreated(**refs, occurred_at=t0 + timedelta(seconds=2), payload=LinearIssueLink(external_id=f"ENG-{i}")),
        PullRequestOpened(
            source="bench",
            occurred_at=t0 + timedelta(seconds=50),
            payload=PullRequestOpenedPayload(
                repository="acme/web",
                number=i + 1,
                branch=f"eng-{i}-work",
                title=f"work {i}",
                head_sha=sha,
                author=agent,
                author_kind="agent",
            ),
        ),
        CommitPushed(
            source="bench",
            occurred_at=t0 + timedelta(seconds=51),
            payload=CommitPushedPayload(
                sha=sha,
                repository="acme/web",
                branch=f"eng-{i}-work",
                authored_at=t0,
                author=agent,
                author_kind="agent",
                pr_number=i + 1,
            ),
        ),
    ]
    if i % 10 == 0:
        story.append(
            RequirementCreated(
                source="bench",
                occurred_at=t0,
                requirement_id=requirement,
                project_id=f"P-{i % 5}",
                payload=RequirementCreatedPayload(title=f"req {i}"),
            )
        )
        d = {"deployment_id": f"D-{i}", "environment": "production", "commit_sha": sha}
        story += [
            DeploymentStarted(
                source="bench", occurred_at=t0 + timedelta(seconds=57), payload=DeploymentStartedPayload(**d)
            ),
            DeploymentCompleted(
                source="bench", occurred_at=t0 + timedelta(seconds=58), payload=DeploymentCompletedPayload(**d)
            ),
        ]
    if i > 3 and rng.random() < 0.3:
        story.append(
            TaskDependencyAdded(
                **refs,
                occurred_at=t0 + timedelta(seconds=3),
                payload=TaskDependencyAddedPayload(depends_on_task_id=f"T-{i - rng.randint(1, 3)}"),
            )
        )
    return story


def as_rows(events: list[Any]) -> list[CleanRow]:
    decoded = CLEAN_ROWS.decode("clean", 0, 0, encode_rows([orjson.dumps(event_to_row(e)) for e in events]))
    return [row for row in decoded if isinstance(row, CleanRow)]


def batches(rows: list[CleanRow], size: int) -> list[list[CleanRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def reduce_cost(rows: list[CleanRow], size: int) -> dict[str, float]:
    """Microseconds per event of each writer's ``reduce`` (Python only)."""
    cost: dict[str, float] = {}
    for projection in PROJECTIONS:
        writer = projection()
        started = time.perf_counter()
        for batch in batches(rows, size):
            writer.reduce(batch)
        cost[writer.name] = (time.perf_counter() - started) / len(rows) * 1e6
    aggregates = AggregatesWriter()
    started = time.perf_counter()
    for batch in batches(rows, size):
        aggregates.prepare(batch)
    cost[aggregates.name] = (time.perf_counter() - started) / len(rows) * 1e6
    return cost


async def write_cost(conn: asyncpg.Connection, rows: list[CleanRow], size: int) -> dict[str, float]:
    """Microseconds per event of each writer's ``write`` (reduce + upsert), one transaction per batch."""
    writers: list[Any] = [projection() for projection in PROJECTIONS] + [AggregatesWriter()]
    spent: dict[str, float] = defaultdict(float)
    for batch in batches(rows, size):
        async with conn.transaction():
            for writer in writers:
                started = time.perf_counter()
                async with conn.transaction():
                    await writer.write(conn, batch)
                spent[writer.name] += time.perf_counter() - started
    return {name: seconds / len(rows) * 1e6 for name, seconds in spent.items()}


async def sink_cost(conn: asyncpg.Connection, rows: list[CleanRow], size: int) -> float:
    """Microseconds per event of the sink's COPY into ``events``."""
    sink = EventSink()
    started = time.perf_counter()
    for batch in batches(rows, size):
        async with conn.transaction():
            await sink.write(conn, batch)
    return (time.perf_counter() - started) / len(rows) * 1e6


QUERIES = {
    "one task's row": ("SELECT * FROM analytics.tasks WHERE task_id = $1", "T-{n}"),
    "one requirement's tree": ("SELECT * FROM analytics.task_tree WHERE requirement_id = $1", "R-{r}"),
    "one requirement's row": ("SELECT * FROM analytics.requirements WHERE requirement_id = $1", "R-{r}"),
    "one task's dependencies": ("SELECT * FROM analytics.task_dependencies WHERE task_id = $1", "T-{n}"),
    "attribution of one session's events": ("SELECT * FROM analytics.event_attribution WHERE session_id = $1", "S-{n}"),
    "timeline of a task": ("SELECT * FROM events WHERE task_id = $1 ORDER BY occurred_at", "T-{n}"),
    "events of a correlation id": ("SELECT * FROM events WHERE correlation_id = $1 ORDER BY occurred_at", "C-{n}"),
    "an agent's hour": (
        "SELECT * FROM events WHERE agent_id = $1 AND occurred_at >= now() - interval '2 days'"
        " AND occurred_at < now() - interval '2 days' + interval '1 hour'",
        "A-7",
    ),
    "deployments of a day": (
        "SELECT * FROM events WHERE event_type = 'deployment.started' AND occurred_at >= now() - interval '2 days'"
        " AND occurred_at < now() - interval '1 day'",
        "",
    ),
    "one deployment": ("SELECT * FROM analytics.deployments WHERE deployment_id = $1", "D-{d}"),
    "one pull request": ("SELECT * FROM analytics.pull_requests WHERE pull_request = $1", "acme/web#{n1}"),
}


async def explain(conn: asyncpg.Connection, tasks: int) -> dict[str, dict[str, Any]]:
    """Indexes used and execution time of each typical query."""
    n = tasks // 2
    fill = {"n": n, "n1": n + 1, "r": n // 10, "d": (n // 10) * 10}
    await conn.execute("ANALYZE")
    plans: dict[str, dict[str, Any]] = {}
    for what, (sql, argument) in QUERIES.items():
        arguments = [argument.format(**fill)] if argument else []
        lines = [r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", *arguments)]
        text = "\n".join(lines)
        indexes = sorted(set(re.findall(r"(?:Index|Index Only) Scan(?: Backward)? using (\S+)", text)))
        indexes += sorted(set(re.findall(r"Bitmap Index Scan on (\S+)", text)))
        seq = sorted(set(re.findall(r"Seq Scan on (\S+)", text)))
        ms = float(re.findall(r"Execution Time: ([0-9.]+) ms", text)[-1])
        plans[what] = {"indexes": indexes, "seq_scans": seq, "ms": ms, "plan": lines}
    return plans


async def measure(admin_url: str, events: int, size: int, stories: bool = False) -> dict[str, Any]:
    say(f"building ~{events:,} events{' (stories)' if stories else ''}...")
    if stories:
        from devtrail.producers.stories import Stories

        rows = as_rows(Stories("bp", seed=1).events(events))
    else:
        rows = as_rows(workload(events))
    tasks = max(10, events // 100)
    say(f"{len(rows):,} events ({tasks:,} tasks); reduce only...")
    figures: dict[str, Any] = {"events": len(rows), "batch": size, "reduce_us": reduce_cost(rows, size)}
    url = await fresh_database(admin_url)
    conn = await asyncpg.connect(url)
    try:
        say("writers, first pass...")
        figures["write_us"] = await write_cost(conn, rows, size)
        say("writers, replay...")
        figures["replay_us"] = await write_cost(conn, rows, size)
        say("sink COPY with the analysts' indexes...")
        figures["sink_us_with_indexes"] = await sink_cost(conn, rows, size)
        say("projections rebuild...")
        options = RebuildOptions(sink_group="none", writers_group="none", clean_topic="none", batch_events=size)
        report = await rebuild_projections(conn, options)
        figures["rebuild"] = {"events": report.events, "seconds": report.seconds, "per_s": report.events_per_second}
        say("EXPLAIN of the typical queries...")
        figures["explain"] = await explain(conn, tasks)
        await conn.execute("TRUNCATE events")
        for suffix in EVENT_INDEXES:
            await conn.execute(f"DROP INDEX events_{suffix}")
        say("sink COPY without them...")
        figures["sink_us_without_indexes"] = await sink_cost(conn, rows, size)
    finally:
        await conn.close()
    return figures


def report(figures: dict[str, Any]) -> None:
    print(f"projection writers, {figures['events']:,} events in batches of {figures['batch']:,} (us per event)")
    print(f"  {'writer':<26}{'reduce':>9}{'write':>9}{'replay':>9}")
    for name in figures["write_us"]:
        print(
            f"  {name:<26}{figures['reduce_us'][name]:>9.2f}{figures['write_us'][name]:>9.2f}"
            f"{figures['replay_us'][name]:>9.2f}"
        )
    total = {
        k: sum(v for n, v in figures[k].items() if n != "aggregates") for k in ("reduce_us", "write_us", "replay_us")
    }
    print(f"  {'all projections':<26}{total['reduce_us']:>9.2f}{total['write_us']:>9.2f}{total['replay_us']:>9.2f}")
    print(f"  => one writer host keeps up with {1e6 / total['write_us']:,.0f} events/s (projections alone)")
    every = {k: sum(figures[k].values()) for k in ("reduce_us", "write_us", "replay_us")}
    label = "projections + aggregates"
    print(f"  {label:<26}{every['reduce_us']:>9.2f}{every['write_us']:>9.2f}{every['replay_us']:>9.2f}")
    with_i, without = figures["sink_us_with_indexes"], figures["sink_us_without_indexes"]
    print(f"sink COPY: {with_i:.2f} us/event with the 6 analysts' indexes on events, {without:.2f} without")
    rebuild = figures["rebuild"]
    print(f"rebuild: {rebuild['events']:,} events in {rebuild['seconds']:.1f}s = {rebuild['per_s']:,.0f} events/s")
    for what, plan in figures["explain"].items():
        uses = ", ".join(plan["indexes"]) or "no index"
        seq = f"; seq scans: {', '.join(plan['seq_scans'])}" if plan["seq_scans"] else ""
        print(f"  {what:<38} {plan['ms']:>8.2f} ms  {uses}{seq}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.database_url:
        return await measure(args.database_url, args.events, args.batch, args.stories)
    from devtrail.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="dtp-", dir="/tmp") as work:
        server = EmbeddedPostgres(Path(work) / "pg", database="postgres")
        try:
            return await measure(await server.start(), args.events, args.batch, args.stories)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events in the workload (default 200,000)")
    parser.add_argument("--batch", type=int, default=20_000, help="events per batch (the writer host's default)")
    parser.add_argument("--database-url", help="an admin DSN of a PostgreSQL to use (default: embedded)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--stories", action="store_true", help="story-shaped load (producers.stories) instead")
    args = parser.parse_args()
    figures = asyncio.run(main_async(args))
    report(figures)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
