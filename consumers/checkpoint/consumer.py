"""A Kafka consumer whose offsets are stored with its database writes, atomically.

Batching and offsets:

* Messages are read into a ``PendingBatch`` until it holds ``batch_max_events`` rows or
  is ``batch_max_wait_ms`` old. The batch's writers run (``WriterHost``) inside one
  transaction; its dead letters are published and acknowledged; then its next offsets
  are stored in the same transaction, and it commits. Only then is anything durable; if
  the process dies before, the batch is read again from the stored offsets.
* On partition assignment the consumer seeks to the stored offsets, so the database, not
  Kafka's committed offsets, decides where reading resumes. Kafka offsets are committed
  afterwards too, but only so that lag shows up in Kafka tools.
* When the database fails in a way worth retrying (connection lost, server restarted, a
  write not committed within ``db_write_timeout_s``), the batch being written and
  everything read after it are dropped, and once the database answers again every
  partition is sought back to the offsets it stored. A server crash can take back commits
  it had acknowledged (asynchronous commit, or a replica promoted); their offsets go with
  them, and those events are read again.
* Any other error (a bug in a writer) stops the consumer: ``run`` raises it.

Overlap: while a batch is written, the next one is read and decoded, and the writers that
can (``PreparingWriter``) reduce it in a thread; its transaction starts when the one before
has committed. Python's work and PostgreSQL's work on consecutive batches overlap.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Generic

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from devtrail.consumers import metrics
from devtrail.consumers.checkpoint.batch import PendingBatch
from devtrail.consumers.checkpoint.database import DatabaseLink
from devtrail.consumers.checkpoint.deadletters import DeadLetterPublisher, dead_letters
from devtrail.consumers.checkpoint.format import R
from devtrail.consumers.checkpoint.host import Applied, Prepared, PreparingWriter, WriterHost
from devtrail.consumers.errors import is_retriable_db_error
from devtrail.consumers.offsets import load_offsets, store_offsets
from devtrail.consumers.settings import CheckpointSettings

log = logging.getLogger(__name__)

#: How often a batch old enough to be written when caught up looks again (the write before may be over).
_CAUGHT_UP_RECHECK_MS = 10


class CheckpointedConsumer(Generic[R]):
    """Reads a topic in its own consumer group and applies batches exactly once in effect.

    Args:
        settings: Kafka, database and batching settings.
        host: the writers applied to each batch, and the rows' format.
        group: consumer group id (also the key of the stored offsets).
        topic: the topic to read.
    """

    def __init__(self, settings: CheckpointSettings, host: WriterHost[R], group: str, topic: str) -> None:
        self._settings = settings
        self._host = host
        self._stage = host.stage
        self._group = group
        self._topic = topic
        self._batch = self._new_batch()
        self._db = DatabaseLink(settings, host.stage)
        self._dead_letters = DeadLetterPublisher(settings, host.stage, to_topic=host.publish_refusals)
        self._consumer: AIOKafkaConsumer | None = None
        self._db_lock = asyncio.Lock()  # the main loop and the rebalance callbacks share the connection
        self._generation = 0  # bumped by every rebalance callback
        self._needs_seek = False
        self._inflight: asyncio.Task[None] | None = None  # the batch being written
        self.events_written = 0  # rows of committed batches that some writer applied for the first time
        self._preparer: ThreadPoolExecutor | None = None
        if any(isinstance(writer, PreparingWriter) for writer in host.writers):
            self._preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{host.stage}-prepare")
            # The event loop waits for the GIL while the preparing thread runs Python: every
            # database round trip of the batch being written can wait that long (5 ms by default).
            sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then write what is pending and leave the group."""
        self._consumer = self._new_consumer()
        self._consumer.subscribe([self._topic], listener=_SeekToStoredOffsets(self))
        await self._consumer.start()
        try:
            while not stop.is_set():
                await self._poll_once()
            await self._finish_inflight()
            async with self._db_lock:
                if self._batch:
                    await self._flush(self._take_batch(), wait_for_database=False)
        finally:
            if self._preparer is not None:
                self._preparer.shutdown(wait=False, cancel_futures=True)
            await self._consumer.stop()
            await self._dead_letters.close()
            await self._db.close()

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self._settings
        return AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.kafka_heartbeat_interval_s * 1000),
            max_poll_interval_ms=max(300_000, int(s.db_retry_max_backoff_s * 1000) * 6),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            **s.aiokafka_security(),
        )

    def _new_batch(self) -> PendingBatch[R]:
        return PendingBatch(self._host.row_format)

    async def _poll_once(self) -> None:
        assert self._consumer is not None
        s = self._settings
        if self._inflight is not None and self._inflight.done():
            await self._finish_inflight()  # raises what the write raised: a bug stops the consumer now
        if self._needs_seek:
            await self._finish_inflight()
            async with self._db_lock:
                await self._seek_to_stored_offsets()
        wait_ms = max(1, int(s.batch_max_wait_ms - self._batch.age_ms())) if self._batch else s.batch_max_wait_ms
        early = s.batch_caught_up_wait_ms
        if self._batch and early is not None and early < s.batch_max_wait_ms:
            # look again when the batch may be written if caught up, or soon after, when the write before may be over
            wait_ms = min(wait_ms, max(_CAUGHT_UP_RECHECK_MS, int(early - self._batch.age_ms())))
        generation = self._generation
        fetched = await self._consumer.getmany(timeout_ms=wait_ms, max_records=s.fetch_max_messages)
        if generation != self._generation:
            # A rebalance happened meanwhile: these may come from before the seek to the
            # stored offsets. Every assigned partition is sought again before the next read.
            return
        for tp, messages in fetched.items():
            for message in messages:
                self._batch.add(tp, message.offset, message.value)
        if self._batch and (
            len(self._batch.rows) >= s.batch_max_events
            or self._batch.age_ms() >= s.batch_max_wait_ms
            or (early is not None and self._batch.age_ms() >= early and not self._writing() and await self._caught_up())
        ):
            # Double buffering: the next batch is read, decoded and prepared while this one is written.
            # The batch stays ``self._batch`` until its write starts: a rebalance meanwhile flushes it.
            self._start_preparing(self._batch)
            await self._finish_inflight()
            if self._needs_seek:
                return  # the database went away meanwhile: this batch is read again after the seek
            self._inflight = asyncio.create_task(self._flush_locked(self._take_batch()))

    def _writing(self) -> bool:
        return self._inflight is not None and not self._inflight.done()

    async def _caught_up(self) -> bool:
        """Whether everything the assigned partitions held at the last fetch has been read."""
        assert self._consumer is not None
        try:
            for tp in self._consumer.assignment():
                end = self._consumer.highwater(tp)
                if end is None or await self._consumer.position(tp) < end:
                    return False
        except (IllegalStateError, AssertionError):  # a partition revoked meanwhile: a rebalance is on
            return False
        return True

    def _take_batch(self) -> PendingBatch[R]:
        batch, self._batch = self._batch, self._new_batch()
        return batch

    def _start_preparing(self, batch: PendingBatch[R]) -> None:
        """Start the writers' CPU work on ``batch`` in the preparing thread."""
        if self._preparer is not None and batch.rows:
            rows = batch.rows
            batch.prepared = asyncio.get_running_loop().run_in_executor(self._preparer, self._host.prepare, rows)

    @staticmethod
    async def _prepared(batch: PendingBatch[R]) -> Prepared | None:
        """What was prepared for ``batch``; none if nothing was (the writers then do it inline)."""
        if batch.prepared is None:
            return None
        try:
            return await batch.prepared
        except Exception:  # noqa: BLE001 - the executor shut down: the writers do it inline
            return None

    async def _finish_inflight(self) -> None:
        """Wait for the batch being written (and raise what its write raised)."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def _flush_locked(self, batch: PendingBatch[R]) -> None:
        async with self._db_lock:
            await self._flush(batch)

    async def _flush(self, batch: PendingBatch[R], wait_for_database: bool = True) -> None:
        """Write ``batch`` and its offsets in one transaction.

        If the database fails in a way worth retrying, nothing of this batch is kept: the
        consumer waits until the database answers (unless ``wait_for_database`` is false:
        in a rebalance callback, or stopping), then resumes from the offsets stored there
        (``_needs_seek``), which is what a commit lost in a crash requires.
        """
        if self._needs_seek:
            return  # read before the database went away: read again after the seek
        prepared = await self._prepared(batch)
        started = time.perf_counter()
        try:
            applied = await self._db.within_timeout(lambda conn: self._transaction(conn, batch, prepared))
        except Exception as exc:
            if not is_retriable_db_error(exc):
                raise
            self._needs_seek = True
            if wait_for_database:
                await self._db.wait_until_back(exc)
            else:
                self._db.reset()
            return
        self._observe(batch, applied, time.perf_counter() - started)
        await self._commit_kafka(batch.next_offsets)

    async def _transaction(
        self, conn: asyncpg.Connection, batch: PendingBatch[R], prepared: Prepared | None = None
    ) -> Applied:
        async with conn.transaction():
            applied = await self._host.apply(conn, batch.rows, prepared) if batch.rows else Applied()
            await self._dead_letters.publish(dead_letters(batch, applied.refusals, self._host.row_format, self._stage))
            await store_offsets(conn, self._group, batch.next_offsets)
        return applied

    def _observe(self, batch: PendingBatch[R], applied: Applied, seconds: float) -> None:
        """Metrics of a committed batch."""
        stage = self._stage
        self._host.confirm(applied)
        new = max(applied.by_writer.values(), default=0)
        metrics.LAST_COMMIT_TIMESTAMP.labels(stage).set_to_current_time()
        metrics.FLUSH_SECONDS.labels(stage, "batch").observe(seconds)
        metrics.BATCH_EVENTS.labels(stage).observe(len(batch.rows))
        metrics.EVENTS_OUT.labels(stage).inc(new)
        metrics.DUPLICATES.labels(stage).inc(max(0, len(batch.rows) - new - len(applied.refusals)))
        self._observe_latency(batch)
        for tp, offset in batch.next_offsets.items():
            metrics.COMMITTED_OFFSET.labels(stage, tp.topic, str(tp.partition)).set(offset)
        self.events_written += new

    def _observe_latency(self, batch: PendingBatch[R]) -> None:
        times = [t for t in map(self._host.row_format.occurred_at, batch.rows) if t is not None]
        if times:
            age = (datetime.now(UTC) - min(times)).total_seconds()
            metrics.END_TO_END_SECONDS.labels(self._stage).observe(max(0.0, age))

    async def _commit_kafka(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        assert self._consumer is not None
        owned = self._consumer.assignment()
        offsets = {tp: off for tp, off in next_offsets.items() if tp in owned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # informational copy only; PostgreSQL holds the truth
            log.info("%s: Kafka offset commit skipped: %s", self._stage, exc)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Write what was read from partitions we are about to lose, or drop it.

        Runs in aiokafka's coordinator task, possibly while the main loop awaits a fetch.
        """
        self._generation += 1
        inflight = self._inflight
        if inflight is not None:
            try:  # the batch being written must commit before a later one may
                await asyncio.shield(inflight)
            except Exception:  # noqa: BLE001 - the main loop raises it; a later batch must not commit past it
                self._batch = self._new_batch()
                return
        async with self._db_lock:
            if self._batch:
                await self._flush(self._take_batch(), wait_for_database=False)  # else the next owner rereads it

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Note the new assignment; the main loop seeks it to the stored offsets before reading."""
        self._generation += 1
        self._needs_seek = True

    async def _seek_to_stored_offsets(self) -> None:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        stored = await self._db.retrying(lambda conn: load_offsets(conn, self._group, [self._topic]))
        for tp in assigned:
            if tp in stored:
                self._consumer.seek(tp, stored[tp])
            else:
                await self._consumer.seek_to_beginning(tp)
        self._needs_seek = False
        self._batch = self._new_batch()  # anything read before the seek is read again after it
        log.info("%s: assigned %s, resuming at stored offsets %s", self._stage, sorted(assigned), stored)


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: CheckpointedConsumer[R]) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner.on_assigned(assigned)
