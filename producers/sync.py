"""``SyncEventProducer``: the producer for services that are not asyncio.

It runs an ``EventProducer`` on an event loop in a background thread. ``emit`` blocks until
the broker acknowledged the event (or raises its error); ``emit_nowait`` returns a
``concurrent.futures.Future``. The correlation context of the calling thread applies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, Self

from devtrail.producers.context import apply_context
from devtrail.producers.errors import ProducerClosedError
from devtrail.producers.producer import EventProducer, start_failed
from devtrail.producers.settings import ProducerSettings
from devtrail.schemas.envelope import Envelope

_HOW = "use `with SyncEventProducer(...)`"
NOT_STARTED = f"producer is not started; call start() or {_HOW}"
CLOSED = f"producer is closed; call start() again or {_HOW}"


class SyncEventProducer:
    """A blocking facade over ``EventProducer``.

    Use as a context manager::

        with SyncEventProducer(ProducerSettings()) as producer:
            producer.emit(TaskCompleted(source="cron", task_id="T-1"))
    """

    def __init__(self, settings: ProducerSettings, start_timeout_s: float = 30.0) -> None:
        self._settings = settings
        self._start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: EventProducer | None = None
        self._unavailable = NOT_STARTED  # what ``ProducerClosedError`` says while there is no producer

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the background loop and connect (nothing if already started).

        If it raises, the loop is stopped, nothing stays open, and emits raise a
        ``ProducerClosedError`` that names the cause until a later ``start()`` succeeds.

        Raises:
            KafkaError, ProducerClosedError: what ``EventProducer.start`` raises.
            TimeoutError: it did not connect within ``start_timeout_s``.
        """
        if self._producer is not None:
            return
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="devtrail-producer", daemon=True)
        self._thread.start()
        self._loop = loop
        producer = EventProducer(self._settings)
        try:  # wait_for inside the loop: a start that times out still stops its client
            _run(loop, asyncio.wait_for(producer.start(), self._start_timeout_s), None)
        except BaseException as exc:
            self._stop_loop()
            self._unavailable = start_failed(exc, _HOW)
            raise
        self._producer = producer

    def emit(self, event: Envelope, timeout_s: float | None = None) -> None:
        """Publish one event; return once the broker acknowledged it.

        Raises:
            DeliveryError, BufferFullError, TimeoutError: as their names say.
            ProducerClosedError: the producer is not started, its start failed, or it is closed.
        """
        self.emit_nowait(event).result(timeout_s)

    def emit_nowait(self, event: Envelope) -> concurrent.futures.Future[None]:
        """Buffer an event; the future resolves when the broker acknowledged it.

        Raises:
            ProducerClosedError: the producer is not started, its start failed, or it is closed.
        """
        producer, loop = self._running()
        event = apply_context(event)  # the caller's thread holds the context, not the loop's
        return asyncio.run_coroutine_threadsafe(producer.emit(event), loop)

    def emit_many(self, events: Iterable[Envelope], timeout_s: float | None = None) -> None:
        """Publish many events; return once all are acknowledged.

        Raises:
            PartialDeliveryError: some events were not delivered; its ``delivered`` and
                ``failed`` lists say which (see ``EventProducer.emit_many``).
            ProducerClosedError: the producer is not started, its start failed, or it is closed.
            TimeoutError: no outcome within ``timeout_s``; the events may still be delivered.
        """
        producer, loop = self._running()
        batch = [apply_context(event) for event in events]
        _run(loop, producer.emit_many(batch), timeout_s)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until everything buffered is acknowledged.

        Raises:
            ProducerClosedError: the producer is not started, its start failed, or it is closed.
        """
        producer, loop = self._running()
        _run(loop, producer.flush(), timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, disconnect and stop the background loop (nothing if not started)."""
        if self._producer is None or self._loop is None:
            return
        producer, self._producer = self._producer, None
        self._unavailable = CLOSED
        try:
            _run(self._loop, producer.close(), timeout_s)
        finally:
            self._stop_loop()

    def _running(self) -> tuple[EventProducer, asyncio.AbstractEventLoop]:
        if self._producer is None or self._loop is None:
            raise ProducerClosedError(self._unavailable)
        return self._producer, self._loop

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop.close()
            self._loop = None
            self._thread = None


def _run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None], timeout_s: float | None) -> None:
    asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout_s)
