"""Drain: N events pre-loaded into Kafka, timed until all are stored and aggregated."""

from __future__ import annotations

import time

import asyncpg

from devtrail.bench.harness import (
    Milestones,
    Timer,
    cpu_used_between,
    fresh_database,
    fresh_settings,
    machine_cpu_by_program,
    say,
    wait_for,
    workers_cpu,
    workers_peak_rss,
)
from devtrail.bench.producer import emit_all
from devtrail.producers import EventProducer, Workload
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from devtrail.topics import ensure_topics

CHUNK = 20_000


async def preload(settings: StackSettings, events: int, duplicate_rate: float) -> int:
    """Produce ``events`` unique events (plus re-sent copies) before any worker runs."""
    workload = Workload("bench-drain", seed=5)
    produced = 0
    timer = Timer()
    async with EventProducer(settings) as producer:
        while produced < events:
            chunk = list(workload.events(min(CHUNK, events - produced)))
            copies = chunk[: int(len(chunk) * duplicate_rate)]
            await emit_all(producer, chunk + copies, len(chunk) + len(copies))
            produced += len(chunk)
            if produced % 100_000 == 0 or produced == events:
                say(f"drain: pre-loaded {produced:,}/{events:,} events ({timer.seconds:.0f}s)")
    return int(events * duplicate_rate)


async def bench_drain(
    stack: Stack, admin_url: str, events: int, duplicate_rate: float = 0.05, spine: bool = False, rules: bool = False
) -> dict[str, object]:
    """Pre-load, start processor + sink + writers, time until every event is stored and counted.

    With the default settings (correlation and every projection writer on); ``spine``: with
    correlation off and only ``event_counts_hourly`` in the writer host, as before them
    (its figures are named ``drain_spine_...``); ``rules``: the rules worker too, with the
    built-in rules, timed until it has also read the whole clean topic (``drain_rules_...``).
    """
    overrides: dict[str, object] = {"correlation": False, "writers": "event_counts_hourly"} if spine else {}
    settings = fresh_settings(stack.settings, await fresh_database(admin_url), **overrides)
    await ensure_topics(settings, settings.replication_factor)
    duplicates = await preload(settings, events, duplicate_rate)
    conn = await asyncpg.connect(settings.database_url)
    try:
        progress = Milestones(events)
        cpu_before = machine_cpu_by_program()
        roles = ("processor", "sink", "writers", "rules") if rules else ("processor", "sink", "writers")
        await stack.start_workers(roles, settings)

        async def aggregated_all() -> bool:
            counted = await conn.fetchval("SELECT coalesce(sum(count), 0) FROM event_counts_hourly")
            return progress.observe(int(counted))

        async def stored_all() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM events") >= events)

        # The aggregate is cheap to poll; it trails the sink (both read the clean topic).
        await wait_for(aggregated_all, 60 + events / 2000, "every event aggregated", poll_s=0.1)
        await wait_for(stored_all, 120, "every event stored", poll_s=0.1)

        async def ruled_all() -> bool:
            """The rules group has read as far as the writers (both read the whole clean topic)."""
            read = await conn.fetchval(
                "SELECT coalesce(sum(next_offset) FILTER (WHERE consumer_group = $1), 0) "
                "- coalesce(sum(next_offset) FILTER (WHERE consumer_group = $2), 0) FROM consumer_offsets",
                settings.rules_group,
                settings.writers_group,
            )
            return bool(read >= 0)

        if rules:
            await wait_for(ruled_all, 120, "the rules worker through the clean topic", poll_s=0.1)
        finished = time.perf_counter()
        machine = cpu_used_between(cpu_before, machine_cpu_by_program(), finished - progress.started)
        rss, cpu = workers_peak_rss(stack), workers_cpu(stack)
        stored = await conn.fetchval("SELECT count(*) FROM events")
        counted = await conn.fetchval("SELECT sum(count) FROM event_counts_hourly")
    finally:
        await conn.close()
        await stack.stop_workers()
    total = finished - progress.started
    label = "drain_spine" if spine else "drain_rules" if rules else "drain"
    say(
        f"{label}: {events:,} events (+{duplicates:,} duplicates) stored and aggregated in {total:.1f}s"
        f" from worker start = {events / total:,.0f}/s overall, {progress.steady_rate:,.0f}/s steady (10-90 %)"
    )
    say(f"{label}: worker CPU seconds {cpu}; peak RSS MB {rss}")
    say(f"{label}: CPU seconds by program, worker start to the end {machine}")
    return {
        f"{label}_events": events,
        f"{label}_duplicates_sent": duplicates,
        f"{label}_stored": int(stored),
        f"{label}_aggregated": int(counted),
        f"{label}_events_per_second": round(progress.steady_rate),
        f"{label}_events_per_second_including_startup": round(events / total),
        f"{label}_startup_seconds": round(progress.startup_seconds, 2),
        f"{label}_worker_cpu_seconds": cpu,
        f"{label}_cpu_seconds_by_program": machine,
        f"{label}_peak_rss_mb": rss,
    }
