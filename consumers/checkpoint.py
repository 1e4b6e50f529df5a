"""A Kafka consumer whose offsets are stored with its database writes, atomically.

Contract of a ``BatchWriter`` used by ``CheckpointedConsumer``:

* ``write(conn, rows)`` is called inside an open transaction (a savepoint) with the
  rows of one batch (clean-topic rows, ``consumers.clean.EVENT_COLUMNS`` order, possibly
  including copies already written before). It must be idempotent per ``event_id``. It returns how many events
  took effect. If it fails on the data (see ``consumers.poison``), it is called again on
  halves of the batch until the refused events stand alone; those are dead-lettered
  (acknowledged by the broker) before the transaction commits.
* After ``write`` returns, the consumer stores the batch's next offsets in the same
  transaction and commits. Only then is anything durable; if the process dies before,
  the batch is read again from the stored offsets.
* On partition assignment the consumer seeks to the stored offsets, so the database,
  not Kafka's committed offsets, decides where reading resumes. Kafka offsets are
  committed afterwards too, but only so that lag shows up in Kafka tools.
* When the database fails in a way worth retrying (connection lost, server restarted),
  the batch being written and everything read after it are dropped, and once the
  database answers again every partition is sought back to the offsets it stored. A
  server crash can take back commits it had acknowledged (asynchronous commit, or a
  replica promoted); their offsets go with them, and those events are read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumers import metrics
from consumers.clean import EVENT_ID, OCCURRED_AT, Row, row_as_object
from consumers.deadletter import DeadLetter
from consumers.errors import is_retriable_db_error
from consumers.offsets import load_offsets, store_offsets
from consumers.poison import Rejected, write_isolating
from consumers.settings import CheckpointSettings

log = logging.getLogger(__name__)


class BatchWriter(Protocol):
    """Writes one batch of rows; see the module docstring for when it is called."""

    stage: str

    def decode(self, topic: str, partition: int, offset: int, value: bytes | None) -> list[Row]:
        """The rows one message carries. Raises ``ValueError`` for a message it cannot read."""
        ...

    async def write(self, conn: asyncpg.Connection, rows: list[Row]) -> int: ...


class PendingBatch:
    """Rows read since the last commit, and the offsets that follow them."""

    def __init__(self, decode: Callable[[str, int, int, bytes | None], list[Row]]) -> None:
        self._decode = decode
        self.rows: list[Row] = []
        self.origins: list[tuple[TopicPartition, int]] = []  # (partition, offset) of each row
        self.next_offsets: dict[TopicPartition, int] = {}
        self.started = 0.0

    def add(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        if not self.next_offsets:
            self.started = time.monotonic()
        self.next_offsets[tp] = offset + 1
        try:
            rows = self._decode(tp.topic, tp.partition, offset, value)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            # These topics are written only by devtrail's own stages; this is a bug, not bad input.
            log.error("undecodable message at %s:%s offset %s skipped: %s", tp.topic, tp.partition, offset, exc)
            metrics.DEAD_LETTERS.labels("undecodable_internal").inc()
            return
        self.rows.extend(rows)
        self.origins.extend([(tp, offset)] * len(rows))

    def age_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000 if self.next_offsets else 0.0

    def __bool__(self) -> bool:
        return bool(self.next_offsets)


class CheckpointedConsumer:
    """Reads a topic in its own consumer group and writes batches exactly once in effect.

    Args:
        settings: Kafka, database and batching settings.
        writer: what to do with each batch inside the transaction.
        group: consumer group id (also the key of the stored offsets).
        topic: the topic to read.
    """

    def __init__(self, settings: CheckpointSettings, writer: BatchWriter, group: str, topic: str) -> None:
        self._settings = settings
        self._writer = writer
        self._group = group
        self._topic = topic
        self._batch = PendingBatch(self._writer.decode)
        self._conn: asyncpg.Connection | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._dead_letters: AIOKafkaProducer | None = None
        self._db_lock = asyncio.Lock()  # the main loop and the rebalance callbacks share the connection
        self._generation = 0  # bumped by every rebalance callback
        self._needs_seek = False
        self._inflight: asyncio.Task[None] | None = None  # the batch being written
        self.events_written = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then write what is pending and leave the group."""
        s = self._settings
        self._consumer = AIOKafkaConsumer(
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
            await self._consumer.stop()
            if self._dead_letters is not None:
                await self._dead_letters.stop()
            if self._conn is not None:
                await self._conn.close()

    async def _poll_once(self) -> None:
        assert self._consumer is not None
        s = self._settings
        if self._needs_seek:
            await self._finish_inflight()
            async with self._db_lock:
                await self._seek_to_stored_offsets()
        wait_ms = max(1, int(s.batch_max_wait_ms - self._batch.age_ms())) if self._batch else s.batch_max_wait_ms
        generation = self._generation
        fetched = await self._consumer.getmany(timeout_ms=wait_ms, max_records=s.fetch_max_messages)
        if generation != self._generation:
            # A rebalance happened meanwhile: these may come from before the seek to the
            # stored offsets. Every assigned partition is sought again before the next read.
            return
        for tp, messages in fetched.items():
            for message in messages:
                self._batch.add(tp, message.offset, message.value)
        if self._batch and (len(self._batch.rows) >= s.batch_max_events or self._batch.age_ms() >= s.batch_max_wait_ms):
            # Double buffering: the next batch is read and decoded while this one is written.
            await self._finish_inflight()
            if self._needs_seek:
                return  # the database went away meanwhile: this batch is read again after the seek
            self._inflight = asyncio.create_task(self._flush_locked(self._take_batch()))

    def _take_batch(self) -> PendingBatch:
        batch, self._batch = self._batch, PendingBatch(self._writer.decode)
        return batch

    async def _finish_inflight(self) -> None:
        """Wait for the batch being written (and raise what its write raised)."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def _flush_locked(self, batch: PendingBatch) -> None:
        async with self._db_lock:
            await self._flush(batch)

    async def _flush(self, batch: PendingBatch, wait_for_database: bool = True) -> None:
        """Write ``batch`` and its offsets in one transaction.

        If the database fails in a way worth retrying, nothing of this batch is kept: the
        consumer waits until the database answers (unless ``wait_for_database`` is false:
        in a rebalance callback, or stopping), then resumes from the offsets stored there
        (``_needs_seek``), which is what a commit lost in a crash requires.
        """
        if self._needs_seek:
            return  # read before the database went away: read again after the seek
        try:
            await self._write(batch)
        except Exception as exc:
            if not is_retriable_db_error(exc):
                raise
            self._needs_seek = True
            if wait_for_database:
                await self._reconnect(exc)
            else:
                await self._reset_connection()
            return
        await self._commit_kafka(batch.next_offsets)

    async def _reconnect(self, cause: BaseException) -> None:
        """Wait, with backoff, until the database accepts a connection again."""
        stage = self._writer.stage
        metrics.DB_RETRIES.labels(stage).inc()
        metrics.DB_AVAILABLE.labels(stage).set(0)
        log.warning("%s: database write failed (%s); resuming from the stored offsets once it is back", stage, cause)
        await self._reset_connection()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._connection()
            except Exception as exc:
                if not is_retriable_db_error(exc):
                    raise
                backoff = min(self._settings.db_retry_max_backoff_s, 0.1 * 2**attempt)
                log.warning("%s: database unavailable (%s); attempt %d, next in %.1fs", stage, exc, attempt, backoff)
                await asyncio.sleep(backoff)
            else:
                metrics.DB_AVAILABLE.labels(stage).set(1)
                log.warning("%s: database back after %d attempts", stage, attempt)
                return

    async def _write(self, batch: PendingBatch) -> None:
        conn = await self._connection()
        started = time.perf_counter()
        timeout = self._settings.db_write_timeout_s
        try:
            written, rejected = await asyncio.wait_for(self._write_transaction(conn, batch), timeout)
        except TimeoutError:
            # A lock held that long, or a connection that died without asyncpg noticing (a COPY
            # waiting for the socket to drain when the server crashed): both are retried.
            raise TimeoutError(f"the batch did not commit within {timeout:.0f}s") from None
        stage = self._writer.stage
        metrics.LAST_COMMIT_TIMESTAMP.labels(stage).set_to_current_time()
        metrics.FLUSH_SECONDS.labels(stage, "batch").observe(time.perf_counter() - started)
        metrics.BATCH_EVENTS.labels(stage).observe(len(batch.rows))
        metrics.EVENTS_OUT.labels(stage).inc(written)
        metrics.DUPLICATES.labels(stage).inc(len(batch.rows) - written - len(rejected))
        self._observe_latency(batch.rows)
        for tp, offset in batch.next_offsets.items():
            metrics.COMMITTED_OFFSET.labels(stage, tp.topic, str(tp.partition)).set(offset)
        self.events_written += written

    async def _write_transaction(self, conn: asyncpg.Connection, batch: PendingBatch) -> tuple[int, list[Rejected]]:
        async with conn.transaction():
            written, rejected = await write_isolating(conn, self._writer, batch.rows) if batch.rows else (0, [])
            if rejected:
                await self._dead_letter(batch, rejected)
            await store_offsets(conn, self._group, batch.next_offsets)
        return written, rejected

    async def _dead_letter(self, batch: PendingBatch, rejected: list[Rejected]) -> None:
        """Publish the events the database refused; return once the broker has them all.

        The dead-letter store itself does not publish what it cannot store back to the
        topic it reads (a loop): it logs and counts it, and goes on.
        """
        if self._topic == self._settings.topics.dead_letters:
            for item in rejected:
                tp, offset = batch.origins[item.position]
                log.error("%s: dead letter at %s:%s@%s not stored: %s", self._writer.stage, tp.topic,
                          tp.partition, offset, item.reason)  # fmt: skip
                metrics.DEAD_LETTERS.labels("unstorable_dead_letter").inc()
            return
        if self._dead_letters is None:
            s = self._settings
            self._dead_letters = AIOKafkaProducer(
                bootstrap_servers=s.kafka_bootstrap_servers,
                acks="all",
                compression_type=s.compression,
                **s.aiokafka_security(),
            )
            await self._dead_letters.start()
        sends = []
        for item in rejected:
            tp, offset = batch.origins[item.position]
            record = DeadLetter(
                error_kind="database",
                error=f"{self._writer.stage}: {item.reason}",
                source_topic=tp.topic,
                source_partition=tp.partition,
                source_offset=offset,
                original=orjson.dumps(row_as_object(batch.rows[item.position])),
                event_index=item.position,
            )
            log.error(
                "%s: dead-lettering event %s: %s",
                self._writer.stage,
                batch.rows[item.position][EVENT_ID],
                item.reason,
            )
            sends.append(await self._dead_letters.send(self._settings.topics.dead_letters, record.to_json()))
            metrics.DEAD_LETTERS.labels("database").inc()
        await asyncio.gather(*sends)

    def _observe_latency(self, rows: list[Row]) -> None:
        if not rows:
            return
        oldest = min(str(row[OCCURRED_AT]) for row in rows)
        try:
            age = (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds()
        except (TypeError, ValueError):
            return
        metrics.END_TO_END_SECONDS.labels(self._writer.stage).observe(max(0.0, age))

    async def _commit_kafka(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        assert self._consumer is not None
        owned = self._consumer.assignment()
        offsets = {tp: off for tp, off in next_offsets.items() if tp in owned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # informational copy only; PostgreSQL holds the truth
            log.info("%s: Kafka offset commit skipped: %s", self._writer.stage, exc)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._settings.database_url)
            if not self._settings.db_synchronous_commit:
                # Safe: offsets commit with the rows (see CheckpointSettings.db_synchronous_commit).
                await self._conn.execute("SET synchronous_commit TO off")
        return self._conn

    async def _reset_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

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
                self._batch = PendingBatch(self._writer.decode)
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
        stored = await self._stored_offsets()
        for tp in assigned:
            if tp in stored:
                self._consumer.seek(tp, stored[tp])
            else:
                await self._consumer.seek_to_beginning(tp)
        self._needs_seek = False
        self._batch = PendingBatch(self._writer.decode)  # anything read before the seek is read again after it
        log.info("%s: assigned %s, resuming at stored offsets %s", self._writer.stage, sorted(assigned), stored)

    async def _stored_offsets(self) -> dict[TopicPartition, int]:
        """The offsets the database holds, waiting for the database if it is away."""
        while True:
            try:
                return await load_offsets(await self._connection(), self._group, [self._topic])
            except Exception as exc:
                if not is_retriable_db_error(exc):
                    raise
                await self._reconnect(exc)


class _SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: CheckpointedConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner.on_assigned(assigned)
