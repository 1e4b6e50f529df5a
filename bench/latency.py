"""End-to-end latency at a steady offered load: from ``occurred_at`` to the stored row."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from devtrail.bench.harness import (
    fresh_database,
    fresh_settings,
    say,
    wait_for,
    wait_for_stable_groups,
    workers_cpu,
    workers_peak_rss,
)
from devtrail.consumers.rules.engine import settled
from devtrail.producers import EventProducer, Workload, WorkloadShape
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.ids import uuid7
from devtrail.stack import Stack
from devtrail.topics import ensure_topics

TICK_S = 0.01

#: Derived events: from their cause's ``occurred_at`` (the moment the cause was emitted) to
#: the derived row stored, through processor, writers, rules worker, processor again and sink.
_DERIVED_PERCENTILES = """
SELECT percentile_cont(ARRAY[0.5, 0.99, 0.999]) WITHIN GROUP (ORDER BY ms) AS p, max(ms) AS worst, count(*) AS n
FROM (SELECT extract(epoch FROM d.ingested_at - c.occurred_at) * 1000 AS ms
      FROM events d JOIN events c ON c.event_id = d.causation_id
      WHERE d.source LIKE 'devtrail-rules:%' AND c.source = $1) AS x
"""

#: The same derived events, per stage, from the rules' outbox (``rules.emitted``): cause emitted ->
#: its rule's transaction began (processor, writers, the rules worker's batch and its wait for
#: the projections); -> published and acknowledged (rules, outbox, Kafka); -> the derived row
#: stored (processor and sink again); and the cause's own trip to storage. p50 and p99, ms.
_DERIVED_STAGES = """
WITH x AS (
    SELECT extract(epoch FROM o.created_at - c.occurred_at) * 1000 AS to_rule,
           extract(epoch FROM o.published_at - o.created_at) * 1000 AS rule_to_published,
           extract(epoch FROM d.ingested_at - o.published_at) * 1000 AS published_to_stored,
           extract(epoch FROM c.ingested_at - c.occurred_at) * 1000 AS cause_stored
    FROM events d JOIN events c ON c.event_id = d.causation_id JOIN rules.emitted o ON o.event_id = d.event_id
    WHERE d.source LIKE 'devtrail-rules:%' AND c.source = $1
)
SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY to_rule) AS to_rule,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY rule_to_published) AS rule_to_published,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY published_to_stored) AS published_to_stored,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY cause_stored) AS cause_stored
FROM x
"""

_PERCENTILES = """
SELECT percentile_cont(ARRAY[0.5, 0.99, 0.999]) WITHIN GROUP (ORDER BY ms) AS p, max(ms) AS worst, count(*) AS n
FROM (SELECT extract(epoch FROM ingested_at - occurred_at) * 1000 AS ms FROM events WHERE source = $1) AS x
"""


#: The entity ids a template event is renamed by, each time the template comes round again.
_RENAMED = ("task_id", "session_id", "requirement_id")


def _fresh(event: Envelope, now: datetime, lap: int) -> Envelope:
    """``event`` stamped ``now`` with a new id, and, from the template's second lap, its own tasks,
    sessions and requirements: a lap repeating the last one's tasks would make every task completed
    twice, and the rules would flag a third of the events."""
    update: dict[str, object] = {"event_id": uuid7(), "occurred_at": now}
    if lap:
        for name in _RENAMED:
            value = getattr(event, name)
            if value is not None:
                update[name] = f"{value}-l{lap}"
    return event.model_copy(update=update)


async def offer(producer: EventProducer, workload: Workload, rate: int, seconds: float) -> int:
    """Emit ``rate`` events/s for ``seconds``, each stamped ``occurred_at`` = the moment it is emitted."""
    template = list(workload.events(5000))
    per_tick = max(1, round(rate * TICK_S))
    started = time.perf_counter()
    sent, ticks = 0, 0
    waiters: dict[int, asyncio.Future[None]] = {}
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed / TICK_S) + 1
        for _ in range(due - ticks):
            now = datetime.now(UTC)
            for i in range(per_tick):
                lap, at = divmod(sent + i, len(template))
                # A microsecond apart, in the template's order: two events of a task at the same
                # time are ordered by their random ids, and a task could end up started, not done.
                waiter = producer.emit_nowait(_fresh(template[at], now + timedelta(microseconds=i), lap))
                waiters[id(waiter)] = waiter
            sent += per_tick
        ticks = due
        await asyncio.sleep(max(0.0, ticks * TICK_S - (time.perf_counter() - started)))
    await asyncio.gather(*waiters.values())
    return sent


async def bench_latency(
    stack: Stack, admin_url: str, rate: int, seconds: float, rules: bool = False
) -> dict[str, object]:
    """Run the pipeline at ``rate`` events/s for ``seconds``; report latency percentiles.

    ``rules``: with the rules worker too (figures ``latency_rules_...``), and the latency of
    the events it derives (the workload's tasks come in requirements of four, so the rollup
    derives a ``requirement.completed`` when the last of them completes), from their cause's
    emission to the derived row stored.
    """
    settings = fresh_settings(stack.settings, await fresh_database(admin_url))
    await ensure_topics(settings, settings.replication_factor)
    roles = ("processor", "sink", "writers", "rules") if rules else ("processor", "sink", "writers")
    await stack.start_workers(roles, settings)
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with EventProducer(settings) as producer:
            warmup = Workload("bench-warmup", seed=2)
            await producer.emit_many(list(warmup.events(200)))
            await wait_for(
                lambda: _count(conn, warmup.source, 200), 120, "the warm-up events (workers joined)", poll_s=0.2
            )
            await wait_for_stable_groups(
                settings.kafka_bootstrap_servers,
                {
                    settings.processor_group: settings.processor_workers,
                    settings.sink_group: settings.sink_workers,
                    settings.writers_group: 1,
                },
            )
            # Tasks in requirements of four: the rollup rule derives a requirement.completed
            # when the last of them completes (and the lifecycle checks nothing).
            workload = Workload("bench-latency", seed=4, shape=WorkloadShape(tasks_per_requirement=4))
            say(f"latency: offering {rate:,} events/s for {seconds:.0f}s")
            sent = await offer(producer, workload, rate, seconds)
        await wait_for(lambda: _count(conn, workload.source, sent), 120, "every offered event stored", poll_s=0.2)
        row = await conn.fetchrow(_PERCENTILES, workload.source)
        derived = stages = None
        if rules:
            # Every derived event stored (the rules worker settled twice in a row): counting them a
            # fixed time after the last cause would leave out those of a rules worker behind.
            in_a_row = 0

            async def rules_done() -> bool:
                nonlocal in_a_row
                in_a_row = in_a_row + 1 if await settled(conn, settings.rules_group, settings.writers_group) else 0
                return in_a_row >= 2

            await wait_for(rules_done, 300, "the rules worker's derived events", poll_s=0.25)
            derived = await conn.fetchrow(_DERIVED_PERCENTILES, workload.source)
            stages = await conn.fetchrow(_DERIVED_STAGES, workload.source)
        rss, cpu = workers_peak_rss(stack), workers_cpu(stack)
    finally:
        await conn.close()
        await stack.stop_workers()
    label = "latency_rules" if rules else "latency"
    p50, p99, p999 = row["p"]
    say(f"{label}: {row['n']:,} events, p50 {p50:.0f} ms, p99 {p99:.0f} ms, p99.9 {p999:.0f} ms")
    results: dict[str, object] = {
        f"{label}_offered_events_per_second": rate,
        f"{label}_seconds": seconds,
        f"{label}_events": int(row["n"]),
        f"{label}_ms_p50": round(float(p50), 1),
        f"{label}_ms_p99": round(float(p99), 1),
        f"{label}_ms_p999": round(float(p999), 1),
        f"{label}_ms_max": round(float(row["worst"]), 1),
        f"{label}_worker_cpu_seconds": cpu,
        f"{label}_peak_rss_mb": rss,
    }
    if derived is not None and derived["n"]:
        d50, d99, d999 = derived["p"]
        say(f"{label}: {derived['n']:,} derived events, p50 {d50:.0f} ms, p99 {d99:.0f} ms from their cause's emission")
        results |= {
            "derived_events": int(derived["n"]),
            "derived_ms_p50": round(float(d50), 1),
            "derived_ms_p99": round(float(d99), 1),
            "derived_ms_p999": round(float(d999), 1),
            "derived_ms_max": round(float(derived["worst"]), 1),
        }
        if stages is not None and stages["to_rule"] is not None:
            breakdown = {name: [round(float(v), 1) for v in stages[name]] for name in stages.keys()}  # noqa: SIM118
            say(f"{label}: derived events by stage, [p50, p99] ms: {breakdown}")
            results["derived_stage_ms_p50_p99"] = breakdown
    return results


async def _count(conn: asyncpg.Connection, source: str, expected: int) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM events WHERE source = $1", source) >= expected)
