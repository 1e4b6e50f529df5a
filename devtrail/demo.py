"""``devtrail demo``: a realistic workload through the whole pipeline, checked exactly once.

It produces N unique events from the load generator (or, with ``stories``, whole development
stories of at least N events: ``devtrail.producers.stories``), re-sends a share of them unchanged
(same ``event_id``, as a retrying client would), optionally sends invalid messages, then
waits until the events table and the hourly aggregate hold every unique event once.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field, fields
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from devtrail.consumers.rules.builtin import builtin_rules
from devtrail.consumers.rules.engine import settled as rules_settled
from devtrail.producers.loadgen import Workload
from devtrail.producers.producer import EventProducer
from devtrail.producers.stories import Stories, StoryTruth
from devtrail.progress import Progress
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.ids import uuid7
from devtrail.settings import StackSettings
from devtrail.story_check import StoryCheck, check_stories

# What a careless or broken client sends; each must end up as a dead letter.
INVALID_MESSAGES: tuple[bytes, ...] = (
    b"this is not json",
    b'{"event_type": "task.completed"}',
    b'{"event_type": "no.such.type", "source": "demo"}',
    b'{"event_type": "llm.called", "source": "demo", "payload": {"provider": "x", "model": "m",'
    b' "input_tokens": -5, "output_tokens": 1}}',
    b'{"event_type": "task.started", "source": "demo", "occurred_at": "2026-01-01T10:00:00"}',
    b'[{"event_type": "task.created", "source": "demo"}]',
)

# The workload's events counted in the hourly aggregate: every count under its projects (a story's
# calls name only their agent: counted by it when the processor could not attribute them), less the
# events the rules derived from them, which carry the same references.
_AGGREGATED = """
SELECT (SELECT coalesce(sum(count), 0) FROM event_counts_hourly WHERE project_id LIKE $1 {agents})
     - (SELECT count(*) FROM events WHERE source LIKE 'devtrail-rules:%'
          AND (coalesce(project_id, '') LIKE $1 {event_agents}))
"""
_AGGREGATED_FLAT = _AGGREGATED.format(agents="", event_agents="")
_AGGREGATED_STORIES = _AGGREGATED.format(agents="OR agent_id LIKE $1", event_agents="OR coalesce(agent_id, '') LIKE $1")
_DERIVED = "SELECT count(*) FROM events WHERE source LIKE 'devtrail-rules:%'"


class _Published(Protocol):
    """What the drain check needs of the generator: its events' source and project prefix."""

    @property
    def source(self) -> str: ...

    @property
    def project_prefix(self) -> str: ...


@dataclass
class DemoReport:
    """What the demo sent and what the pipeline made of it."""

    produced: int
    unique: int
    duplicates_sent: int
    invalid_sent: int
    stored: int
    aggregated: int
    dead_lettered: int
    seconds: float
    #: Events the rules derived from the workload (requirement rollups, alerts, ...).
    derived: int
    events_per_second: float
    ok: bool
    #: With ``stories``: what the stories imply, to compare with what the pipeline made of them.
    truth: StoryTruth | None = field(default=None, repr=False, compare=False)
    #: With ``stories``: values of the ``analytics`` views compared with the truth, and those that differed.
    story_checks: int = 0
    story_problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The counts (with ``stories``, a summary of the stories too; never the whole truth)."""
        values: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "truth"}
        values["story_problems"] = self.story_problems[:20]
        if self.truth is not None:
            values["stories"] = self.truth.summary()
        return values


async def run_demo(
    settings: StackSettings,
    events: int,
    duplicate_rate: float,
    invalid: int,
    progress: Progress,
    timeout_s: float = 120.0,
    stories: bool = False,
) -> DemoReport:
    """Drive the workload through a running stack (``settings`` hold its addresses).

    With ``stories``, publish whole development stories of at least ``events`` events in
    causal order instead; the report's ``truth`` says what they imply.
    """
    run_id = f"demo-{uuid7().hex[-8:]}"
    workload, unique_events, truth = _generated(run_id, events, stories)
    unique = len(unique_events)
    rng = random.Random(run_id)  # noqa: S311
    resent = rng.sample(unique_events, round(unique * duplicate_rate))
    dead_letters = DeadLetterCounter(settings)
    await dead_letters.start()
    try:
        started = time.monotonic()
        async with EventProducer(settings) as producer:
            await _send_all(producer, unique_events, resent, progress)
            for i in range(invalid):
                topic = settings.topics.input_topics[i % len(settings.topics.input_topics)]
                await producer.send_raw(topic, INVALID_MESSAGES[i % len(INVALID_MESSAGES)])
        aggregated_sql = _AGGREGATED_STORIES if stories else _AGGREGATED_FLAT
        stored, aggregated, dead = await _wait_drained(
            settings, workload, aggregated_sql, unique, invalid, dead_letters, progress, timeout_s
        )
    finally:
        await dead_letters.stop()
    produced = len(unique_events) + len(resent)
    seconds = time.monotonic() - started
    checked = None
    if truth is not None:
        # The views hold the rules' derived events too (a requirement the rollup completed): once
        # the rules worker has read everything and its events are stored and applied, compare.
        rollup = await _wait_for_rules(settings, progress, timeout_s) and any(
            r.name == "requirement_rollup" for r in builtin_rules(settings)
        )
        checked = await _check_projections(settings, truth, rollup)
    derived = await _count(settings, _DERIVED)
    return DemoReport(
        produced=produced,
        unique=unique,
        duplicates_sent=len(resent),
        invalid_sent=invalid,
        stored=stored,
        aggregated=aggregated,
        dead_lettered=dead,
        seconds=round(seconds, 3),
        derived=derived,
        events_per_second=round(unique / seconds, 1) if seconds else 0.0,
        ok=stored == unique and aggregated == unique and dead == invalid and (checked is None or checked.ok),
        truth=truth,
        story_checks=sum(checked.checked.values()) if checked else 0,
        story_problems=checked.problems if checked else [],
    )


async def _count(settings: StackSettings, sql: str) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _check_projections(settings: StackSettings, truth: StoryTruth, rollup: bool) -> StoryCheck:
    """Compare the ``analytics`` views with the stories' truth (the writers apply every writer
    of a batch in one transaction: once the counts are complete, so are the projections)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await check_stories(conn, truth, rollup)
    finally:
        await conn.close()


#: Seconds without any offset of the rules group after which the demo takes it that none runs.
_NO_RULES_S = 5.0


async def _wait_for_rules(settings: StackSettings, progress: Progress, timeout_s: float) -> bool:
    """Wait until the rules worker has settled (twice in a row); false if none runs or it does not settle."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        started, settled = time.monotonic(), 0
        while time.monotonic() - started < timeout_s:
            has_offsets = await conn.fetchval(
                "SELECT count(*) > 0 FROM consumer_offsets WHERE consumer_group = $1", settings.rules_group
            )
            if not has_offsets and time.monotonic() - started > _NO_RULES_S:
                return False
            settled = (
                settled + 1
                if has_offsets and await rules_settled(conn, settings.rules_group, settings.writers_group)
                else 0
            )
            if settled >= 2:
                progress.done("rules      derived events stored and applied")
                return True
            progress.update("rules      waiting for the rules worker's derived events")
            await asyncio.sleep(0.25)
        return False
    finally:
        await conn.close()


def _generated(run_id: str, events: int, stories: bool) -> tuple[_Published, list[Envelope], StoryTruth | None]:
    """The generator, its unique events and, for stories, their truth."""
    seed = random.randrange(1 << 30)  # noqa: S311
    if stories:
        generator = Stories(run_id, seed=seed)
        return generator, generator.events(events), generator.truth
    workload = Workload(run_id, seed=seed)
    return workload, list(workload.events(events)), None


async def _send_all(
    producer: EventProducer, unique_events: list[Envelope], resent: list[Envelope], progress: Progress
) -> None:
    total = len(unique_events) + len(resent)
    waiters: dict[int, asyncio.Future[None]] = {}
    # Re-sent copies go out after their originals, as a client retrying would send them.
    for n, event in enumerate([*unique_events, *resent], start=1):
        await producer.wait_for_room()
        waiter = producer.emit_nowait(event)
        waiters[id(waiter)] = waiter
        if n % 5000 == 0 or n == total:
            progress.update(f"producing  {n:>9,}/{total:,} events")
            await asyncio.sleep(0)
    await asyncio.gather(*waiters.values())
    progress.done(f"produced   {total:,} events ({len(resent):,} of them re-sent duplicates), all acknowledged")


async def _wait_drained(
    settings: StackSettings,
    workload: _Published,
    aggregated_sql: str,
    unique: int,
    invalid: int,
    dead_letters: DeadLetterCounter,
    progress: Progress,
    timeout_s: float,
) -> tuple[int, int, int]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        last_change, last = time.monotonic(), (-1, -1, -1)
        while True:
            stored = await conn.fetchval("SELECT count(*) FROM events WHERE source = $1", workload.source)
            aggregated = await conn.fetchval(aggregated_sql, workload.project_prefix + "%")
            dead = await dead_letters.poll()
            now = (int(stored), int(aggregated), dead)
            progress.update(
                f"draining   stored {now[0]:>9,}/{unique:,}   aggregated {now[1]:>9,}/{unique:,}"
                f"   dead letters {dead}/{invalid}"
            )
            # Aggregated exactly: it lags the derived events' rows a moment, and may overshoot then.
            if now[0] >= unique and now[1] == unique and dead >= invalid:
                break
            if now != last:
                last_change, last = time.monotonic(), now
            elif time.monotonic() - last_change > timeout_s:
                break
            await asyncio.sleep(0.25)
        progress.done(f"drained    stored {now[0]:,}   aggregated {now[1]:,}   dead letters {dead}")
        return now
    finally:
        await conn.close()


class DeadLetterCounter:
    """Counts dead-letter records written since it started, by reading them.

    It reads instead of subtracting end offsets: the embedded broker (Tansu 0.6) was seen
    reporting an end offset of 4 for a partition that held offsets 0 to 6.
    """

    def __init__(self, settings: StackSettings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self.count = 0

    async def start(self) -> None:
        s = self._settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers, enable_auto_commit=False, **s.aiokafka_security()
        )
        await self._consumer.start()
        await self._consumer.topics()
        topic = s.topics.dead_letters
        tps = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or ())]
        self._consumer.assign(tps)
        for tp, end in (await self._consumer.end_offsets(tps)).items():
            self._consumer.seek(tp, end)

    async def poll(self) -> int:
        assert self._consumer is not None
        fetched = await self._consumer.getmany(timeout_ms=50)
        self.count += sum(len(messages) for messages in fetched.values())
        return self.count

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
