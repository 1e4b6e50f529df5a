"""The rules worker: a Faust app, in its own consumer group, reading the clean topic.

Per batch of clean-topic messages:

1. If any event goes to a rule, wait until the projection writers have applied the batch
   (their offsets in ``consumer_offsets`` reach it): a rule never reads a state older
   than its event.
2. Run the rules in one transaction with their state, their outbox rows and the batch's
   offsets (``devtrail.consumers.rules.engine``), retried whole if the database goes away.
3. Publish the outbox to Kafka, wait for the acknowledgements, mark the rows published.
4. Only then return the batch to Faust (acknowledged; its offsets may be committed).

Faust's committed offsets only say where to start reading; the offsets in PostgreSQL say
what was applied, so a batch read twice (a crash, a rebalance, two workers for a moment)
is applied once. Periodic rules run in the same process, each under an advisory lock so
that one worker at a time runs it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP

from devtrail.consumers import metrics
from devtrail.consumers.checkpoint.database import DatabaseLink
from devtrail.consumers.clean import EVENT_TYPE, CleanRow, clean_row, decode_rows
from devtrail.consumers.errors import is_retriable_db_error
from devtrail.consumers.processor.app import QuietWorker, faust_app
from devtrail.consumers.rules.api import AnyRule, PeriodicRule, RuleError, rules_in
from devtrail.consumers.rules.builtin import builtin_rules
from devtrail.consumers.rules.engine import Emitted, Message, RulesEngine
from devtrail.consumers.settings import RulesSettings
from devtrail.producers.bundler import Bundle, choose_partition

log = logging.getLogger(__name__)

STAGE = "rules"
#: Bytes per partition a fetch of the clean topic may return (Faust's default is 1 MiB).
CLEAN_FETCH_BYTES = 16 << 20
_PRUNE_EVERY_S = 600.0
#: How often the wait for the projections looks at their offsets (a batch waits about half of it in vain).
_OFFSETS_POLL_S = 0.02
#: How often the wait for the processors looks at their offsets (they commit every ``PROCESSOR_COMMIT_INTERVAL_S``).
_PROCESSORS_POLL_S = 0.05
#: Derived events per bundle at most, as the SDK's defaults (``ProducerSettings``).
BUNDLE_MAX_EVENTS, BUNDLE_MAX_BYTES = 500, 256 * 1024


def load_rules(settings: RulesSettings) -> list[AnyRule]:
    """The built-in rules the settings switch on, then those of the ``rules`` modules.

    Raises:
        RuleError: a module cannot be imported, defines no rule, or two rules share a name.
    """
    loaded: list[AnyRule] = list(builtin_rules(settings))
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in settings.rule_modules():
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise RuleError(f"DEVTRAIL_RULES names {name!r}, which cannot be imported: {exc!r}") from exc
        found = rules_in(module)
        if not found:
            raise RuleError(f"module {name} defines no @rule or @every handler at its top level")
        loaded += found
    names = [r.name for r in loaded]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RuleError(
            f"two rules are named {', '.join(twice)}: give one a name=... (DEVTRAIL_RULES: {settings.rules})"
        )
    return loaded


class RulesRunner:
    """Runs the engine on Faust's batches and publishes what it emitted."""

    def __init__(self, settings: RulesSettings, engine: RulesEngine, app: faust.App) -> None:
        self._settings = settings
        self.engine = engine
        self._app = app
        self._db = DatabaseLink(
            settings.model_copy(update={"db_synchronous_commit": settings.rules_synchronous_commit}), STAGE
        )
        self._lock = asyncio.Lock()
        self._topics: dict[str, Any] = {}
        self._partition_lists: dict[str, list[int]] = {}
        self._last_run: dict[str, float] = {}
        self._leftovers_published = False
        self._admin: AIOKafkaAdminClient | None = None
        self._kafka: AIOKafkaConsumer | None = None

    async def handle(self, events: Sequence[Any]) -> None:
        """Apply one batch; return only when its effects are committed and published."""
        messages = [self._message(e.message.partition, e.message.offset, e.value) for e in events]
        try:
            async with self._lock:
                await self._publish_leftovers()
                if any(self.engine.wants(m.rows) for m in messages):
                    # The processors produced the batch's newest message at this time (ms).
                    produced_ms = max(int(e.message.timestamp * 1000) for e in events)
                    await self._wait_for_processors(produced_ms)
                    await self._wait_for_projections(messages)
                emitted = await self._apply(messages)
                await self._publish(emitted)
        except Exception:
            log.critical("rules: could not process a batch; exiting for a restart", exc_info=True)
            os._exit(70)
        except BaseException:
            for event in events:  # cancelled: leave the batch unacknowledged (see the processor)
                event.message.acked = True
            raise
        metrics.LAST_COMMIT_TIMESTAMP.labels(STAGE).set_to_current_time()

    async def _apply(self, messages: list[Message]) -> list[Emitted]:
        while True:
            try:
                result = await self._db.within_timeout(lambda conn: self.engine.apply(conn, messages))
            except Exception as exc:
                if not is_retriable_db_error(exc):
                    raise
                await self._db.wait_until_back(exc)
                continue
            for rule, seconds in result.seconds.items():
                metrics.RULE_SECONDS.labels(rule).inc(seconds)
                metrics.RULE_CALLS.labels(rule).inc(result.calls[rule])
            return result.emitted

    def _message(self, partition: int, offset: int, value: bytes | None) -> Message:
        """A clean message's rows of the types the rules read, typed; the others are not even typed.

        A message or row that is not clean is skipped here: the writers dead-letter it.
        """
        try:
            raw = decode_rows(value)
        except (ValueError, TypeError, IndexError):
            log.warning("rules: clean message at %d/%d is not one; skipped", partition, offset)
            return Message(partition, offset, [], [])
        rows: list[CleanRow] = []
        indices: list[int] = []
        for index, values in enumerate(raw):
            if isinstance(values, list) and len(values) > EVENT_TYPE and self.engine.reads(str(values[EVENT_TYPE])):
                row = clean_row(values)
                if isinstance(row, CleanRow):
                    rows.append(row)
                    indices.append(index)
        return Message(partition, offset, rows, indices)

    async def _wait_for_processors(self, before_ms: int) -> None:
        """Wait until the processors have read every input message appended before ``before_ms``
        (when they produced the batch's newest clean message): every event published before the
        batch's events were.

        The projections then hold those events too (once ``_wait_for_projections`` has waited
        for the writers, reading the clean topic's ends after this), on every partition: a rule
        does not see a requirement whose task created earlier is still on a partition whose
        processor is behind. Per partition, the first offset at or after ``before_ms`` (the
        input's timestamps are its producers' clocks: one far ahead can slip past this), else
        the end; usually the processors' last commit covers it already.
        """
        if not self._settings.rules_wait_for_processors:
            return
        s = self._settings
        partitions = [TopicPartition(topic, p) for topic in s.topics.input_topics for p in range(s.partitions)]
        try:
            kafka = await self._kafka_client()
            ends = await kafka.end_offsets(partitions)  # first: a message appended after has a later time
            found = await kafka.offsets_for_times(dict.fromkeys(partitions, before_ms))
        except Exception as exc:  # noqa: BLE001 - the projections' wait still orders the batch's own partitions
            log.warning("rules: could not read the input topics' offsets (%s); not waiting for the processors", exc)
            await self._close_clients()
            return
        behind: dict[TopicPartition, int] = {}
        for tp in partitions:
            hit = found.get(tp)
            # No message at or after the time (the embedded broker answers offset 0, time -1): the end.
            target = hit.offset if hit is not None and hit.timestamp >= 0 else ends[tp]
            if min(target, ends[tp]) > 0:
                behind[tp] = min(target, ends[tp])
        waiting = _Waiting()
        while behind:
            try:
                admin = await self._admin_client()
                committed = await admin.list_consumer_group_offsets(s.processor_group, partitions=list(behind))
            except Exception as exc:  # noqa: BLE001 - the broker away: wait for it as for the processors
                log.warning("rules: could not read the processors' offsets (%s); trying again", exc)
                await self._close_clients()
                committed = {}
            behind = {tp: end for tp, end in behind.items() if tp not in committed or committed[tp].offset < end}
            if not behind:
                break
            if waiting.due():
                log.warning(
                    "rules: waiting %.0fs for the processors (%s) to read %d input partitions up to where they "
                    "were; is `devtrail run processor` running? (or set DEVTRAIL_RULES_WAIT_FOR_PROCESSORS=false)",
                    waiting.seconds,
                    s.processor_group,
                    len(behind),
                )
            await asyncio.sleep(_PROCESSORS_POLL_S)
        metrics.RULES_WAITING_SECONDS.inc(waiting.seconds)

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            self._admin = await self._settings.started_admin()
        return self._admin

    async def _kafka_client(self) -> AIOKafkaConsumer:
        if self._kafka is None:
            self._kafka = await self._settings.started_reader()
        return self._kafka

    async def _close_clients(self) -> None:
        """Drop the Kafka clients (after an error); the next wait connects again."""
        admin, self._admin = self._admin, None
        kafka, self._kafka = self._kafka, None
        for client in (admin, kafka):
            if client is not None:
                try:
                    await client.close() if isinstance(client, AIOKafkaAdminClient) else await client.stop()
                except Exception:  # closing a client that failed: nothing to keep
                    log.debug("rules: closing a Kafka client failed", exc_info=True)

    async def _wait_for_projections(self, messages: list[Message]) -> None:
        if not self._settings.rules_wait_for_projections:
            return
        needed: dict[int, int] = {}
        for m in messages:
            if self.engine.wants(m.rows):
                needed[m.partition] = max(needed.get(m.partition, 0), m.offset + 1)
        # Every partition, up to its end now: an event's entities have events on other
        # partitions (a requirement's other tasks), which the projections must hold too, or
        # the last completion but one could look like the last (seen in CI).
        try:
            ends = await self._app.consumer.highwaters(
                *(TP(self.engine.clean_topic, p) for p in range(self._settings.partitions))
            )
            for tp, end in ends.items():
                needed[tp.partition] = max(needed.get(tp.partition, 0), int(end))
        except Exception:  # noqa: BLE001 - the batch's own partitions still bound the wait
            log.warning("rules: could not read the clean topic's end offsets; waiting for the batch's partitions only")
        groups = self._settings.projection_groups()
        waiting = _Waiting()
        while True:
            rows = await self._db.retrying(
                lambda conn: conn.fetch(
                    "SELECT consumer_group, partition, next_offset FROM consumer_offsets "
                    "WHERE consumer_group = ANY($1::text[]) AND topic = $2 AND partition = ANY($3::int[])",
                    groups,
                    self.engine.clean_topic,
                    list(needed),
                )
            )
            have = {(row["consumer_group"], row["partition"]): row["next_offset"] for row in rows}
            behind = [(g, p) for g in groups for p, n in needed.items() if have.get((g, p), 0) < n]
            if not behind:
                metrics.RULES_WAITING_SECONDS.inc(waiting.seconds)
                return
            if waiting.due():
                log.warning(
                    "rules: waiting %.0fs for the projection writers (%s) to apply the events on partitions %s; "
                    "is `devtrail run writers` running? (or set DEVTRAIL_RULES_WAIT_FOR_PROJECTIONS=false)",
                    waiting.seconds,
                    ", ".join(groups),
                    sorted({p for _, p in behind}),
                )
            await asyncio.sleep(_OFFSETS_POLL_S)

    async def _publish(self, emitted: list[Emitted]) -> None:
        if not emitted:
            return
        sends = [
            await self._topic(topic).send(key=key, value=value, partition=partition)
            for topic, partition, key, value in await self._messages(emitted)
        ]
        await asyncio.gather(*sends)
        ids = [e.event_id for e in emitted]
        await self._db.retrying(
            lambda conn: conn.execute(
                "UPDATE rules.emitted SET published_at = now() WHERE event_id = ANY($1::uuid[])", ids
            )
        )
        for e in emitted:
            metrics.DERIVED_EVENTS.labels(e.rule, e.kind).inc()

    async def _publish_leftovers(self) -> None:
        """After a start: publish what a crash left committed but unpublished."""
        if self._leftovers_published:
            return
        rows = await self._db.retrying(
            lambda conn: conn.fetch(
                "SELECT event_id, rule, kind, event_type, cause_id, depth, topic, key, value FROM rules.emitted "
                "WHERE published_at IS NULL ORDER BY created_at"
            )
        )
        if rows:
            log.warning("rules: publishing %d derived events left unpublished by the last run", len(rows))
            await self._publish([Emitted(**dict(row)) for row in rows])
        self._leftovers_published = True

    async def _messages(self, emitted: list[Emitted]) -> list[tuple[str, int | None, bytes | None, bytes]]:
        """The Kafka messages of ``emitted``: derived events packed into bundles per partition, as the
        SDK packs them (a processor pays its cost per message, about 180 us, not per event), each
        event still on its own key's partition; dead letters one per message, as the dead-letter
        store reads them. In the order emitted, within each partition."""
        messages: list[tuple[str, int | None, bytes | None, bytes]] = []
        bundles: dict[tuple[str, int], Bundle] = {}
        loop = asyncio.get_running_loop()  # a Bundle carries a future; nothing waits on it here
        for e in emitted:
            partitions = await self._partitions(e.topic) if e.kind == "event" and e.key else None
            if not partitions:
                messages.append((e.topic, None, e.key, e.value))
                continue
            assert e.key is not None
            partition = choose_partition(e.key, partitions)
            bundle = bundles.get((e.topic, partition))
            if bundle is not None and not bundle.fits(e.value, BUNDLE_MAX_EVENTS, BUNDLE_MAX_BYTES):
                messages.append((e.topic, partition, bundle.key, bundle.value()))
                bundle = None
            if bundle is None:
                bundle = bundles[(e.topic, partition)] = Bundle(e.topic, partition, e.key, loop.create_future())
            bundle.add(e.value)
        messages += [(b.topic, b.partition, b.key, b.value()) for b in bundles.values()]
        return messages

    async def _partitions(self, topic: str) -> list[int] | None:
        """The topic's partitions, from the producer's metadata (cached); None if it cannot say."""
        if topic not in self._partition_lists:
            try:
                found = await self._app.producer._ensure_producer().partitions_for(topic)
            except Exception:  # noqa: BLE001 - then one message per event, as before
                log.warning("rules: no partitions known for %s; derived events go one per message", topic)
                return None
            self._partition_lists[topic] = sorted(found) if found else []
        return self._partition_lists[topic] or None

    def _topic(self, name: str) -> Any:
        if name not in self._topics:
            self._topics[name] = self._app.topic(
                name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
            )
        return self._topics[name]

    async def run_periodic(self) -> None:
        """Run the periodic rules when due, and prune published outbox rows now and then."""
        last_prune = 0.0
        while True:
            await asyncio.sleep(0.5)
            try:
                for periodic in self.engine.periodic_rules:
                    if time.monotonic() - self._last_run.get(periodic.name, 0.0) >= periodic.interval_s:
                        self._last_run[periodic.name] = time.monotonic()
                        await self._run_once(periodic)
                if time.monotonic() - last_prune > _PRUNE_EVERY_S:
                    last_prune = time.monotonic()
                    await self._prune()
            except Exception as exc:
                if not is_retriable_db_error(exc):
                    log.critical("rules: periodic rules failed; exiting for a restart", exc_info=True)
                    os._exit(70)
                await self._db.wait_until_back(exc)

    async def _run_once(self, periodic: PeriodicRule) -> None:
        async with self._lock:
            await self._publish_leftovers()
            emitted = await self._db.within_timeout(lambda conn: self.engine.run_periodic(conn, periodic))
            if emitted:
                await self._publish(emitted)

    async def _prune(self) -> None:
        days = self._settings.rules_emitted_retention_days
        async with self._lock:
            deleted = await self._db.retrying(
                lambda conn: conn.execute(
                    "DELETE FROM rules.emitted WHERE published_at < now() - make_interval(secs => $1)", days * 86400
                )
            )
        log.info("rules: pruned published derived events older than %.1f days (%s)", days, deleted)


def build_app(settings: RulesSettings, rules: Sequence[AnyRule] | None = None) -> tuple[faust.App, RulesRunner]:
    """The Faust app of the rules worker, and the runner it drives."""
    chosen = list(rules) if rules is not None else load_rules(settings)
    engine = RulesEngine(
        chosen, settings.topics, settings.rules_group, settings.rules_timeout_s, settings.rules_max_depth
    )
    app = faust_app(
        settings.rules_group,
        settings,
        settings.rules_data_dir,
        producer_compression_type=settings.compression,
        # Faust's 1 MiB stopped the worker for good at a clean-topic record batch larger than
        # that (several bundles of up to 512 KiB each): measured, the group never moved again.
        consumer_max_fetch_size=CLEAN_FETCH_BYTES,
    )
    runner = RulesRunner(settings, engine, app)
    source = app.topic(
        settings.topics.clean, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def run_rules(stream: Any) -> None:
        async for events in stream.take_events(settings.rules_batch_messages, within=settings.rules_batch_wait_s):
            await runner.handle(events)

    @app.task  # type: ignore[untyped-decorator]
    async def periodic() -> None:
        await runner.run_periodic()

    names = ", ".join(r.name for r in engine.rules) or "none"
    log.info("rules: group %s reading %s with rules: %s", settings.rules_group, settings.topics.clean, names)
    return app, runner


def run_worker(settings: RulesSettings) -> None:
    """Run the rules worker in this process until SIGTERM or Ctrl-C."""
    app, _ = build_app(settings)
    worker = QuietWorker(app, loglevel=settings.rules_log_level.upper(), quiet=True)
    worker.execute_from_commandline()


class _Waiting:
    """How long a wait has lasted, and whether it is time to say so in the log again (every 10 s)."""

    EVERY_S = 10.0

    def __init__(self) -> None:
        self.started = self._said = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._said > self.EVERY_S:
            self._said = now
            return True
        return False
