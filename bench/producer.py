"""Producer throughput: one process, realistic events, every event acknowledged by the broker."""

from __future__ import annotations

import asyncio

from devtrail.bench.harness import Timer, say
from devtrail.producers import EventProducer, Workload
from devtrail.schemas.envelope import Envelope
from devtrail.settings import StackSettings
from devtrail.topics import ensure_topics

SAMPLE_SIZE = 50_000


async def emit_all(producer: EventProducer, events: list[Envelope], total: int, chunk: int = 10_000) -> None:
    """Emit ``total`` events cycling over ``events``, keeping one chunk in flight while the next is queued."""
    pending: asyncio.Future[None] | None = None
    sent = 0
    while sent < total:
        start = sent % len(events)
        batch = events[start : start + min(chunk, total - sent)]
        task = asyncio.ensure_future(producer.emit_many(batch))
        if pending is not None:
            await pending
        pending = task
        sent += len(batch)
    if pending is not None:
        await pending


async def bench_producer(settings: StackSettings, events: int) -> dict[str, object]:
    """Time ``events`` emits (pre-built realistic events, cycled) until all are acknowledged."""
    await ensure_topics(settings, settings.replication_factor)
    generate = Timer()
    sample = list(Workload("bench-producer", seed=11).events(min(events, SAMPLE_SIZE)))
    generation_rate = len(sample) / generate.seconds
    async with EventProducer(settings) as producer:
        timer = Timer()
        await emit_all(producer, sample, events)
        seconds = timer.seconds
        cpu = timer.cpu_seconds
    rate = events / seconds
    say(f"producer: {events:,} events acknowledged in {seconds:.2f}s = {rate:,.0f} events/s (CPU {cpu:.1f}s)")
    return {
        "producer_events_per_second": round(rate),
        "producer_seconds": round(seconds, 3),
        "producer_cpu_seconds": round(cpu, 2),
        "loadgen_events_per_second": round(generation_rate),
    }
