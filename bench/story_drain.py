"""Story drain: story-shaped events pre-loaded into Kafka, drained twice in the same run.

Once spine-only (``DEVTRAIL_CORRELATION=false``, the writer host running only
``event_counts_hourly``) and once with everything on (correlation in the processors, every
projection writer). The figure that matters is their ratio, measured in one run: this
machine's speed drifts too much for figures from different runs to be compared.
"""

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
from devtrail.producers import EventProducer
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from devtrail.topics import ensure_topics

CHUNK = 20_000


async def preload_stories(settings: StackSettings, events: int, session_calls: tuple[int, int]) -> int:
    """Publish at least ``events`` story events (whole stories); return how many."""
    from devtrail.producers.stories import Stories

    stories = Stories("bench", seed=7, session_calls=session_calls)
    batch = stories.events(events)
    timer = Timer()
    async with EventProducer(settings) as producer:
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            await emit_all(producer, chunk, len(chunk))
        say(f"stories: pre-loaded {len(batch):,} events ({timer.seconds:.0f}s)")
    return len(batch)


async def bench_story_drain(
    stack: Stack, admin_url: str, events: int, full: bool, agent_sessions: bool = False
) -> dict[str, object]:
    """Pre-load stories, start processor + sink + writers, time until all are stored and applied.

    ``agent_sessions``: sessions of 20 to 60 calls (``AGENT_SESSION_CALLS``, about 90 % calls)
    instead of the default 3 to 9 (about 60 % lifecycle events).
    """
    from devtrail.producers.stories import AGENT_SESSION_CALLS

    label = ("agent_" if agent_sessions else "") + ("full" if full else "spine")
    overrides: dict[str, object] = {} if full else {"correlation": False, "writers": "event_counts_hourly"}
    settings = fresh_settings(stack.settings, await fresh_database(admin_url), **overrides)
    await ensure_topics(settings, settings.replication_factor)
    total_events = await preload_stories(settings, events, AGENT_SESSION_CALLS if agent_sessions else (3, 9))
    conn = await asyncpg.connect(settings.database_url)
    try:
        progress = Milestones(total_events)
        cpu_before = machine_cpu_by_program()
        await stack.start_workers(("processor", "sink", "writers"), settings)

        stored = Milestones(total_events)
        polls = 0

        async def applied_all() -> bool:
            # The writers apply every writer of a batch in one transaction: the counts are
            # complete exactly when every projection is.
            nonlocal polls
            polls += 1
            if polls % 10 == 0 and not stored.done:  # the sink's progress, once a second
                stored.observe(int(await conn.fetchval("SELECT count(*) FROM events")))
            counted = await conn.fetchval("SELECT coalesce(sum(count), 0) FROM event_counts_hourly")
            return progress.observe(int(counted))

        async def stored_all() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM events") >= total_events)

        await wait_for(applied_all, 60 + total_events / 1000, f"every story event applied ({label})", poll_s=0.1)
        await wait_for(stored_all, 120, f"every story event stored ({label})", poll_s=0.1)
        finished = time.perf_counter()
        machine = cpu_used_between(cpu_before, machine_cpu_by_program(), finished - progress.started)
        rss, cpu = workers_peak_rss(stack), workers_cpu(stack)
        enriched = int(await conn.fetchval("SELECT count(*) FROM events WHERE attribution IS NOT NULL"))
    finally:
        await conn.close()
        await stack.stop_workers()
    total = finished - progress.started
    say(
        f"stories ({label}): {total_events:,} events stored and applied in {total:.1f}s = "
        f"{progress.steady_rate:,.0f}/s steady (10-90 %); {enriched:,} enriched"
    )
    return {
        f"stories_{label}_events": total_events,
        f"stories_{label}_events_per_second": round(progress.steady_rate),
        f"stories_{label}_seconds": round(total, 2),
        f"stories_{label}_stored_milestones_s": stored.milestones(),
        f"stories_{label}_applied_milestones_s": progress.milestones(),
        f"stories_{label}_enriched": enriched,
        f"stories_{label}_worker_cpu_seconds": cpu,
        f"stories_{label}_peak_rss_mb": rss,
        f"stories_{label}_machine_cpu_seconds": machine,
    }
