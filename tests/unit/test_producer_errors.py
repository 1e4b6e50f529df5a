"""The producer says what happened: not started, start failed, closed; which events of an
``emit_many`` were delivered and which were not. No broker: a closed port, or a fake of
aiokafka's producer that never connects."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError, NotLeaderForPartitionError

from devtrail.producers import (
    BufferFullError,
    DeliveryError,
    EventProducer,
    PartialDeliveryError,
    ProducerClosedError,
    ProducerSettings,
    SyncEventProducer,
)
from devtrail.producers.bundler import choose_partition
from devtrail.schemas.codec import decode_message
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.errors import EventValidationError
from devtrail.schemas.events import TaskCreatedPayload
from tests.factories import task_created

CLOSED_PORT = "127.0.0.1:1"  # nothing listens: connecting fails at once
PARTITIONS = [0, 1, 2]


def settings(**overrides: Any) -> ProducerSettings:
    fields: dict[str, Any] = {
        "kafka_bootstrap_servers": CLOSED_PORT,
        "topic_prefix": "unit",
        "producer_request_timeout_ms": 1000,
        "producer_linger_ms": 1,
        **overrides,
    }
    return ProducerSettings(**fields)


class FakeKafka(AIOKafkaProducer):  # type: ignore[misc]
    """aiokafka's producer without a broker: every topic has ``PARTITIONS``; a send is
    acknowledged after ``ack_delay_s`` unless its partition is in ``refuse``, which fails it
    at once (an ``AssertionError`` is raised by ``send`` itself, as aiokafka does for a
    partition its metadata does not know)."""

    def __init__(
        self, refuse: dict[int, BaseException] | None = None, ack_delay_s: float = 0.0, missing_topic: str = ""
    ) -> None:
        super().__init__(bootstrap_servers=CLOSED_PORT)
        self.refuse = refuse or {}
        self.ack_delay_s = ack_delay_s
        self.missing_topic = missing_topic
        self.acknowledged: list[bytes] = []
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True
        self._closed = True

    async def partitions_for(self, topic: str) -> set[int]:
        return set() if topic == self.missing_topic else set(PARTITIONS)

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int = 0
    ) -> asyncio.Future[None]:
        refusal = self.refuse.get(partition)
        if isinstance(refusal, AssertionError):
            raise refusal
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if refusal is not None:
            delivery.set_exception(refusal)
        else:
            asyncio.get_running_loop().call_later(self.ack_delay_s, self._acknowledge, delivery, value)
        return delivery

    def _acknowledge(self, delivery: asyncio.Future[None], value: bytes) -> None:
        self.acknowledged.append(value)
        delivery.set_result(None)

    def acknowledged_ids(self) -> list[str]:
        return [raw["event_id"] for value in self.acknowledged for raw in decode_message(value)]


class FakeBrokerProducer(EventProducer):
    """An ``EventProducer`` whose Kafka client is a ``FakeKafka``."""

    def __init__(self, kafka: FakeKafka, **overrides: Any) -> None:
        super().__init__(settings(**overrides))
        self.kafka = kafka

    def _client(self) -> AIOKafkaProducer:
        return self.kafka


def partition_of(event: Envelope) -> int:
    return choose_partition(event.partition_key(), PARTITIONS)


async def every_call_raises(producer: EventProducer, match: str) -> None:
    with pytest.raises(ProducerClosedError, match=match):
        producer.emit_nowait(task_created())
    calls = [producer.emit(task_created()), producer.emit_many([task_created()]), producer.flush()]
    for call in [*calls, producer.send_raw("unit.task", b"{}")]:
        with pytest.raises(ProducerClosedError, match=match):
            await call


async def test_a_producer_never_started_says_to_start_it() -> None:
    producer = EventProducer(settings())
    await every_call_raises(producer, r"producer is not started; call start\(\) or use `async with EventProducer")
    await producer.close()  # nothing to close: not an error


async def test_a_failed_start_leaves_nothing_open_and_every_call_names_its_cause() -> None:
    producer = EventProducer(settings())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KafkaConnectionError, match=r"cannot reach Kafka at .*: start `devtrail up`.*"):
            await producer.start()
        await every_call_raises(
            producer,
            r"producer is not started \(its start failed: KafkaConnectionError: cannot reach Kafka at .*"
            r"DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS.*\); call start\(\) again",
        )
        del producer
        gc.collect()
    assert [str(w.message) for w in caught if "Unclosed" in str(w.message)] == []


async def test_a_start_that_fails_part_way_stops_its_client_and_says_why() -> None:
    kafka = FakeKafka(missing_topic="unit.task")
    producer = FakeBrokerProducer(kafka)
    with pytest.raises(ProducerClosedError, match="does not exist"):
        await producer.start()
    assert kafka.stopped
    await every_call_raises(producer, r"its start failed: ProducerClosedError: topic 'unit.task' does not exist")


async def test_a_closed_producer_says_so_and_can_be_started_again() -> None:
    producer = FakeBrokerProducer(FakeKafka())
    async with producer:
        await producer.emit(task_created())
    await every_call_raises(producer, r"producer is closed; call start\(\) again")
    async with producer:
        await producer.emit(task_created())
    assert len(producer.kafka.acknowledged_ids()) == 2


@pytest.mark.parametrize(
    ("refusal", "retriable"), [(NotLeaderForPartitionError(), True), (MessageSizeTooLargeError(), False)]
)
async def test_a_failed_emit_many_says_which_events_were_delivered(refusal: KafkaError, retriable: bool) -> None:
    events = [task_created(task_id=f"T{i}") for i in range(12)]
    refused = partition_of(events[3])
    kafka = FakeKafka(refuse={refused: refusal}, ack_delay_s=0.05)  # the refusal comes first
    async with FakeBrokerProducer(kafka) as producer:
        with pytest.raises(PartialDeliveryError) as caught:
            await producer.emit_many(events)
    error = caught.value
    failed = [e for e in events if partition_of(e) == refused]
    assert error.delivered == [e for e in events if partition_of(e) != refused]
    assert [event for event, _ in error.failed] == failed
    assert all(isinstance(e, DeliveryError) and e.retriable is retriable for _, e in error.failed)
    assert error.retriable is retriable
    assert str(error).startswith(f"{len(failed)} of 12 events were not delivered ({12 - len(failed)} were)")
    assert sorted(kafka.acknowledged_ids()) == sorted(str(e.event_id) for e in error.delivered)  # all known


async def test_emit_many_counts_events_refused_by_a_full_buffer_as_failed() -> None:
    events = [task_created(task_id=f"T{i}") for i in range(5)]
    producer = FakeBrokerProducer(FakeKafka(ack_delay_s=0.01), producer_max_pending_events=3, producer_overflow="raise")
    async with producer:
        with pytest.raises(PartialDeliveryError, match="2 of 5 events were not delivered") as caught:
            await producer.emit_many(events)
    assert caught.value.delivered == events[:3]
    assert [(event, type(e)) for event, e in caught.value.failed] == [(e, BufferFullError) for e in events[3:]]
    assert caught.value.retriable


async def test_emit_many_fails_an_invalid_event_alone() -> None:
    bad = task_created(task_id="bad", payload=TaskCreatedPayload(title="a\x00b"))
    events = [task_created(task_id="T1"), bad, task_created(task_id="T2")]
    async with FakeBrokerProducer(FakeKafka()) as producer:
        with pytest.raises(PartialDeliveryError) as caught:
            await producer.emit_many(events)
    assert caught.value.delivered == [events[0], events[2]]
    assert [(event, type(e)) for event, e in caught.value.failed] == [(bad, EventValidationError)]
    assert not caught.value.retriable


async def test_closing_during_emit_many_fails_the_events_not_yet_buffered() -> None:
    events = [task_created(task_id=f"T{i}") for i in range(5)]
    producer = FakeBrokerProducer(FakeKafka(ack_delay_s=0.05), producer_max_pending_events=2)
    await producer.start()
    emitting = asyncio.create_task(producer.emit_many(events))
    await asyncio.sleep(0)  # two events buffered, the third waits for room
    await producer.close()
    with pytest.raises(PartialDeliveryError, match="3 of 5 events were not delivered") as caught:
        await emitting
    assert caught.value.delivered == events[:2]
    assert [event for event, _ in caught.value.failed] == events[2:]
    assert all(isinstance(e, ProducerClosedError) for _, e in caught.value.failed)
    assert "producer is closing" in str(caught.value.failed[0][1])


async def test_a_bundle_aiokafka_refuses_with_an_assertion_fails_instead_of_hanging() -> None:
    events = [task_created(task_id=f"T{i}") for i in range(6)]
    refused = partition_of(events[0])
    kafka = FakeKafka(refuse={refused: AssertionError("Unrecognized partition")})
    async with FakeBrokerProducer(kafka) as producer:
        with pytest.raises(PartialDeliveryError) as caught:
            await asyncio.wait_for(producer.emit_many(events), 5)
        with pytest.raises(DeliveryError, match="Unrecognized partition"):
            await asyncio.wait_for(producer.emit(events[0]), 5)
    assert [event for event, _ in caught.value.failed] == [e for e in events if partition_of(e) == refused]
    assert not caught.value.retriable


def test_the_blocking_producer_says_what_to_do_and_leaves_no_thread_after_a_failed_start() -> None:
    producer = SyncEventProducer(settings())
    with pytest.raises(ProducerClosedError, match=r"not started; call start\(\) or use `with SyncEventProducer"):
        producer.emit_many([task_created()])
    with pytest.raises(KafkaConnectionError):
        producer.start()
    assert not [t for t in threading.enumerate() if t.name == "devtrail-producer"]
    calls = [producer.emit, producer.emit_nowait, lambda e: producer.emit_many([e]), lambda _: producer.flush()]
    for call in calls:
        with pytest.raises(ProducerClosedError, match=r"its start failed: KafkaConnectionError.*call start\(\) again"):
            call(task_created())
    producer.close()  # nothing to close: not an error
