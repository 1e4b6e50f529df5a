"""Dead-letter publishing for a checkpointed consumer: rows its writers refused, messages
its format could not read.

Records are published, and acknowledged by the broker, inside the batch's transaction,
before it commits: a crash before the commit reads the batch again and publishes them
again (the dead-letter store keeps each record once per topic offset; a replayed copy is a
second record of the same failure, never a lost one).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from devtrail.consumers import metrics
from devtrail.consumers.checkpoint.batch import PendingBatch
from devtrail.consumers.checkpoint.format import R, RowFormat
from devtrail.consumers.checkpoint.host import Refusal
from devtrail.consumers.clean import jsonable
from devtrail.consumers.deadletter import DeadLetter
from devtrail.consumers.settings import CheckpointSettings

log = logging.getLogger(__name__)


def dead_letters(
    batch: PendingBatch[R], refusals: list[Refusal], row_format: RowFormat[R], stage: str
) -> list[DeadLetter]:
    """The dead-letter records of a batch: its malformed messages and its refused rows."""
    records = [
        _record("malformed", f"{stage}: {m.reason}", tp, offset, _original(m.original), None)
        for tp, offset, m in batch.malformed
    ]
    for refusal in refusals:
        tp, offset = batch.origins[refusal.position]
        row = batch.rows[refusal.position]
        original = orjson.dumps(row_format.as_object(row))
        records.append(
            _record("database", f"{refusal.writer}: {refusal.reason}", tp, offset, original, refusal.position)
        )
    return records


def _record(kind: str, error: str, tp: TopicPartition, offset: int, original: bytes, index: int | None) -> DeadLetter:
    return DeadLetter(
        error_kind=kind,
        error=error,
        source_topic=tp.topic,
        source_partition=tp.partition,
        source_offset=offset,
        original=original,
        event_index=index,
    )


def _original(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if value is None:
        return b""
    return orjson.dumps(jsonable(value))


class DeadLetterPublisher:
    """Publishes dead-letter records and waits for the broker to acknowledge every one.

    Args:
        settings: Kafka settings and the dead-letter topic.
        stage: the consumer's name in logs.
        to_topic: false for the consumer *of* the dead-letter topic: it logs and counts its
            records (``unstorable_dead_letter``) instead of publishing them back to itself.
    """

    def __init__(self, settings: CheckpointSettings, stage: str, to_topic: bool = True) -> None:
        self._settings = settings
        self._stage = stage
        self._to_topic = to_topic
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, records: list[DeadLetter]) -> None:
        """Publish ``records``; return once the broker has them all."""
        if not records:
            return
        for record in records:
            log.error("%s: dead-lettering %s:%s@%s: %s", self._stage, record.source_topic,
                      record.source_partition, record.source_offset, record.error)  # fmt: skip
        if not self._to_topic:
            metrics.DEAD_LETTERS.labels("unstorable_dead_letter").inc(len(records))
            return
        producer = await self._started()
        topic = self._settings.topics.dead_letters
        sends = []
        for record in records:
            key = f"{record.source_topic}:{record.source_partition}".encode()
            sends.append(await producer.send(topic, record.to_json(), key=key))
            metrics.DEAD_LETTERS.labels(record.error_kind).inc()
        await asyncio.gather(*sends)

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            s = self._settings
            producer = AIOKafkaProducer(
                bootstrap_servers=s.kafka_bootstrap_servers,
                acks="all",
                compression_type=s.shared_compression,
                **s.aiokafka_security(),
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        """Stop the producer, if one was started."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
