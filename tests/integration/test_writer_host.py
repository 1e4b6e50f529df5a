"""The writer host against real PostgreSQL and a real broker: writers together in one savepoint,
each in its own after a refusal, refusals isolated per writer, a bug in a writer stopping the
consumer loudly."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from devtrail.consumers.checkpoint import CheckpointedConsumer, WriterHost
from devtrail.consumers.clean import CLEAN_ROWS, CleanRow, encode_rows, event_to_row
from devtrail.consumers.offsets import load_offsets
from devtrail.consumers.sink import EventSink
from devtrail.settings import StackSettings
from devtrail.topics import ensure_topics
from tests.factories import task_created
from tests.integration.pipeline import clean

pytestmark = pytest.mark.integration


class Picky:
    """Stores task ids in a table whose CHECK refuses ``T3``."""

    name = "picky"

    async def write(self, conn: asyncpg.Connection, rows: list[CleanRow]) -> int:
        status: str = await conn.execute(
            "INSERT INTO picky SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", [r.task_id for r in rows]
        )
        return int(status.split()[-1])


class Buggy:
    """A writer with a bug: it reads a payload field that ``T2``'s event does not have."""

    name = "buggy"

    async def write(self, conn: asyncpg.Connection, rows: list[CleanRow]) -> int:
        for row in rows:
            if row.task_id == "T2":
                _ = orjson.loads(row.payload)["no_such_field"]
        return len(rows)


class PreparingPicky(Picky):
    """``Picky`` that prepares its batches beforehand (``PreparingWriter``); counts what it was given."""

    name = "preparing_picky"

    def __init__(self) -> None:
        self.applied_prepared = 0

    def prepare(self, rows: list[CleanRow]) -> list[str | None]:
        return [r.task_id for r in rows]

    async def apply(self, conn: asyncpg.Connection, prepared: list[str | None]) -> int:
        self.applied_prepared += 1
        status: str = await conn.execute("INSERT INTO picky SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", prepared)
        return int(status.split()[-1])


class BuggyPreparer(Buggy):
    """``Buggy`` whose ``prepare`` has the same bug."""

    name = "buggy_preparer"

    def prepare(self, rows: list[CleanRow]) -> int:
        for row in rows:
            if row.task_id == "T2":
                _ = orjson.loads(row.payload)["no_such_field"]
        return len(rows)

    async def apply(self, conn: asyncpg.Connection, prepared: int) -> int:
        return prepared


async def test_a_prepared_batch_is_applied_and_a_refusal_in_it_is_still_isolated(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE picky (task_id text PRIMARY KEY CHECK (task_id <> 'T3'))")
    writer = PreparingPicky()
    host = WriterHost("writers", CLEAN_ROWS, [writer, EventSink()])
    good = clean([task_created(task_id=f"T{i}") for i in (0, 1, 2)])
    prepared = host.prepare(good)
    assert set(prepared) == {"preparing_picky"}  # the sink does not prepare
    async with db.transaction():
        applied = await host.apply(db, good, prepared)
    assert (applied.by_writer, writer.applied_prepared) == ({"preparing_picky": 3, "sink": 3}, 1)

    rows = clean([task_created(task_id=f"T{i}") for i in range(6)])
    async with db.transaction():
        applied = await host.apply(db, rows, host.prepare(rows))
    assert applied.by_writer == {"preparing_picky": 2, "sink": 6}  # new events; T0-T2 already in picky
    assert [(r.position, r.writer) for r in applied.refusals] == [(3, "preparing_picky")]
    assert sorted(r["task_id"] for r in await db.fetch("SELECT task_id FROM picky")) == [
        "T0", "T1", "T2", "T4", "T5"
    ]  # fmt: skip


async def test_a_bug_in_prepare_raises_when_the_batch_is_written(db: asyncpg.Connection) -> None:
    rows = clean([task_created(task_id=f"T{i}") for i in range(4)])
    host = WriterHost("writers", CLEAN_ROWS, [EventSink(), BuggyPreparer()])
    prepared = host.prepare(rows)  # the preparing thread never raises: the writer is left out
    assert prepared == {}
    with pytest.raises(KeyError, match="no_such_field"):
        async with db.transaction():
            await host.apply(db, rows, prepared)
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_a_refused_row_is_refused_for_its_writer_only(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE picky (task_id text PRIMARY KEY CHECK (task_id <> 'T3'))")
    rows = clean([task_created(task_id=f"T{i}") for i in range(6)])
    host = WriterHost("writers", CLEAN_ROWS, [Picky(), EventSink()])
    async with db.transaction():
        applied = await host.apply(db, rows)
    assert applied.by_writer == {"picky": 5, "sink": 6}
    assert [(r.position, r.writer) for r in applied.refusals] == [(3, "picky")]
    assert "CheckViolationError" in applied.refusals[0].reason
    assert await db.fetchval("SELECT count(*) FROM events") == 6
    assert sorted(r["task_id"] for r in await db.fetch("SELECT task_id FROM picky")) == [
        "T0", "T1", "T2", "T4", "T5"
    ]  # fmt: skip
    async with db.transaction():  # idempotent: a replay applies nothing
        again = await host.apply(db, rows)
    assert again.by_writer == {"picky": 0, "sink": 0}


async def test_writers_before_a_refusal_apply_the_batch_once(db: asyncpg.Connection) -> None:
    """The writers run together in one savepoint first; a refusal rolls back those before it
    too, and each writer then runs alone: the earlier ones must count the batch once, not 0."""
    await db.execute("CREATE TABLE picky (task_id text PRIMARY KEY CHECK (task_id <> 'T3'))")
    picky = PreparingPicky()
    host = WriterHost("writers", CLEAN_ROWS, [EventSink(), picky, Picky()])
    rows = clean([task_created(task_id=f"T{i}") for i in range(6)])
    async with db.transaction():
        applied = await host.apply(db, rows, host.prepare(rows))
    assert applied.by_writer == {"sink": 6, "preparing_picky": 5, "picky": 0}
    assert [(r.position, r.writer) for r in applied.refusals] == [(3, "preparing_picky"), (3, "picky")]
    assert await db.fetchval("SELECT count(*) FROM events") == 6
    assert await db.fetchval("SELECT count(*) FROM picky") == 5


async def test_a_bug_in_a_writer_raises_and_leaves_nothing(db: asyncpg.Connection) -> None:
    rows = clean([task_created(task_id=f"T{i}") for i in range(4)])
    host = WriterHost("writers", CLEAN_ROWS, [EventSink(), Buggy()])
    with pytest.raises(KeyError, match="no_such_field"):
        async with db.transaction():
            await host.apply(db, rows)
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def publish_clean_tasks(s: StackSettings, task_ids: list[str], partitions: int) -> None:
    """One clean message per ``task.created`` of ``task_ids``, spread over the first ``partitions``."""
    await ensure_topics(s)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers)
    await producer.start()
    try:
        for i, task_id in enumerate(task_ids):
            row = orjson.dumps(event_to_row(task_created(task_id=task_id)))
            await producer.send_and_wait(s.topics.clean, encode_rows([row]), partition=i % partitions)
    finally:
        await producer.stop()


async def test_the_consumer_stops_loudly_on_a_bug_and_does_not_commit_past_it(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    s = stack_settings.model_copy(update={"batch_max_events": 1, "batch_max_wait_ms": 20})
    await publish_clean_tasks(s, [f"T{i}" for i in range(4)], partitions=1)
    consumer = CheckpointedConsumer(
        s, WriterHost("writers", CLEAN_ROWS, [EventSink(), Buggy()]), "g-bug", s.topics.clean
    )
    with pytest.raises(KeyError, match="no_such_field"):
        await asyncio.wait_for(consumer.run(asyncio.Event()), 60)
    stored = await load_offsets(db, "g-bug", [s.topics.clean])
    assert max(stored.values(), default=0) <= 2  # T0 and T1 at most; never past T2
    assert await db.fetchval("SELECT count(*) FROM events WHERE task_id = 'T2'") == 0


async def test_a_caught_up_batch_is_written_without_waiting_for_the_longest_wait(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    """``batch_caught_up_wait_ms``: once everything there is has been read, a batch is written
    without waiting for ``batch_max_wait_ms`` (a minute here, longer than the test may take)."""
    s = stack_settings.model_copy(update={"batch_max_wait_ms": 60_000, "batch_caught_up_wait_ms": 50})
    await publish_clean_tasks(s, [f"C{i}" for i in range(3)], partitions=2)
    consumer = CheckpointedConsumer(s, WriterHost("sink", CLEAN_ROWS, [EventSink()]), "g-caught-up", s.topics.clean)
    running = asyncio.create_task(consumer.run(asyncio.Event()))
    try:
        for _ in range(300):
            if await db.fetchval("SELECT count(*) FROM events WHERE task_id LIKE 'C%'") == 3:
                break
            await asyncio.sleep(0.1)
        assert await db.fetchval("SELECT count(*) FROM events WHERE task_id LIKE 'C%'") == 3
        stored = await load_offsets(db, "g-caught-up", [s.topics.clean])
        assert sum(stored.values()) == 3
    finally:
        running.cancel()  # a graceful stop would wait out the minute-long fetch
        with contextlib.suppress(asyncio.CancelledError):
            await running
