"""Consumer lag per group and partition: the end offset of each partition minus the
offset its group will read next.

Where a group's committed offsets are: the processor's (Faust) and the notifier's in Kafka;
the checkpointed consumers' (sink, writers, dead-letter store, rules) in PostgreSQL, table
``consumer_offsets``, written with their rows. Those consumers copy their offsets to Kafka
too, but only for tools; the stored ones decide where they resume, so lag is measured
against them. A partition without a committed offset is read from its beginning, so its
lag is everything it holds.

The end offsets come from the broker (ListOffsets). Apache Kafka answers them exactly; the
embedded broker (Tansu) answers the base offset of the partition's last record batch + 1,
so there the lag of a busy partition reads low by up to one batch, and a drained
partition reads 0 (never negative: a committed offset past the reported end counts as 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from devtrail.consumers.offsets import load_offsets
from devtrail.consumers.settings import DatabaseSettings
from devtrail.settings import StackSettings

log = logging.getLogger(__name__)

#: Give up on one group's measurement after this long (an unreachable service must not stall the monitor).
MEASURE_TIMEOUT_S = 30.0
#: What an unreachable or failing Kafka or PostgreSQL raises; the group is then reported as not measured.
_UNREACHABLE = (OSError, TimeoutError, KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class ConsumerGroup:
    """A consumer group whose lag is measured.

    Attributes:
        name: the group id.
        topics: the topics it reads.
        offsets_in: where its committed offsets are: ``kafka`` or ``database``.
    """

    name: str
    topics: tuple[str, ...]
    offsets_in: Literal["kafka", "database"]


@dataclass(frozen=True)
class PartitionLag:
    """One group's position in one partition.

    Attributes:
        group: the consumer group.
        topic: the topic.
        partition: the partition number.
        end_offset: the partition's end as the broker reports it.
        next_offset: the offset the group reads next: its committed offset, or the
            partition's first offset when it has none.
    """

    group: str
    topic: str
    partition: int
    end_offset: int
    next_offset: int

    @property
    def lag(self) -> int:
        """Messages (offsets) not yet consumed; 0 when the reported end is behind."""
        return max(0, self.end_offset - self.next_offset)


def pipeline_groups(settings: StackSettings, roles: Iterable[str]) -> list[ConsumerGroup]:
    """The consumer groups of the given worker roles (``processor``, ``sink``, ...)."""
    topics = settings.topics
    groups = {
        "processor": ConsumerGroup(settings.processor_group, topics.input_topics, "kafka"),
        "sink": ConsumerGroup(settings.sink_group, (topics.clean,), "database"),
        "writers": ConsumerGroup(settings.writers_group, (topics.clean,), "database"),
        "dead-letters": ConsumerGroup(settings.dead_letter_group, (topics.dead_letters,), "database"),
        "rules": ConsumerGroup(settings.rules_group, (topics.clean,), "database"),
        "notifier": ConsumerGroup(settings.notifier_group, (topics.clean,), "kafka"),
    }
    return [groups[role] for role in roles]


class LagMonitor:
    """Measures the lag of some consumer groups every ``interval_s`` and keeps the last reading.

    Args:
        settings: how to reach Kafka and PostgreSQL.
        groups: the groups to measure.
        interval_s: seconds between two measurements.

    Attributes:
        readings: the latest lag of every partition of every group measured successfully.
        errors: per group, why its latest measurement failed (absent when it succeeded).
        measured_at: ``time.time()`` of the latest measurement (``None`` before the first).
    """

    def __init__(self, settings: DatabaseSettings, groups: Sequence[ConsumerGroup], interval_s: float) -> None:
        self._settings = settings
        self._groups = list(groups)
        self._interval_s = interval_s
        self._kafka: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._conn: asyncpg.Connection | None = None
        self.readings: list[PartitionLag] = []
        self.errors: dict[str, str] = {}
        self.measured_at: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Measure until ``stop`` is set; then close the connections."""
        try:
            while not stop.is_set():
                await self.measure()
                with contextlib.suppress(TimeoutError):  # the interval passed without a stop
                    await asyncio.wait_for(stop.wait(), self._interval_s)
        finally:
            await self.close()

    async def measure(self) -> list[PartitionLag]:
        """Measure every group once; keep and return the partitions measured.

        A group whose offsets or end offsets cannot be read is left out of ``readings``
        (an old value would look current), and the reason goes to ``errors`` and the log.
        """
        readings: list[PartitionLag] = []
        errors: dict[str, str] = {}
        for group in self._groups:
            try:
                readings += await asyncio.wait_for(self._measure_group(group), MEASURE_TIMEOUT_S)
            except _UNREACHABLE as exc:
                errors[group.name] = f"{type(exc).__name__}: {exc}"
                await self.close()  # connected again at the next measurement
        self._log_changes(errors)
        self.readings, self.errors, self.measured_at = readings, errors, time.time()
        return readings

    async def _measure_group(self, group: ConsumerGroup) -> list[PartitionLag]:
        kafka = await self._kafka_client()
        await kafka.topics()  # refresh the partition metadata
        partitions = [
            TopicPartition(topic, p) for topic in group.topics for p in sorted(kafka.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return []
        ends = await kafka.end_offsets(partitions)
        committed = await self._committed(group, partitions)
        missing = [tp for tp in partitions if tp not in committed]
        firsts = await kafka.beginning_offsets(missing) if missing else {}
        return [
            PartitionLag(group.name, tp.topic, tp.partition, ends[tp], committed.get(tp, firsts.get(tp, 0)))
            for tp in partitions
        ]

    async def _committed(self, group: ConsumerGroup, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed next offsets (partitions without one are left out)."""
        if group.offsets_in == "database":
            conn = await self._database()
            return await load_offsets(conn, group.name, list(group.topics))
        admin = await self._admin_client()
        # With the partitions named: the embedded broker drops the "all partitions" form.
        offsets = await admin.list_consumer_group_offsets(group.name, partitions=partitions)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def _kafka_client(self) -> AIOKafkaConsumer:
        if self._kafka is None:
            self._kafka = await self._settings.started_reader()
        return self._kafka

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            self._admin = await self._settings.started_admin()
        return self._admin

    async def _database(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._settings.database_url, timeout=10)
        return self._conn

    async def close(self) -> None:
        """Close every connection (the next measurement connects again)."""
        conn, kafka, admin = self._conn, self._kafka, self._admin
        self._conn, self._kafka, self._admin = None, None, None
        if conn is not None:
            conn.terminate()
        if kafka is not None:
            await kafka.stop()
        if admin is not None:
            await admin.close()

    def _log_changes(self, errors: dict[str, str]) -> None:
        for group, error in errors.items():
            if self.errors.get(group) != error:
                log.warning("consumer lag of %s not measured: %s", group, error)
        for group in self.errors.keys() - errors.keys():
            log.warning("consumer lag of %s measured again", group)


class LagCollector(Collector):
    """Exports a ``LagMonitor``'s latest reading as ``devtrail_consumer_lag{group,topic,partition}``."""

    def __init__(self, monitor: LagMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "devtrail_consumer_lag",
            "Offsets between a partition's end and the group's committed position (see devtrail.lag)",
            labels=["group", "topic", "partition"],
        )
        for reading in self._monitor.readings:
            lag.add_metric([reading.group, reading.topic, str(reading.partition)], reading.lag)
        yield lag
