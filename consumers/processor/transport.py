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

Offsets are committed strictly (``_Consumer._new_offset``): only a run of processed
offsets that starts exactly at the partition's committed position, with no hole. Faust's
own rule let two things through, and together they lost events whenever a processor was
killed or paused under load (hundreds to thousands per run): it counted as processed any
offsets it had not seen between two messages it read (its "gap" list, meant for
compacted topics), and it accepted a run starting one past the committed offset. After a
rebalance the fetch loop can still hand over messages read before it (a drained read-
ahead, a message held in a full stream buffer); the first of them, far ahead of the
position the partition was sought to, made everything in between a "gap": committed,
never processed. Here a hole is never committed over. A hole that does not fill (its
messages were dropped with a cleared buffer) is read again: the partition is sought back
to its committed position. Input topics are not compacted and devtrail's producers do not
write transactions, so offsets there have no real holes.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Mapping
from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

from consumers import metrics

log = logging.getLogger(__name__)

SCHEME = "devtrail-kafka"

#: A hole at the head of a partition's processed offsets older than this is read again.
#: Batches are processed in order, so a later offset processed while an earlier one is not
#: means the earlier one was dropped, unless its batch is still on its way (a few seconds).
HOLE_REREAD_S = 15.0

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
        if not uncommitted:
            return committed
        # Where reading starts is where commits start (see _Consumer._new_offset).
        beginnings: Mapping[Any, int] = await consumer.beginning_offsets(uncommitted)
        for tp, offset in beginnings.items():
            consumer.seek(tp, offset)
        return {**committed, **beginnings}


class _Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's consumer, committing only offsets that were processed (see the module doc)."""

    _hole_since: dict[Any, float]

    def _new_consumer_thread(self) -> _ConsumerThread:
        loop: asyncio.AbstractEventLoop = self.loop
        self._hole_since = {}
        return _ConsumerThread(self, loop=loop, beacon=self.beacon)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Offsets not read are not processed: never record them as such."""

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit for ``tp``: one past the run of processed offsets that
        starts at the committed position, or ``None`` while that position is not processed."""
        acked: list[int] = self._acked[tp]
        if not acked:
            return None
        acked.sort()
        start: int = self._committed_offset[tp] or 0
        stale = bisect.bisect_left(acked, start)
        if stale:
            self._forget(tp, acked[:stale])
        if not acked:
            return None
        if acked[0] != start:
            self._on_hole(tp, start, acked[0])
            return None
        self._hole_since.pop(tp, None)
        end = 1
        while end < len(acked) and acked[end] == start + end:
            end += 1
        self._forget(tp, acked[:end])
        return start + end

    def _forget(self, tp: Any, offsets: list[int]) -> None:
        del self._acked[tp][: len(offsets)]
        self._acked_index[tp].difference_update(offsets)

    def _on_hole(self, tp: Any, start: int, first_processed: int) -> None:
        if tp not in self.assignment():  # acknowledged after its partition went elsewhere
            self._forget(tp, list(self._acked[tp]))
            return
        now = time.monotonic()
        since = self._hole_since.setdefault(tp, now)
        if now - since < HOLE_REREAD_S:
            return
        log.warning(
            "%s: offsets %d..%d were never processed while later ones were; reading again from %d",
            tp, start, first_processed - 1, start,
        )  # fmt: skip
        metrics.INPUT_HOLES_REREAD.labels(tp.topic).inc()
        self._hole_since.pop(tp, None)
        acked = self._acked[tp]
        self._forget(tp, list(acked))
        asyncio.ensure_future(self.seek(tp, start))  # noqa: RUF006 - Faust's seek logs its own failure


class Transport(faust_aiokafka.Transport):  # type: ignore[misc]
    """Faust's Kafka transport, consumer fetch wait from the settings."""

    Consumer = _Consumer


drivers.TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
