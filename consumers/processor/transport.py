"""Faust's aiokafka transport, as devtrail drives it: what the processor reads and commits.

- Fetch wait from the settings (Faust hard-codes 1,500 ms; a broker that holds every
  fetch for the whole wait, as Tansu 0.6 does, adds it to every hop).
- After table recovery, partitions without a committed offset go back to their beginning
  (aiokafka's ``seek_to_committed`` leaves them where a dropped read-ahead left them).
- Offsets are committed strictly (``_Consumer._new_offset``): only a run of processed
  offsets starting exactly at the partition's committed position, never over a hole;
  offsets never read are never counted as processed (Faust's "gap" list is off). A hole
  that does not fill within ``HOLE_REREAD_S`` (messages dropped with a buffer cleared at a
  rebalance) is read again from the committed position. Input topics are neither
  compacted nor written in transactions, so their offsets have no real holes.
- Every message fetched is handed to the stream: Faust's "read offset" filter (drop any
  message below the highest offset handed over so far) is off. After a seek back (a
  rebalance, a hole read again) a message fetched before the seek and handed over after
  it raised that mark again, and the filter then dropped the whole range read again: the
  hole came back, 15 s later each time. Without it such a message is processed twice at
  worst, which the dedup index and the sink absorb.
- Seeks run on the consumer's thread (Faust ran them on the worker's, racing aiokafka's
  fetcher).
- A partition whose committed position stays behind its end for ``HOLE_REREAD_S`` with
  nothing of it processed in the meantime is read again from the committed position too:
  the hole check above needs a later offset processed, and when the messages dropped were
  the last ones written (the load had stopped), nothing later ever comes. Reading a batch
  again that was only slow (a broker paused for longer) costs duplicates, which the dedup
  index and the sink remove; never reading it again would lose it.

Why each of these exists, with the measurements: docs/faults.md and docs/benchmarks.md.
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

from devtrail.consumers import metrics

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


class _NoReadOffsets(dict[Any, int | None]):
    """Faust's read offsets, always unknown: every fetched message is delivered (see the module doc)."""

    def __getitem__(self, tp: Any) -> None:
        return None

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's consumer, committing only offsets that were processed (see the module doc)."""

    _hole_since: dict[Any, float]
    _behind_since: dict[Any, tuple[int, float]]  # tp -> (committed position, since when it is behind)

    def _new_consumer_thread(self) -> _ConsumerThread:
        loop: asyncio.AbstractEventLoop = self.loop
        self._hole_since = {}
        self._behind_since = {}
        self._read_offset = _NoReadOffsets()
        return _ConsumerThread(self, loop=loop, beacon=self.beacon)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Any:
        """Faust calls this on every commit (each second): check for stalled partitions first."""
        self._reread_stalled(time.monotonic())
        return super()._filter_tps_with_pending_acks(topics)

    def _reread_stalled(self, now: float) -> None:
        """Read again the partitions whose unprocessed messages nobody is processing."""
        for tp in self.assignment():
            if self._is_changelog_tp(tp) or tp in self._paused_partitions or self._acked.get(tp):
                self._behind_since.pop(tp, None)  # acknowledged offsets: the hole check's case
                continue
            start: int = self._committed_offset.get(tp) or 0
            try:
                end = self.highwater(tp)
            except Exception:  # noqa: BLE001 - not fetched yet, or no longer assigned
                end = None
            if end is None or end <= start:
                self._behind_since.pop(tp, None)
                continue
            behind = self._behind_since.get(tp)
            if behind is None or behind[0] != start:
                self._behind_since[tp] = (start, now)
                continue
            if now - behind[1] < HOLE_REREAD_S:
                continue
            log.warning(
                "%s: offsets %d..%d not processed for %.0fs and nothing of them in progress; reading again from %d",
                tp, start, end - 1, now - behind[1], start,
            )  # fmt: skip
            metrics.INPUT_HOLES_REREAD.labels(tp.topic).inc()
            del self._behind_since[tp]
            asyncio.ensure_future(self.seek(tp, start))  # noqa: RUF006 - Faust's seek logs its own failure

    async def _seek(self, partition: Any, offset: int) -> None:
        """Seek on the consumer's own thread, where its fetcher runs.

        Faust calls aiokafka's ``seek`` from the worker's thread; it drops the partition's
        fetched records, which the fetcher may be iterating at that moment on the consumer
        thread: seen in a drain, a stalled partition read again raised ``KeyError`` there and the
        processor exited (restarted, nothing lost, the batch read twice).
        """
        await self._thread.call_thread(self._thread.seek, partition, offset)

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
