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

from producers.context import apply_context
from producers.errors import ProducerClosedError
from producers.producer import EventProducer
from producers.settings import ProducerSettings
from schemas.envelope import Envelope


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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the background loop and connect (raises what connecting raises)."""
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="devtrail-producer", daemon=True)
        self._thread.start()
        self._loop = loop
        self._producer = EventProducer(self._settings)
        try:
            self._call(self._producer.start(), self._start_timeout_s)
        except BaseException:
            self._stop_loop()
            raise

    def emit(self, event: Envelope, timeout_s: float | None = None) -> None:
        """Publish one event; return once the broker acknowledged it.

        Raises:
            DeliveryError, BufferFullError, TimeoutError: as their names say.
        """
        self.emit_nowait(event).result(timeout_s)

    def emit_nowait(self, event: Envelope) -> concurrent.futures.Future[None]:
        """Buffer an event; the future resolves when the broker acknowledged it."""
        producer = self._running()
        event = apply_context(event)  # the caller's thread holds the context, not the loop's
        return asyncio.run_coroutine_threadsafe(producer.emit(event), self._loop_or_fail())

    def emit_many(self, events: Iterable[Envelope], timeout_s: float | None = None) -> None:
        """Publish many events; return once all are acknowledged."""
        producer = self._running()
        batch = [apply_context(event) for event in events]
        self._call(producer.emit_many(batch), timeout_s)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until everything buffered is acknowledged."""
        self._call(self._running().flush(), timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, disconnect and stop the background loop."""
        if self._producer is not None and self._loop is not None:
            try:
                self._call(self._producer.close(), timeout_s)
            finally:
                self._producer = None
                self._stop_loop()

    def _running(self) -> EventProducer:
        if self._producer is None:
            raise ProducerClosedError("producer is not started; use `with SyncEventProducer(...)`")
        return self._producer

    def _loop_or_fail(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ProducerClosedError("producer is not started")
        return self._loop

    def _call(self, coroutine: Coroutine[Any, Any, None], timeout_s: float | None) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop_or_fail()).result(timeout_s)

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop.close()
            self._loop = None
            self._thread = None
