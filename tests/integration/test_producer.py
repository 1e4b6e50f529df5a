"""The producer SDK against a real broker: acknowledgements, partitions, bounded buffer, errors."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from devtrail.producers import (
    BufferFullError,
    DeliveryError,
    EventProducer,
    PartialDeliveryError,
    ProducerClosedError,
    ProducerSettings,
    SyncEventProducer,
)
from devtrail.schemas.codec import decode_message
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.observation_events import ValidationOutcome, ValidationResult, ValidationResultPayload
from devtrail.settings import StackSettings
from devtrail.topics import ensure_topics
from tests.factories import task_created
from tests.integration.pipeline import read_values

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


async def test_emitting_on_a_producer_not_started_or_closed_says_so(stack_settings: StackSettings) -> None:
    await ensure_topics(stack_settings)
    producer = EventProducer(producer_settings(stack_settings))
    with pytest.raises(ProducerClosedError, match="not started"):
        producer.emit_nowait(task_created())
    async with producer:
        await producer.emit(task_created())
    with pytest.raises(ProducerClosedError, match=r"producer is closed; call start\(\) again"):
        await producer.emit_many([task_created()])


def check(task_id: str, log: str = "") -> ValidationResult:
    details = {"log": log} if log else {}
    payload = ValidationResultPayload(validator="tests", outcome=ValidationOutcome.PASSED, details=details)
    return ValidationResult(source="tests", task_id=task_id, payload=payload)


async def stored_ids(stack_settings: StackSettings, topic: str, expected: int) -> list[str]:
    """Event ids on ``topic`` once ``expected`` are there and nothing more came for a second."""

    def ids(values: list[bytes]) -> list[str]:
        return [raw["event_id"] for value in values for raw in decode_message(value)]

    values = await read_values(stack_settings, topic, lambda read: len(ids(read)) >= expected, quiet_s=1.0)
    return ids(values)


async def test_a_failed_emit_many_says_which_events_were_delivered(stack_settings: StackSettings) -> None:
    await ensure_topics(stack_settings)
    # Bigger than the producer's max request size (1 MiB here): aiokafka refuses that bundle
    # alone; the bundles before and after it on the same partition go to the broker.
    too_big = check("T1", log="x" * 1_100_000)
    tasks = [task_created(task_id=f"T{i % 3}") for i in range(6)]
    events: list[Envelope] = [*tasks[:3], check("T1"), too_big, check("T1"), *tasks[3:]]
    async with EventProducer(producer_settings(stack_settings)) as producer:
        with pytest.raises(PartialDeliveryError, match=r"1 of 9 events were not delivered \(8 were\)") as caught:
            await producer.emit_many(events)
    error = caught.value
    assert error.delivered == [e for e in events if e is not too_big]
    assert [event for event, _ in error.failed] == [too_big]
    failure = error.failed[0][1]
    assert isinstance(failure, DeliveryError)
    assert "larger than the maximum request size" in str(failure)
    assert not failure.retriable and not error.retriable
    topics = stack_settings.topics
    assert sorted(await stored_ids(stack_settings, topics.input_topic(tasks[0].family), 6)) == sorted(
        str(e.event_id) for e in tasks
    )
    checks = await stored_ids(stack_settings, topics.input_topic(too_big.family), 2)
    assert checks == [str(e.event_id) for e in error.delivered if isinstance(e, ValidationResult)]


async def test_the_blocking_producer_says_which_events_were_delivered(stack_settings: StackSettings) -> None:
    await ensure_topics(stack_settings)
    small, too_big = check("T1"), check("T1", log="x" * 1_100_000)

    def blocking_service() -> PartialDeliveryError:
        with SyncEventProducer(producer_settings(stack_settings)) as producer:
            try:
                producer.emit_many([small, too_big])
            except PartialDeliveryError as exc:
                return exc
        raise AssertionError("emit_many delivered an event larger than the max request size")

    error = await asyncio.to_thread(blocking_service)
    assert error.delivered == [small]
    assert [event for event, _ in error.failed] == [too_big]
