"""``EventProducer``: the async SDK services use to publish devtrail events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from producers.bundler import Bundle, choose_partition
from producers.context import apply_context
from producers.errors import BufferFullError, DeliveryError, ProducerClosedError
from producers.settings import ProducerSettings
from schemas.codec import encode_event
from schemas.envelope import Envelope

log = logging.getLogger(__name__)


class EventProducer:
    """Publishes events to their family's input topic, bundled per partition.

    Use as an async context manager::

        async with EventProducer(ProducerSettings()) as producer:
            await producer.emit(TaskCompleted(source="svc", task_id="T-1"))

    Events bound for the same partition are packed into one Kafka message (a bundle)
    of up to ``producer_bundle_max_events`` events or ``producer_bundle_max_bytes``
    bytes, waiting at most ``producer_linger_ms`` for company. The partition is the one
    the Kafka default partitioner picks for the event's key, so bundling does not change
    ordering or where a re-sent copy lands.
    """

    def __init__(self, settings: ProducerSettings) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._kafka: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}  # murmur2 is pure Python: cache it
        self._open: dict[tuple[str, int], Bundle] = {}
        self._linger_handles: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self._send_lock = asyncio.Lock()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._room = asyncio.Event()
        self._room.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and learn the partitions of every input topic.

        Raises:
            KafkaError: the broker cannot be reached or an input topic does not exist.
        """
        s = self._settings
        acks: int | str = s.producer_acks if s.producer_acks == "all" else int(s.producer_acks)
        frame = s.producer_bundle_max_bytes + 64 * 1024
        self._kafka = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            acks=acks,
            enable_idempotence=s.producer_enable_idempotence,
            linger_ms=0,  # bundles already linger; aiokafka adds nothing on top
            max_batch_size=frame,
            max_request_size=max(frame, 1024 * 1024),
            request_timeout_ms=s.producer_request_timeout_ms,
            compression_type=s.compression,
            **s.aiokafka_security(),
        )
        await self._kafka.start()
        try:
            for topic in self._topics.input_topics:
                partitions = await self._kafka.partitions_for(topic)
                if not partitions:
                    raise ProducerClosedError(f"topic {topic!r} does not exist; create it with `devtrail topics`")
                self._partitions[topic] = sorted(partitions)
        except BaseException:
            await self._kafka.stop()
            self._kafka = None
            raise

    async def close(self) -> None:
        """Send what is buffered, wait for its acknowledgements, and disconnect."""
        if self._kafka is None:
            return
        try:
            await self.flush()
        finally:
            await self._kafka.stop()
            self._kafka = None

    def emit_nowait(self, event: Envelope) -> asyncio.Future[None]:
        """Buffer an event and return a future that resolves when the broker acknowledged it.

        The future is shared by the events of one bundle: await it, but do not cancel it
        (wrap it in ``asyncio.shield`` to put a timeout on the wait).

        Raises:
            BufferFullError: ``producer_max_pending_events`` are already waiting.
            ProducerClosedError: the producer is not started.
        """
        if self._kafka is None:
            raise ProducerClosedError("producer is not started; use `async with EventProducer(...)`")
        event = apply_context(event)
        if self._pending >= self._settings.producer_max_pending_events:
            raise BufferFullError(
                f"{self._pending} events await acknowledgement "
                f"(producer_max_pending_events={self._settings.producer_max_pending_events})"
            )
        topic = self._topics.input_topic(event.family)
        key = event.partition_key()
        partition = self._partition_of.get((topic, key))
        if partition is None:
            if len(self._partition_of) > 100_000:
                self._partition_of.clear()
            partition = self._partition_of[(topic, key)] = choose_partition(key, self._partitions[topic])
        return self._append(topic, partition, key, encode_event(event))

    async def emit(self, event: Envelope) -> None:
        """Publish one event; return once the broker has acknowledged it.

        Raises:
            DeliveryError: the broker did not acknowledge it (``retriable`` says whether to retry).
            BufferFullError: the buffer is full and ``producer_overflow`` is ``raise``.
        """
        await self.wait_for_room()
        await asyncio.shield(self.emit_nowait(event))

    async def emit_many(self, events: Iterable[Envelope]) -> None:
        """Publish many events; return once all are acknowledged (or raise the first error)."""
        waiters: dict[int, asyncio.Future[None]] = {}
        limit = self._settings.producer_max_pending_events
        for event in events:
            if self._pending >= limit:
                await self.wait_for_room()
            waiter = self.emit_nowait(event)
            waiters[id(waiter)] = waiter
        await asyncio.gather(*waiters.values())

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Publish bytes as they are, as any other Kafka client would (tests, tools)."""
        if self._kafka is None:
            raise ProducerClosedError("producer is not started")
        try:
            await self._kafka.send_and_wait(topic, value, key=key)
        except KafkaError as exc:
            raise DeliveryError(str(exc), retriable=bool(getattr(exc, "retriable", False))) from exc

    async def flush(self) -> None:
        """Send every open bundle now and wait until all sent bundles are acknowledged."""
        for slot in list(self._open):
            self._close_bundle(slot)
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def wait_for_room(self) -> None:
        """Wait while the buffer is full (only with ``producer_overflow="block"``)."""
        if self._settings.producer_overflow == "block":
            while self._pending >= self._settings.producer_max_pending_events:
                self._room.clear()
                await self._room.wait()

    def _append(self, topic: str, partition: int, key: bytes, encoded: bytes) -> asyncio.Future[None]:
        s = self._settings
        slot = (topic, partition)
        bundle = self._open.get(slot)
        if bundle is not None and not bundle.fits(encoded, s.producer_bundle_max_events, s.producer_bundle_max_bytes):
            self._close_bundle(slot)
            bundle = None
        if bundle is None:
            loop = asyncio.get_running_loop()
            bundle = self._open[slot] = Bundle(topic, partition, key, loop.create_future())
            self._linger_handles[slot] = loop.call_later(s.producer_linger_ms / 1000, self._close_bundle, slot)
        bundle.add(encoded)
        self._pending += 1
        if len(bundle) >= s.producer_bundle_max_events:
            self._close_bundle(slot)
        return bundle.done

    def _close_bundle(self, slot: tuple[str, int]) -> None:
        bundle = self._open.pop(slot, None)
        handle = self._linger_handles.pop(slot, None)
        if handle is not None:
            handle.cancel()
        if bundle is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(bundle))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send(self, bundle: Bundle) -> None:
        assert self._kafka is not None
        try:
            async with self._send_lock:  # FIFO: bundles of a partition enter aiokafka in order
                delivery = await self._kafka.send(
                    bundle.topic, bundle.value(), key=bundle.key, partition=bundle.partition
                )
            await delivery
        except KafkaError as exc:
            error = DeliveryError(
                f"bundle of {len(bundle)} events to {bundle.topic}[{bundle.partition}] failed: {exc}",
                retriable=bool(getattr(exc, "retriable", False)),
            )
            self._settle(bundle, error)
        else:
            self._settle(bundle, None)

    def _settle(self, bundle: Bundle, error: DeliveryError | None) -> None:
        if not bundle.done.done():
            if error is None:
                bundle.done.set_result(None)
            else:
                bundle.done.set_exception(error)
        self._pending -= len(bundle)
        if self._pending < self._settings.producer_max_pending_events:
            self._room.set()
