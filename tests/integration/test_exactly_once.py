"""Events land exactly once in the events table and the aggregate, duplicates injected."""

from __future__ import annotations

import random

import asyncpg
import pytest

from devtrail.producers import EventProducer, Workload
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.integration.pipeline import aggregate_matches_events, counts, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.heavy]


async def test_duplicates_are_stored_and_counted_once(stack_settings: StackSettings, db: asyncpg.Connection) -> None:
    unique = Workload("eo", seed=1).events(3000)
    events = list(unique)
    resent = random.Random(1).sample(events, 600)
    async with Stack(stack_settings) as stack, EventProducer(stack.settings) as producer:
        await producer.emit_many(events)
        # Re-sent copies travel as single-event messages too, as a plain Kafka client sends them.
        for event in resent[:50]:
            await producer.send_raw(
                stack.settings.topics.input_topic(event.family), event.model_dump_json().encode(), event.partition_key()
            )
        await producer.emit_many(resent[50:])

        async def drained() -> bool:
            rows, _, aggregated = await counts(db)
            return rows >= 3000 and aggregated >= 3000

        await wait_for(drained, 90, "3,000 events stored and aggregated")
    assert await counts(db) == (3000, 3000, 3000)
    assert await aggregate_matches_events(db)
    stored_ids = {r["event_id"] for r in await db.fetch("SELECT event_id FROM events")}
    assert stored_ids == {e.event_id for e in events}
