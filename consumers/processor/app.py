"""The Faust processor: input topics -> validate -> deduplicate -> correlate -> clean topic.

Guarantee: at least once from the input topics, with duplicates removed within the
dedup window. An input message is acknowledged (and so its offset may be committed by
Faust's timer) only after every event it carried is on the clean topic or the
dead-letter topic, acknowledged by the broker: the agent awaits those deliveries before
it returns to Faust, and ``take_events`` acks a batch only when the agent asks for the
next one. The dedup entry is written after the deliveries: a crash in between can let a
duplicate through, never lose an event; the sink and the writers guard the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust

from devtrail.consumers import metrics
from devtrail.consumers.processor import transport
from devtrail.consumers.processor.correlate import Correlator, encode_links
from devtrail.consumers.processor.dedup import DedupEntry, DedupIndex
from devtrail.consumers.processor.links import LinkReader
from devtrail.consumers.processor.pipeline import BatchOutcome, SourceMessage, process_batch
from devtrail.consumers.settings import ConsumerSettings, ProcessorSettings
from devtrail.schemas.envelope import Family
from devtrail.schemas.settings import KafkaSettings

log = logging.getLogger(__name__)

STAGE = "processor"
#: How often a processor commits the offsets of what it has acknowledged, in seconds.
PROCESSOR_COMMIT_INTERVAL_S = 0.2


def faust_app(app_id: str, settings: ConsumerSettings, datadir: Path, **options: Any) -> faust.App:
    """A Faust app as devtrail's workers run one: devtrail's transport, at least once, acks from
    every replica, no web server, Kafka security from the settings; ``options`` add to these."""
    datadir.mkdir(parents=True, exist_ok=True)
    transport.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    return faust.App(
        app_id,
        broker=[f"{transport.SCHEME}://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_rebalance_timeout=settings.kafka_session_timeout_s,
        broker_commit_interval=options.pop("broker_commit_interval", 1.0),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        datadir=str(datadir),
        broker_credentials=credentials(settings),
        **options,
    )


def build_app(settings: ProcessorSettings) -> faust.App:
    """Create the Faust app with its topics, dedup table and agent."""
    app = faust_app(
        settings.processor_group,
        settings,
        settings.processor_data_dir,
        topic_replication_factor=settings.replication_factor,
        producer_compression_type=settings.shared_compression,
        producer_max_request_size=max(8 << 20, 2 * settings.max_event_bytes),
        table_standby_replicas=0,
        stream_buffer_maxsize=settings.processor_buffer_messages,
        # The rules worker waits for these commits to cover what was published before the
        # events it reacts to (``rules_wait_for_processors``): a commit a second made the wait
        # about that long. A commit is one small request when there is progress, none otherwise.
        broker_commit_interval=PROCESSOR_COMMIT_INTERVAL_S,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(*settings.topics.input_topics, **raw)
    # value_type None: the changelog values are plain JSON objects. (value_type=dict made Faust
    # call dict.from_data on every changelog record, so recovery failed and restored nothing.)
    table = app.Table("dedup", partitions=settings.partitions, key_type=str, value_type=None)
    processor = Processor(
        settings,
        table,
        app.topic(settings.topics.clean, **raw),
        app.topic(settings.topics.dead_letters, **raw),
        app.topic(settings.topics.links, **raw),
    )

    @app.task  # type: ignore[untyped-decorator]
    async def read_links() -> None:
        if processor.links is not None:
            await processor.links.run()

    @table.on_recover  # type: ignore[untyped-decorator]
    async def restore_index() -> None:
        processor.restore()

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def validate_and_deduplicate(stream: Any) -> None:
        async for events in stream.take_events(
            settings.processor_batch_messages, within=settings.processor_batch_wait_s
        ):
            await processor.handle(events)

    return app


def credentials(settings: KafkaSettings) -> Any:
    """Faust's form of the Kafka TLS / SASL settings (``None`` for plaintext)."""
    security = settings.aiokafka_security()
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(security["ssl_context"])
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=security.get("sasl_plain_password"),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=security.get("ssl_context"),
    )


class Processor:
    """Publishes a batch's outcome and keeps the dedup index and its table in step."""

    def __init__(
        self, settings: ProcessorSettings, table: Any, clean: Any, dead_letters: Any, links: Any = None
    ) -> None:
        self._settings = settings
        self._table = table
        self._clean = clean
        self._dead_letters = dead_letters
        self._links_topic = links
        self._topic_families = {settings.topics.input_topic(family): family.value for family in Family}
        self.index = DedupIndex(settings.dedup_window_s, settings.dedup_max_ids)
        self.correlator = Correlator() if settings.correlation else None
        self.links = LinkReader(settings, self.correlator) if self.correlator is not None else None

    def restore(self) -> None:
        """Rebuild the in-memory index from the table after recovery."""
        entries = [DedupEntry.from_table_item(k, v) for k, v in self._table.data.items() if v]
        self.index.restore(entries)
        log.info("dedup index restored: %d ids from %d entries", len(self.index), len(entries))

    async def handle(self, events: Sequence[Any]) -> None:
        """Process one batch; return only when all its results are durable.

        Everything that awaits is inside the ``try``: a cancellation anywhere (a shutdown, a
        rebalance) must leave the batch unacknowledged, or Faust commits past it.
        """
        messages = [SourceMessage(e.message.topic, e.message.partition, e.message.offset, e.value) for e in events]
        try:
            await self._wait_for_links()
            now = time.time()
            outcome = process_batch(
                messages,
                self.index,
                now,
                self._settings.max_event_bytes,
                self._settings.processor_clean_bundle_events,
                self._settings.processor_clean_bundle_bytes,
                self.correlator,
                self._settings.scrub_secrets,
                self._topic_families,
            )
            await self._publish(outcome)
            await self._remember(outcome, now)
        except Exception:
            # Nothing of this batch is acknowledged; a restart reads it again. Exiting is
            # the only safe move: Faust would keep the process alive with its agent
            # crashed (consuming nothing), or go on past the unacked offsets.
            log.critical("processor: could not process a batch; exiting for a restart", exc_info=True)
            os._exit(70)
        except BaseException:
            # Cancelled (shutdown): ``take_events`` acks a batch however its body ended, so
            # mark these messages done without telling the consumer: their offsets, and so
            # every later one of their partitions, stay uncommitted.
            for event in events:
                event.message.acked = True
            raise
        self._count(outcome)
        metrics.LAST_COMMIT_TIMESTAMP.labels(STAGE).set_to_current_time()

    async def _wait_for_links(self) -> None:
        """Before the first batch: wait (bounded) until the links topic has been read."""
        if self.links is None or self.links.ready.is_set():
            return
        timeout = self._settings.links_catch_up_timeout_s
        try:
            await asyncio.wait_for(self.links.ready.wait(), timeout)
        except TimeoutError:
            log.warning("processor: links topic not read within %.0fs; processing with a partial graph", timeout)
            self.links.ready.set()

    async def _publish(self, outcome: BatchOutcome) -> None:
        sends = [
            await self._clean.send(key=None, value=bundle, partition=partition)
            for partition, bundles in outcome.bundles.items()
            for bundle in bundles
        ]
        sends += [
            await self._dead_letters.send(key=f"{d.source_topic}:{d.source_partition}".encode(), value=d.to_json())
            for d in outcome.dead_letters
        ]
        if self._links_topic is not None:
            sends += [await self._links_topic.send(key=None, value=value) for value in encode_links(outcome.links)]
        await asyncio.gather(*sends)

    async def _remember(self, outcome: BatchOutcome, now: float) -> None:
        writes = []
        for entry in outcome.entries:
            value = entry.to_table_value()
            self._table.data[entry.key] = value
            writes.append(self._table.send_changelog(entry.partition, entry.key, value))
            self.index.record(entry)
        for partition in {entry.partition for entry in outcome.entries}:
            for key in self.index.expire(partition, now):
                self._table.data.pop(key, None)
                writes.append(self._table.send_changelog(partition, key, None, value_serializer="raw"))
        for partition, key in self.index.evict_over_capacity():
            self._table.data.pop(key, None)
            writes.append(self._table.send_changelog(partition, key, None, value_serializer="raw"))
        await asyncio.gather(*writes)

    def _count(self, outcome: BatchOutcome) -> None:
        for event_type, count in outcome.received.items():
            metrics.EVENTS_IN.labels(STAGE, event_type).inc(count)
        metrics.EVENTS_OUT.labels(STAGE).inc(outcome.accepted)
        metrics.DUPLICATES.labels(STAGE).inc(outcome.duplicates)
        metrics.ENRICHED.inc(outcome.enriched)
        for kind, count in outcome.scrubbed.items():
            metrics.SECRETS_SCRUBBED.labels(kind).inc(count)
        for dead in outcome.dead_letters:
            metrics.DEAD_LETTERS.labels(dead.error_kind).inc()


class QuietWorker(faust.Worker):  # type: ignore[misc]  # faust.Worker is untyped
    """A Faust worker without the terminal spinner.

    The spinner sets the root logger to DEBUG (to spin on every record) whatever the log
    level asked for, so every debug call of aiokafka and Faust built a log record that the
    handler then dropped: about 2 % of the processor's CPU (py-spy), for nothing here.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None


def run_worker(settings: ProcessorSettings) -> None:
    """Run the processor in this process until SIGTERM or Ctrl-C."""
    app = build_app(settings)
    worker = QuietWorker(app, loglevel=settings.processor_log_level.upper(), quiet=True)
    worker.execute_from_commandline()
