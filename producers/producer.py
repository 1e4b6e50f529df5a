"""``EventProducer``: the async SDK services use to publish devtrail events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from devtrail.producers.bundler import Bundle, choose_partition
from devtrail.producers.context import apply_context
from devtrail.producers.errors import BufferFullError, DeliveryError, ProducerClosedError, ProducerError
from devtrail.producers.outcomes import Outcome, raise_unless_all_delivered
from devtrail.producers.settings import ProducerSettings
from devtrail.schemas.codec import encode_event
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.errors import ContractError

log = logging.getLogger(__name__)

_HOW = "use `async with EventProducer(...)`"
NOT_STARTED = f"producer is not started; call start() or {_HOW}"
CLOSING = "producer is closing; wait for close() to return, then call start() again"
CLOSED = f"producer is closed; call start() again or {_HOW}"


def start_failed(cause: BaseException, how: str = _HOW) -> str:
    """The message of ``ProducerClosedError`` after a start that raised ``cause``."""
    name, text = type(cause).__name__, str(cause)
    reason = text if text.startswith(name) else f"{name}: {text}" if text else name  # KafkaError names itself
    return f"producer is not started (its start failed: {reason}); call start() again or {how}"


def _delivery_error(message: str, cause: KafkaError) -> DeliveryError:
    return DeliveryError(message, retriable=bool(getattr(cause, "retriable", False)))


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
        self._unavailable: str | None = NOT_STARTED  # why emits are refused; None while started

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and learn the partitions of every input topic (nothing if already started).

        If it raises, nothing stays open, and the producer refuses emits with a
        ``ProducerClosedError`` that names the cause until a later ``start()`` succeeds.

        Raises:
            KafkaError: the broker cannot be reached.
            ProducerClosedError: an input topic does not exist, or ``close()`` is under way.
        """
        if self._kafka is not None:
            if self._unavailable is not None:
                raise ProducerClosedError(self._unavailable)
            return
        try:
            kafka, partitions = await self._connect()
        except BaseException as exc:
            self._unavailable = start_failed(exc)
            raise
        self._kafka, self._partitions = kafka, partitions
        self._partition_of.clear()
        self._unavailable = None

    async def close(self) -> None:
        """Send what is buffered, wait for its acknowledgements, and disconnect.

        Emits are refused from the moment it is called. Does nothing on a producer that is
        not started.
        """
        if self._kafka is None or self._unavailable == CLOSING:
            return
        self._unavailable = CLOSING
        try:
            await self._drain()
        finally:
            kafka, self._kafka = self._kafka, None
            self._unavailable = CLOSED
            await kafka.stop()

    def _client(self) -> AIOKafkaProducer:
        """A new, unstarted Kafka client configured from the settings."""
        s = self._settings
        acks: int | str = s.producer_acks if s.producer_acks == "all" else int(s.producer_acks)
        frame = s.producer_bundle_max_bytes + 64 * 1024
        return AIOKafkaProducer(
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

    async def _connect(self) -> tuple[AIOKafkaProducer, dict[str, list[int]]]:
        """A started client and the partitions of every input topic; on failure the client is stopped."""
        kafka = self._client()
        try:
            try:
                await kafka.start()
            except KafkaConnectionError as exc:
                servers = self._settings.kafka_bootstrap_servers
                raise KafkaConnectionError(
                    f"cannot reach Kafka at {servers}: start `devtrail up` (its broker listens on 127.0.0.1:9092, "
                    "the default here), or set DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS to your brokers"
                ) from exc
            partitions: dict[str, list[int]] = {}
            for topic in self._topics.input_topics:
                found = await kafka.partitions_for(topic)
                if not found:
                    raise ProducerClosedError(f"topic {topic!r} does not exist; create it with `devtrail topics`")
                partitions[topic] = sorted(found)
        except BaseException:
            await kafka.stop()
            raise
        return kafka, partitions

    def _started(self) -> AIOKafkaProducer:
        """The Kafka client, or ``ProducerClosedError`` saying why there is none to use."""
        if self._unavailable is not None or self._kafka is None:
            raise ProducerClosedError(self._unavailable or NOT_STARTED)
        return self._kafka

    def emit_nowait(self, event: Envelope) -> asyncio.Future[None]:
        """Buffer an event and return a future that resolves when the broker acknowledged it.

        The future is shared by the events of one bundle: await it, but do not cancel it
        (wrap it in ``asyncio.shield`` to put a timeout on the wait).

        Returns:
            A future that resolves to ``None``, or raises the bundle's ``DeliveryError``.

        Raises:
            BufferFullError: ``producer_max_pending_events`` are already waiting.
            ProducerClosedError: the producer is not started, its start failed, or it is closed.
            EventValidationError: a string in the event holds NUL.
        """
        return self._emit_applied(apply_context(event))

    async def emit(self, event: Envelope) -> None:
        """Publish one event; return once the broker has acknowledged it.

        Raises:
            DeliveryError: the broker did not acknowledge it (``retriable`` says whether to retry).
            BufferFullError: the buffer is full and ``producer_overflow`` is ``raise``.
            ProducerClosedError: the producer is not started, its start failed, or it is closed.
            EventValidationError: a string in the event holds NUL.
        """
        await self.wait_for_room()
        await asyncio.shield(self.emit_nowait(event))

    async def emit_many(self, events: Iterable[Envelope]) -> None:
        """Publish many events; return once all are acknowledged.

        Waits for the outcome of every event, even after one failed, so that the error
        says exactly which events need re-sending.

        Raises:
            PartialDeliveryError: some events (maybe all) were not delivered; its ``delivered``
                and ``failed`` lists say which. Events refused before sending (full buffer,
                producer closed meanwhile, invalid event) are in ``failed`` too.
            ProducerClosedError: the producer is not started, its start failed, or it is
                closed (nothing was sent).
        """
        self._started()
        published: list[Envelope] = []
        outcomes: list[Outcome] = []
        limit = self._settings.producer_max_pending_events
        for given in events:
            event = apply_context(given)
            if self._pending >= limit:
                await self.wait_for_room()
            try:
                outcome: Outcome = self._emit_applied(event)
            except (ProducerError, ContractError) as exc:
                outcome = exc
            published.append(event)
            outcomes.append(outcome)
        await raise_unless_all_delivered(published, outcomes)

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Publish bytes as they are, as any other Kafka client would (tests, tools).

        Raises:
            DeliveryError: the broker did not acknowledge them.
            ProducerClosedError: the producer is not started, its start failed, or it is closed.
        """
        kafka = self._started()
        try:
            await kafka.send_and_wait(topic, value, key=key)
        except KafkaError as exc:
            raise _delivery_error(str(exc), exc) from exc

    async def flush(self) -> None:
        """Send every open bundle now and wait until all sent bundles are acknowledged (or failed).

        Raises:
            ProducerClosedError: the producer is not started, its start failed, or it is closed.
        """
        self._started()
        await self._drain()

    async def wait_for_room(self) -> None:
        """Wait while the buffer is full (only with ``producer_overflow="block"``)."""
        if self._settings.producer_overflow == "block":
            while self._pending >= self._settings.producer_max_pending_events:
                self._room.clear()
                await self._room.wait()

    def _emit_applied(self, event: Envelope) -> asyncio.Future[None]:
        self._started()
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

    async def _drain(self) -> None:
        """Send every open bundle and wait until no bundle is in flight."""
        for slot in list(self._open):
            self._close_bundle(slot)
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

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
        where = f"bundle of {len(bundle)} events to {bundle.topic}[{bundle.partition}]"
        try:
            await self._deliver(bundle)
        except KafkaError as exc:
            self._settle(bundle, _delivery_error(f"{where} failed: {exc}", exc))
        except ProducerClosedError as exc:
            self._settle(bundle, exc)
        except Exception as exc:  # aiokafka asserts on a partition its metadata no longer has
            log.exception("%s failed", where)
            self._settle(bundle, DeliveryError(f"{where} failed: {exc!r}", retriable=False))
        else:
            self._settle(bundle, None)

    async def _deliver(self, bundle: Bundle) -> None:
        async with self._send_lock:  # FIFO: bundles of a partition enter aiokafka in order
            if self._kafka is None:  # close() was cancelled before this bundle left
                raise ProducerClosedError(f"{self._unavailable or CLOSED} (before this bundle was sent)")
            delivery = await self._kafka.send(bundle.topic, bundle.value(), key=bundle.key, partition=bundle.partition)
        await delivery

    def _settle(self, bundle: Bundle, error: ProducerError | None) -> None:
        if not bundle.done.done():
            if error is None:
                bundle.done.set_result(None)
            else:
                bundle.done.set_exception(error)
        self._pending -= len(bundle)
        if self._pending < self._settings.producer_max_pending_events:
            self._room.set()
