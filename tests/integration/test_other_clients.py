"""Producers that are not devtrail's: librdkafka (confluent-kafka) publishing plain JSON, and
the blocking SDK for code that is not asyncio."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg
import jsonschema
import pytest

from devtrail.producers import ProducerSettings, SyncEventProducer, correlation
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.factories import task_created
from tests.integration.pipeline import counts, wait_for

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def example_events() -> list[tuple[str, dict[str, object]]]:
    """(topic family, event): one example per event type from the exported JSON Schemas, fresh ids."""
    index = json.loads((SCHEMAS / "index.json").read_text())
    events = []
    for entry in index["events"]:
        schema = json.loads((SCHEMAS / entry["file"]).read_text())
        for example in schema["examples"]:
            jsonschema.validate(example, schema)  # what a non-Python producer would check
            events.append((entry["family"], example | {"event_id": str(uuid.uuid4())}))
    return events


async def test_librdkafka_json_events_land_like_sdk_ones(stack_settings: StackSettings, db: asyncpg.Connection) -> None:
    from confluent_kafka import Producer

    events = example_events()
    assert len(events) >= 30
    async with Stack(stack_settings) as stack:
        producer = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap_servers, "acks": "all"})
        for family, event in events:
            key = event.get("task_id") or event.get("session_id") or event.get("correlation_id") or event["event_id"]
            producer.produce(f"{stack.settings.topic_prefix}.{family}", json.dumps(event).encode(), str(key).encode())
        assert producer.flush(30) == 0

        async def all_stored() -> bool:
            return (await counts(db))[0] >= len(events)

        await wait_for(all_stored, 60, "every librdkafka event stored")
    rows = await db.fetch("SELECT event_id::text, event_type, payload FROM events")
    assert {r["event_id"] for r in rows} == {e["event_id"] for _, e in events}
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_the_blocking_producer_fills_correlation_and_waits_for_acks(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    async with Stack(stack_settings) as stack:
        settings = ProducerSettings(
            kafka_bootstrap_servers=stack.settings.kafka_bootstrap_servers, topic_prefix=stack.settings.topic_prefix
        )

        def blocking_service() -> None:
            with SyncEventProducer(settings) as producer, correlation(correlation_id="nightly-run", session_id="S-9"):
                producer.emit(task_created(task_id="sync-1"))
                producer.emit_many([task_created(task_id=f"sync-{i}") for i in range(2, 6)])

        await asyncio.to_thread(blocking_service)

        async def stored() -> bool:
            return (await counts(db))[0] >= 5

        await wait_for(stored, 60, "the blocking producer's events")
    rows = await db.fetch("SELECT correlation_id, session_id FROM events")
    assert {(r["correlation_id"], r["session_id"]) for r in rows} == {("nightly-run", "S-9")}
