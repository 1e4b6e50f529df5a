"""Workers killed with SIGKILL mid-stream lose nothing and count nothing twice."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from devtrail.consumers.clean import decode_rows
from devtrail.producers import EventProducer, Workload
from devtrail.schemas.ids import uuid7
from devtrail.settings import StackSettings
from devtrail.stack import Stack, WorkerProcess
from tests.integration.pipeline import aggregate_matches_events, counts, read_values, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.heavy]

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
        for name in ("sink-1", "writers-1", "processor-1", "sink-1", "writers-1"):
            stack.worker(name).kill()
            await asyncio.sleep(rng.uniform(0.3, 1.5))
        await producing

        async def drained() -> bool:
            rows, _, aggregated = await counts(db)
            return rows >= UNIQUE and aggregated >= UNIQUE

        await wait_for(drained, 150, f"{UNIQUE:,} events stored and aggregated after the kills")
        await asyncio.sleep(2)  # anything still in flight would show up as an over-count
        restarts = {w.name: w.restarts for w in stack.workers}
    assert restarts["sink-1"] >= 1 and restarts["writers-1"] >= 1 and restarts["processor-1"] >= 1
    assert await counts(db) == (UNIQUE, UNIQUE, UNIQUE)
    assert await aggregate_matches_events(db)


async def clean_rows(settings: StackSettings, at_least: int, quiet_s: float = 3.0) -> int:
    """Rows on the clean topic: read until ``at_least`` are there and nothing more comes for ``quiet_s``."""

    def rows(values: list[bytes]) -> int:
        return sum(len(decode_rows(v)) for v in values)

    values = await read_values(settings, settings.topics.clean, lambda read: rows(read) >= at_least, quiet_s, 90)
    return rows(values)


async def test_a_restarted_processor_still_knows_the_ids_it_has_seen(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    """The dedup index comes back from the table's changelog after SIGKILL: copies re-sent
    after the restart stop at the processor instead of reaching the clean topic."""
    events = list(Workload("restart", seed=5).events(3000))
    # One new event per (family, key) after the copies: once those are stored, every copy
    # before them in its partition has been through the processor.
    last_of_key = {(e.family, e.partition_key()): e for e in events}
    markers = [e.model_copy(update={"event_id": uuid7()}) for e in last_of_key.values()]
    async with Stack(stack_settings) as stack, EventProducer(stack.settings) as producer:
        await producer.emit_many(events)
        await wait_for(lambda: _stored(db, len(events)), 90, "the first copies stored")
        # Often killed before their first offset commit: partitions without one used to be
        # skipped after the restart (consumers/processor/transport.py).
        processors = [w for w in stack.workers if w.role == "processor"]
        for worker in processors:
            worker.kill()
        await wait_for(lambda: _restarted(processors), 30, "the processors restarted")
        await producer.emit_many(events)  # every one a copy of an event seen before the kill
        await producer.emit_many(markers)
        # 300 s, not 120: in 2 of about 8 full runs of the suite (never alone), one input
        # partition made no progress for over 100 s after both processors were SIGKILLed.
        # Nothing was lost; the cause is not found yet (see the issue-10 closing note).
        await wait_for(lambda: _stored(db, len(events) + len(markers)), 300, "the markers stored")
        assert await clean_rows(stack.settings, len(events) + len(markers)) == len(events) + len(markers)
    assert await counts(db) == (len(events) + len(markers),) * 3


async def _stored(db: asyncpg.Connection, expected: int) -> bool:
    return (await counts(db))[0] >= expected


async def _restarted(workers: list[WorkerProcess]) -> bool:
    return all(w.restarts >= 1 and w.alive for w in workers)
