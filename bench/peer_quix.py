"""Quix Streams with its PostgreSQL sink, same workload, same machine (full run only).

Quix reads one JSON event per Kafka message (it does not know devtrail's bundles) and
writes with its sink (``on_conflict_do_nothing``, primary key ``event_id``). Needs the
``bench`` extra (``pip install 'devtrail[bench]'``).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from urllib.parse import parse_qs, urlparse

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtrail.bench.harness import Milestones, fresh_database, fresh_settings, peak_rss_mb, say, wait_for
from devtrail.producers import EventProducer, Workload
from devtrail.stack import Stack


async def bench_quix(stack: Stack, admin_url: str, events: int) -> dict[str, object]:
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        say("peer: quixstreams is not installed (pip install 'devtrail[bench]'); skipped")
        return {"peer_quix_events_per_second": None}
    settings = fresh_settings(stack.settings, await fresh_database(admin_url))
    topic = f"{settings.topic_prefix}.quix-input"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.partitions, 1)])
    finally:
        await admin.close()
    workload = Workload("bench-quix", seed=13)
    async with EventProducer(settings) as producer:
        for start in range(0, events, 10_000):
            chunk = list(workload.events(min(10_000, events - start)))
            await asyncio.gather(
                *[producer.send_raw(topic, e.model_dump_json().encode(), e.partition_key()) for e in chunk]
            )
    url = urlparse(settings.database_url)
    host = parse_qs(url.query).get("host", [url.hostname or "127.0.0.1"])[0]
    args = [settings.kafka_bootstrap_servers, topic, f"{settings.topic_prefix}-quix", host, str(url.port or 5432)]
    args += [url.path.lstrip("/"), url.username or "postgres", "quix_events"]
    with tempfile.TemporaryDirectory(prefix="dtb-quix-") as state_dir:
        return await _measure(settings.database_url, [*args, state_dir], events)


async def _measure(database_url: str, args: list[str], events: int) -> dict[str, object]:
    """Run the Quix app with ``args`` until it has stored ``events`` rows; its rates and memory."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devtrail.bench.quix_app",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    conn = await asyncpg.connect(database_url)
    progress = Milestones(events)
    try:

        async def done() -> bool:
            if await conn.fetchval("SELECT to_regclass('quix_events')") is None:
                return False
            return progress.observe(await conn.fetchval("SELECT count(*) FROM quix_events"))

        await wait_for(done, 120 + events / 500, "Quix Streams to store every event", poll_s=0.1)
        rss = peak_rss_mb(process.pid)
    finally:
        await conn.close()
        process.terminate()
        await process.wait()
    say(
        f"peer: Quix Streams stored {events:,} events, {progress.steady_rate:,.0f}/s steady (10-90 %),"
        f" {progress.overall_rate:,.0f}/s overall; peak RSS {rss} MB"
    )
    return {
        "peer_quix_events_per_second": round(progress.steady_rate),
        "peer_quix_events_per_second_including_startup": round(progress.overall_rate),
        "peer_quix_peak_rss_mb": rss,
    }
