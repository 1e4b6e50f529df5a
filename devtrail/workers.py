"""``devtrail run ROLE``: one worker process (processor, sink, writers, dead-letter store, rules or notifier)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from devtrail.consumers.checkpoint import CheckpointedConsumer, WriterHost
from devtrail.consumers.clean import CLEAN_ROWS
from devtrail.consumers.settings import (
    CheckpointSettings,
    DeadLetterStoreSettings,
    NotifierSettings,
    ProcessorSettings,
    RulesSettings,
    SinkSettings,
    WritersSettings,
)
from devtrail.errors import SetupError
from devtrail.settings import StackSettings

log = logging.getLogger(__name__)


def run_processor() -> None:
    """The Faust processor (validate, deduplicate, publish clean events)."""
    from devtrail.consumers.processor.app import run_worker

    run_worker(ProcessorSettings())


def run_sink() -> None:
    """The COPY sink into ``events``, and the upkeep of its monthly partitions and retention."""
    from devtrail.consumers.retention import maintain_event_partitions
    from devtrail.consumers.sink import EventSink

    settings = SinkSettings()

    def upkeep(stop: asyncio.Event) -> Coroutine[None, None, None]:
        return maintain_event_partitions(
            settings.database_url,
            settings.partitions_months_ahead,
            settings.partitions_check_interval_s,
            stop,
            settings.retention_days,
        )

    host = WriterHost("sink", CLEAN_ROWS, [EventSink()])
    asyncio.run(_consume(settings, host, settings.sink_group, upkeep))


def run_writers() -> None:
    """The writer host: projections and aggregates (``devtrail.consumers.writers``)."""
    from devtrail.consumers.writers import build_writers

    settings = WritersSettings()
    host = WriterHost("writers", CLEAN_ROWS, build_writers(settings.writers, settings))
    asyncio.run(_consume(settings, host, settings.writers_group))


def serve_worker_metrics(settings: StackSettings, role: str) -> None:
    """Serve this process's ``/metrics``, ``/livez`` and ``/readyz`` (one worker per pod, as
    in Kubernetes) on ``metrics_host:metrics_port``, with the lag of its consumer group.

    Under ``devtrail up`` the supervisor serves every worker's metrics and the stack's
    health instead, and starts workers with port 0.

    Args:
        settings: the worker's settings (``metrics_host``, ``metrics_port``, Kafka, PostgreSQL).
        role: the worker's role, whose consumer group's lag is measured.
    """
    if settings.metrics_port == 0:
        return
    from devtrail.http import serve_worker

    try:
        serve_worker(settings, role)
    except OSError as exc:
        log.warning(
            "metrics not served: %s:%d: %s (set DEVTRAIL_METRICS_HOST / DEVTRAIL_METRICS_PORT)",
            settings.metrics_host,
            settings.metrics_port,
            exc,
        )


#: Seconds between the full collections a worker runs in place of the automatic collector.
GC_INTERVAL_S = 10.0


def tune_garbage_collector(interval_s: float = GC_INTERVAL_S) -> threading.Thread:
    """Replace the automatic cyclic garbage collector with a full collection every ``interval_s``.

    Workers allocate millions of short-lived objects (models, rows, strings); reference
    counting frees them at once. The automatic collector, which only finds reference
    *cycles*, was triggered by those allocations and walked the live batch again and again:
    with Python's default threshold it cost the processor as much as validation (measured:
    22 -> 12 us per event with a higher threshold), and still about 1 us per event with
    it (10.7 vs 11.7 us in ``process_batch``). Cycles are rare here (asyncio and aiokafka
    make a few); collected every ``interval_s`` they hold little memory. Objects alive
    after start-up are frozen, so the periodic collection does not walk them either.

    Returns:
        the daemon thread running the collections.
    """
    gc.collect()
    gc.freeze()
    gc.disable()

    def collect_periodically() -> None:
        while True:
            time.sleep(interval_s)
            gc.collect()

    thread = threading.Thread(target=collect_periodically, name="gc", daemon=True)
    thread.start()
    return thread


def run_dead_letter_store() -> None:
    """The copy of the dead-letter topic into ``dead_letters``."""
    from devtrail.consumers.deadletter_store import DEAD_LETTER_RECORDS, DeadLetterStore

    settings = DeadLetterStoreSettings()
    host = WriterHost("dead_letters", DEAD_LETTER_RECORDS, [DeadLetterStore()], publish_refusals=False)
    asyncio.run(_consume(settings, host, settings.dead_letter_group, topic=settings.topics.dead_letters))


def run_rules() -> None:
    """The rules worker: built-in rules and the ``DEVTRAIL_RULES`` modules (``devtrail.consumers.rules``)."""
    from devtrail.consumers.rules.app import run_worker

    run_worker(RulesSettings())


def run_notifier() -> None:
    """The webhook notifier (``devtrail.consumers.notify``): ``alert.raised`` events POSTed to
    ``DEVTRAIL_NOTIFIER_WEBHOOK_URL``.

    Raises:
        SetupError: no webhook URL is configured.
    """
    from devtrail.consumers.notify import Notifier

    settings = NotifierSettings()
    if not settings.notifier_webhook_url:
        raise SetupError("the notifier needs DEVTRAIL_NOTIFIER_WEBHOOK_URL: the URL alerts are POSTed to")

    async def notify() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Notifier(settings).run(stop)
        log.info("notifier: stopped")

    asyncio.run(notify())


ROLES: dict[str, Callable[[], None]] = {
    "processor": run_processor,
    "sink": run_sink,
    "writers": run_writers,
    "dead-letters": run_dead_letter_store,
    "rules": run_rules,
    "notifier": run_notifier,
}


async def _consume(
    settings: CheckpointSettings,
    host: WriterHost[Any],
    group: str,
    alongside: Callable[[asyncio.Event], Coroutine[None, None, None]] | None = None,
    topic: str | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    topic = topic or settings.topics.clean
    consumer = CheckpointedConsumer(settings, host, group, topic)
    names = ", ".join(w.name for w in host.writers)
    log.info("%s: consuming %s as group %s with writers %s", host.stage, topic, group, names)
    await asyncio.gather(consumer.run(stop), *([alongside(stop)] if alongside else []))
    log.info("%s: stopped after writing %d events", host.stage, consumer.events_written)
