"""Workers killed with SIGKILL mid-stream lose nothing and count nothing twice."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from devtrail.settings import StackSettings
from devtrail.stack import Stack
from producers import EventProducer, Workload
from tests.integration.pipeline import aggregate_matches_events, counts, wait_for

pytestmark = pytest.mark.integration

UNIQUE = 15_000


async def produce_slowly(producer: EventProducer, events: list, chunk: int = 300) -> None:  # type: ignore[type-arg]
    for start in range(0, len(events), chunk):
        await producer.emit_many(events[start : start + chunk])
        await asyncio.sleep(0.1)


async def test_sigkill_of_every_worker_mid_stream(stack_settings: StackSettings, db: asyncpg.Connection) -> None:
    events = list(Workload("crash", seed=3).events(UNIQUE))
    rng = random.Random(3)
    # Duplicates interleaved with the originals, some close by, some far behind.
    stream = events + rng.sample(events, UNIQUE // 10)
    rng.shuffle(stream)
    first_copy = {}
    for event in stream:
        first_copy.setdefault(event.event_id, event)
    async with Stack(stack_settings) as stack, EventProducer(stack.settings) as producer:
        producing = asyncio.create_task(produce_slowly(producer, stream))

        async def some_stored() -> bool:
            return (await counts(db))[0] > 500

        await wait_for(some_stored, 60, "the first rows")
        for name in ("sink-1", "aggregator-1", "processor-1", "sink-1", "aggregator-1"):
            stack.worker(name).kill()
            await asyncio.sleep(rng.uniform(0.3, 1.5))
        await producing

        async def drained() -> bool:
            rows, _, aggregated = await counts(db)
            return rows >= UNIQUE and aggregated >= UNIQUE

        await wait_for(drained, 150, f"{UNIQUE:,} events stored and aggregated after the kills")
        await asyncio.sleep(2)  # anything still in flight would show up as an over-count
        restarts = {w.name: w.restarts for w in stack.workers}
    assert restarts["sink-1"] >= 1 and restarts["aggregator-1"] >= 1 and restarts["processor-1"] >= 1
    assert await counts(db) == (UNIQUE, UNIQUE, UNIQUE)
    assert await aggregate_matches_events(db)
