"""The links topic: how every processor learns the links the others found.

A processor publishes the links its batch taught it (``BatchOutcome.links``) with the
batch's clean rows, before the input is acknowledged. Every processor reads the whole
links topic, from its beginning, for as long as it runs, outside any consumer group, into
its ``Correlator``: after a restart or a rebalance the graph is whole again once the topic
is read (``ready``), and a processor waits for that, up to
``DEVTRAIL_LINKS_CATCH_UP_TIMEOUT_S``, before it processes its first batch.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from devtrail.consumers import metrics
from devtrail.consumers.processor.correlate import Correlator, decode_links
from devtrail.consumers.settings import ProcessorSettings

log = logging.getLogger(__name__)


class LinkReader:
    """Applies the links topic to a ``Correlator``, from its beginning, forever.

    Args:
        settings: Kafka settings and the topic names.
        correlator: the graph to fill.
    """

    def __init__(self, settings: ProcessorSettings, correlator: Correlator) -> None:
        self._settings = settings
        self._correlator = correlator
        self.ready = asyncio.Event()
        self.applied = 0

    async def run(self) -> None:
        """Read until cancelled; reconnect after a broker error."""
        while True:
            try:
                await self._read()
            except KafkaError as exc:
                log.warning("links: reading %s failed (%s); retrying in 1s", self._settings.topics.links, exc)
                await asyncio.sleep(1.0)

    async def _read(self) -> None:
        s = self._settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **s.aiokafka_security(),
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            next_offsets = dict(await consumer.beginning_offsets(partitions))
            ends = await consumer.end_offsets(partitions)
            while True:
                fetched = await consumer.getmany(timeout_ms=500, max_records=20_000)
                for tp, messages in fetched.items():
                    for message in messages:
                        self._apply(message.value)
                        next_offsets[tp] = message.offset + 1
                if not self.ready.is_set() and all(next_offsets[tp] >= ends[tp] for tp in partitions):
                    log.info("links: graph ready, %d links (%d read)", len(self._correlator), self.applied)
                    self.ready.set()
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        topic = self._settings.topics.links
        while True:
            await consumer.topics()  # refreshes metadata
            numbers = consumer.partitions_for_topic(topic)
            if numbers:
                return [TopicPartition(topic, p) for p in sorted(numbers)]
            log.warning("links: topic %s not found yet (run `devtrail topics`); waiting", topic)
            await asyncio.sleep(1.0)

    def _apply(self, value: bytes | None) -> None:
        links = decode_links(value or b"")
        if links is None:
            metrics.DEAD_LETTERS.labels("unreadable_link").inc()
            log.error("links: unreadable record on %s skipped: %r", self._settings.topics.links, (value or b"")[:200])
            return
        for link in links:
            self._correlator.apply(link)
        self.applied += len(links)
