"""Faust's aiokafka transport with a configurable fetch wait and a fixed seek after recovery.

Faust creates its consumer with ``fetch_max_wait_ms=1500`` hard-coded. A broker that
holds every fetch for the whole wait even when data arrives meanwhile adds that wait to
every hop: Tansu 0.6 does (measured: a message produced to a waiting consumer arrived
after ~620 ms with a 1,500 ms wait, ~120 ms with 500 ms, ~23 ms with 100 ms), and the
processor's end-to-end p50 at 10,000 events/s fell from 1.5 s to 0.12 s with 100 ms.
With Apache Kafka a fetch returns as soon as data arrives; a short wait only costs a few
more empty fetches when idle.

After table recovery Faust seeks the stream partitions "to their committed offsets", and
aiokafka's ``seek_to_committed`` leaves alone every partition without one (or at 0). The
fetcher has meanwhile read ahead on those partitions and Faust dropped what it read, so
their events were skipped until the next rebalance: seen when a processor was killed
before its first commit (5 runs of ~38 of the restart test). Such partitions are now sent
back to their beginning, which is what ``auto_offset_reset="earliest"`` means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "devtrail-kafka"

#: Set by ``build_app`` from ``ProcessorSettings.kafka_fetch_max_wait_ms``.
fetch_max_wait_ms = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by aiokafka when it starts its fetcher
        return consumer

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Seek to the committed offsets, and partitions without one to their beginning."""
        committed: Mapping[Any, int] = await self.call_thread(self._seek_to_committed_or_beginning)
        return committed

    async def _seek_to_committed_or_beginning(self) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        committed: Mapping[Any, int] = await consumer.seek_to_committed()
        uncommitted = [tp for tp, offset in committed.items() if offset is None or offset <= 0]
        if uncommitted:
            await consumer.seek_to_beginning(*uncommitted)
        return committed


class _Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        loop: asyncio.AbstractEventLoop = self.loop
        return _ConsumerThread(self, loop=loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    """Faust's Kafka transport, consumer fetch wait from the settings."""

    Consumer = _Consumer


drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
