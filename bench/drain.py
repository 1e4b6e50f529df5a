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


#: The pipelines the drain can measure, each adding to the one before it:
#: ``label suffix -> (settings overrides, whether the rules worker runs too)``.
PIPELINES: dict[str, tuple[dict[str, object], bool]] = {
    # The spine: validate, dedup, scrub, store; the writer host keeps only event_counts_hourly.
    "spine": ({"correlation": False, "writers": "event_counts_hourly"}, False),
    # + correlation in the processors (the link graph, enrichment, the links it publishes).
    "correlation": ({"writers": "event_counts_hourly"}, False),
    # + the analyst aggregates (issue 12's writer), which read attribution from correlation.
    "aggregates": ({"writers": "event_counts_hourly,aggregates"}, False),
    # + every projection writer: the default pipeline.
    "default": ({}, False),
    # + the rules worker with the built-in rules.
    "rules": ({}, True),
}


def drain_label(pipeline: str) -> str:
    """The prefix of a pipeline's figures (``drain``, ``drain_spine``, ``drain_rules`` as before)."""
    return "drain" if pipeline == "default" else f"drain_{pipeline}"


async def bench_drain(
    stack: Stack,
    admin_url: str,
    events: int,
    duplicate_rate: float = 0.05,
    spine: bool = False,
    rules: bool = False,
    pipeline: str | None = None,
) -> dict[str, object]:
    """Pre-load, start processor + sink + writers, time until every event is stored and counted.

    With the default settings (correlation and every projection writer on); ``spine``: with
    correlation off and only ``event_counts_hourly`` in the writer host, as before them
    (its figures are named ``drain_spine_...``); ``rules``: the rules worker too, with the
    built-in rules, timed until it has also read the whole clean topic (``drain_rules_...``);
    ``pipeline``: one of ``PIPELINES`` by name (instead of ``spine`` / ``rules``).

    Besides the rates, it reports the CPU each program used per event between 10 % and 90 %
    of the events counted (``..._steady_cpu_us_per_event``): in that window the two cores are
    saturated, so this is what the pipeline costs per event, and what bounds its rate.
    """
    pipeline = pipeline or ("spine" if spine else "rules" if rules else "default")
    overrides, rules = PIPELINES[pipeline]
    settings = fresh_settings(stack.settings, await fresh_database(admin_url), **overrides)
    await ensure_topics(settings, settings.replication_factor)
    duplicates = await preload(settings, events, duplicate_rate)
    conn = await asyncpg.connect(settings.database_url)
    try:
        progress = Milestones(events)
        cpu_before = machine_cpu_by_program()
        roles = ("processor", "sink", "writers", "rules") if rules else ("processor", "sink", "writers")
        await stack.start_workers(roles, settings)
        roles_by_pid = {w.pid: w.name.rsplit("-", 1)[0] for w in stack.workers if w.pid}

        steady_cpu: dict[int, dict[int, tuple[str, float]]] = {}

        async def aggregated_all() -> bool:
            counted = await conn.fetchval("SELECT coalesce(sum(count), 0) FROM event_counts_hourly")
            done = progress.observe(int(counted))
            for percent in (10, 90):
                if percent in progress.times and percent not in steady_cpu:
                    steady_cpu[percent] = machine_cpu_by_program()
            return done

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
    label = drain_label(pipeline)
    steady = steady_cpu_per_event(steady_cpu, progress, events, roles_by_pid)
    say(
        f"{label}: {events:,} events (+{duplicates:,} duplicates) stored and aggregated in {total:.1f}s"
        f" from worker start = {events / total:,.0f}/s overall, {progress.steady_rate:,.0f}/s steady (10-90 %)"
    )
    say(f"{label}: worker CPU seconds {cpu}; peak RSS MB {rss}")
    say(f"{label}: CPU seconds by program, worker start to the end {machine}")
    say(f"{label}: CPU us per event by program between 10 % and 90 % counted {steady}")
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
        f"{label}_steady_cpu_us_per_event": steady,
        f"{label}_peak_rss_mb": rss,
    }


def steady_cpu_per_event(
    snapshots: dict[int, dict[int, tuple[str, float]]],
    progress: Milestones,
    events: int,
    roles_by_pid: dict[int, str] | None = None,
) -> dict[str, float]:
    """CPU microseconds per event by program between the 10 % and 90 % snapshots, with the
    ``total`` and how many cores were busy on average (``cores_busy``).

    ``roles_by_pid`` names the workers' processes by role (``processor``, ``sink``, ...);
    other Python processes (the benchmark's own polling) stay ``python``. Empty when a
    snapshot is missing (the count jumped past 90 % in one poll).
    """
    if 10 not in snapshots or 90 not in snapshots:
        return {}
    roles = roles_by_pid or {}

    def named(snapshot: dict[int, tuple[str, float]]) -> dict[int, tuple[str, float]]:
        return {pid: (roles.get(pid, name), s) for pid, (name, s) in snapshot.items()}

    used = cpu_used_between(named(snapshots[10]), named(snapshots[90]), progress.times[90] - progress.times[10])
    counted = 0.8 * events
    per_event = {name: round(s * 1e6 / counted, 1) for name, s in used.items() if name != "wall_seconds"}
    # The machine's utilisation in the window, in cores (2.0: both cores busy all along).
    return {
        **per_event,
        "total": round(sum(per_event.values()), 1),
        "cores_busy": round(sum(s for n, s in used.items() if n != "wall_seconds") / used["wall_seconds"], 2),
    }
