"""The producer SDK against a real broker: acknowledgements, partitions, bounded buffer."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from devtrail.settings import StackSettings
from devtrail.topics import ensure_topics
from producers import BufferFullError, EventProducer, ProducerClosedError, ProducerSettings
from schemas.codec import decode_message
from tests.factories import task_created

pytestmark = pytest.mark.integration


def producer_settings(stack_settings: StackSettings, **overrides: object) -> ProducerSettings:
    fields = {
        "kafka_bootstrap_servers": stack_settings.kafka_bootstrap_servers,
        "topic_prefix": stack_settings.topic_prefix,
        **overrides,
    }
    return ProducerSettings(**fields)


async def test_acknowledged_events_are_bundled_where_the_kafka_partitioner_puts_them(
    stack_settings: StackSettings,
) -> None:
    await ensure_topics(stack_settings)
    events = [task_created(task_id=f"T{i % 7}") for i in range(300)]
    async with EventProducer(producer_settings(stack_settings)) as producer:
        assert producer._kafka is not None and producer._kafka._compression_type == "zstd"  # the default
        await producer.emit_many(events)
    topic = stack_settings.topics.input_topic(events[0].family)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=stack_settings.kafka_bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: dict[str, int] = {}
    messages = 0
    try:
        while len(seen) < len(events):
            fetched = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
            for tp, batch in fetched.items():
                for message in batch:
                    messages += 1
                    for raw in decode_message(message.value):
                        seen[raw["event_id"]] = tp.partition
                        expected = (murmur2(raw["task_id"].encode()) & 0x7FFFFFFF) % stack_settings.partitions
                        assert tp.partition == expected
    finally:
        await consumer.stop()
    assert set(seen) == {str(e.event_id) for e in events}
    assert messages < len(events) / 10  # bundled, not one message per event


async def test_a_full_buffer_raises_when_told_to_and_never_drops(stack_settings: StackSettings) -> None:
    await ensure_topics(stack_settings)
    settings = producer_settings(stack_settings, producer_max_pending_events=3, producer_overflow="raise")
    async with EventProducer(settings) as producer:
        futures = [producer.emit_nowait(task_created(task_id=f"T{i}")) for i in range(3)]
        with pytest.raises(BufferFullError):
            producer.emit_nowait(task_created(task_id="one too many"))
        await asyncio.gather(*futures)
        producer.emit_nowait(task_created(task_id="room again"))


async def test_emitting_on_a_closed_producer_says_so(stack_settings: StackSettings) -> None:
    producer = EventProducer(producer_settings(stack_settings))
    with pytest.raises(ProducerClosedError, match="not started"):
        producer.emit_nowait(task_created())
