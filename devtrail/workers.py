"""``devtrail run ROLE``: one worker process (processor, sink or aggregator)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine

from consumers.aggregator import HourlyEventCounts
from consumers.checkpoint import BatchWriter, CheckpointedConsumer
from consumers.settings import (
    AggregatorSettings,
    CheckpointSettings,
    DeadLetterStoreSettings,
    ProcessorSettings,
    SinkSettings,
)

log = logging.getLogger(__name__)


def run_processor() -> None:
    """The Faust processor (validate, deduplicate, publish clean events)."""
    from consumers.processor.app import run_worker

    run_worker(ProcessorSettings())


def run_sink() -> None:
    """The COPY sink into ``events``, and the upkeep of its monthly partitions."""
    from consumers.partitions import maintain_event_partitions
    from consumers.sink import EventSink

    settings = SinkSettings()

    def upkeep(stop: asyncio.Event) -> Coroutine[None, None, None]:
        return maintain_event_partitions(
            settings.database_url, settings.partitions_months_ahead, settings.partitions_check_interval_s, stop
        )

    asyncio.run(_consume(settings, EventSink(), settings.sink_group, upkeep))


def run_aggregator() -> None:
    """The ``event_counts_hourly`` aggregator."""
    settings = AggregatorSettings()
    asyncio.run(_consume(settings, HourlyEventCounts(), settings.aggregator_group))


def serve_worker_metrics(port: int) -> None:
    """Serve this process's metrics on ``port`` (one worker per pod, as in Kubernetes).

    Under ``devtrail up`` the supervisor serves every worker's metrics instead, and starts
    workers with port 0.
    """
    if port == 0:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port)
    except OSError as exc:
        log.warning("metrics not served: port %d: %s (set DEVTRAIL_METRICS_PORT)", port, exc)


def tune_garbage_collector() -> None:
    """Make the cyclic garbage collector run far less often in a worker.

    Workers allocate millions of short-lived dicts, lists and models; with Python's default
    threshold (700) the collector kept walking every live object and cost the processor as
    much as validation itself (measured: 22 -> 12 us per event). Reference counting still
    frees everything at once; cycles are rare here and still collected, later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_dead_letter_store() -> None:
    """The copy of the dead-letter topic into ``dead_letters``."""
    from consumers.deadletter_store import DeadLetterStore

    settings = DeadLetterStoreSettings()
    asyncio.run(_consume(settings, DeadLetterStore(), settings.dead_letter_group, topic=settings.topics.dead_letters))


ROLES: dict[str, Callable[[], None]] = {
    "processor": run_processor,
    "sink": run_sink,
    "aggregator": run_aggregator,
    "dead-letters": run_dead_letter_store,
}


async def _consume(
    settings: CheckpointSettings,
    writer: BatchWriter,
    group: str,
    alongside: Callable[[asyncio.Event], Coroutine[None, None, None]] | None = None,
    topic: str | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    topic = topic or settings.topics.clean
    consumer = CheckpointedConsumer(settings, writer, group, topic)
    log.info("%s: consuming %s as group %s", writer.stage, topic, group)
    await asyncio.gather(consumer.run(stop), *([alongside(stop)] if alongside else []))
    log.info("%s: stopped after writing %d events", writer.stage, consumer.events_written)
