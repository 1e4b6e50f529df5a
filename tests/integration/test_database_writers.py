"""The sink and the hourly counts against a real PostgreSQL: idempotent per event_id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from devtrail.consumers.aggregator import HourlyEventCounts, rebuild_hourly_counts
from devtrail.consumers.clean import CleanRow
from devtrail.consumers.offsets import load_offsets, store_offsets
from devtrail.consumers.sink import EventSink
from tests.factories import llm_called, task_created
from tests.integration.pipeline import aggregate_matches_events, clean

pytestmark = pytest.mark.integration


async def write(conn: asyncpg.Connection, writer: Any, events: list[CleanRow]) -> int:
    async with conn.transaction():
        return int(await writer.write(conn, events))


async def test_sink_stores_each_event_once_across_batches(db: asyncpg.Connection) -> None:
    events = clean([task_created(task_id=f"T{i}") for i in range(50)] + [llm_called()])
    sink = EventSink()
    assert await write(db, sink, events[:30] + events[:5]) == 30  # duplicates inside a batch
    assert await write(db, sink, events) == 21  # the rest; the first 30 fall back to the merge
    assert await write(db, sink, events) == 0
    assert await db.fetchval("SELECT count(*) FROM events") == 51
    row = await db.fetchrow("SELECT * FROM events WHERE event_type = 'llm.called'")
    assert orjson.loads(row["payload"])["input_tokens"] == 10
    assert row["session_id"] == "S-1"


async def test_hourly_counts_count_each_event_once(db: asyncpg.Connection) -> None:
    events = clean([task_created(task_id=f"T{i}") for i in range(20)])
    counts = HourlyEventCounts()
    assert await write(db, counts, events[:10]) == 10
    assert await write(db, counts, events) == 10  # a replay of 10 plus 10 new
    assert await write(db, counts, events[:3] + events[:3]) == 0
    assert await db.fetchval("SELECT sum(count) FROM event_counts_hourly") == 20
    row = await db.fetchrow("SELECT * FROM event_counts_hourly")
    assert (row["project_id"], row["agent_id"], row["event_type"]) == ("P", "A", "task.created")


async def test_a_rolled_back_batch_leaves_no_trace(db: asyncpg.Connection) -> None:
    events = clean([task_created(task_id=f"T{i}") for i in range(5)])
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await HourlyEventCounts().write(db, events)
            await EventSink().write(db, events)
            raise RuntimeError("crash before commit")
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    assert await db.fetchval("SELECT count(*) FROM aggregates.event_count_claims") == 0
    assert await write(db, HourlyEventCounts(), events) == 5


async def test_offsets_never_move_backwards(db: asyncpg.Connection) -> None:
    from aiokafka import TopicPartition

    tp = TopicPartition("clean", 0)
    await store_offsets(db, "g", {tp: 10})
    await store_offsets(db, "g", {tp: 7})
    assert await load_offsets(db, "g", ["clean"]) == {tp: 10}


async def test_events_outside_monthly_partitions_land_in_the_default_one(db: asyncpg.Connection) -> None:
    old = clean([task_created(occurred_at="2001-02-03T04:05:06Z")])
    assert await write(db, EventSink(), old) == 1
    assert await db.fetchval("SELECT count(*) FROM events_default") == 1


async def test_migrations_downgrade_to_nothing_and_back(database_url: str, db: asyncpg.Connection) -> None:
    import asyncio

    from devtrail import migrate

    await asyncio.to_thread(migrate.downgrade, database_url, "base")
    assert await db.fetchval("SELECT to_regclass('events')") is None
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await db.fetchval("SELECT to_regclass('events')::text") == "events"


async def test_partitions_are_created_ahead_and_idempotently(db: asyncpg.Connection) -> None:
    from devtrail.consumers.partitions import ensure_event_partitions

    await ensure_event_partitions(db, months_ahead=14)
    assert await ensure_event_partitions(db, months_ahead=14) == 0
    names = await db.fetch(
        "SELECT inhrelid::regclass::text AS name FROM pg_inherits WHERE inhparent = 'events'::regclass"
    )
    assert len([n for n in names if n["name"] != "events_default"]) >= 15


async def test_hourly_counts_rebuilt_from_events_after_the_broker_lost_the_clean_topic(
    db: asyncpg.Connection,
) -> None:
    """What a killed embedded broker leaves: events stored but never counted, events counted
    but never stored. The rebuild makes the counts equal a GROUP BY over ``events``, and a
    replay afterwards counts nothing twice."""
    # One hour for all (the call's default time, a minute ago, was in the hour before in the first minute of an hour).
    at = datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
    events = clean([task_created(task_id=f"T{i}", occurred_at=at) for i in range(30)] + [llm_called(occurred_at=at)])
    counts = HourlyEventCounts()
    await write(db, EventSink(), events[:20])
    await write(db, counts, events[10:31])  # 10..19 both; 20..30 counted only; 0..9 stored only
    assert await rebuild_hourly_counts(db) == 20
    assert await db.fetchval("SELECT sum(count) FROM event_counts_hourly") == 20
    assert await aggregate_matches_events(db, analyst=False)  # only event_counts_hourly was written
    assert await write(db, counts, events[:20]) == 0
    assert await write(db, counts, events[20:]) == 11  # re-sent and stored now: counted once


async def test_event_count_claims_are_bounded_and_the_upgrade_keeps_recent_ones(
    db: asyncpg.Connection, database_url: str
) -> None:
    """Migration 0017 moves ``aggregate_applied``'s claims: an id made in the last days into its
    day's partition (where the writer looks, so a copy arriving now is not counted again), the
    rest into the late claims; the writer then drops the partitions past its window. The
    downgrade puts every claim back."""
    import asyncio
    import time
    import uuid

    from devtrail import migrate
    from devtrail.schemas.ids import uuid7_from

    now_ms = time.time_ns() // 1_000_000
    recent, old, not_v7 = uuid7_from(now_ms, 1), uuid7_from(now_ms - 60 * 86_400_000, 2), uuid.uuid4()
    await asyncio.to_thread(migrate.downgrade, database_url, "0016")
    await db.executemany(
        "INSERT INTO aggregate_applied (aggregate, event_id) VALUES ('event_counts_hourly', $1)",
        [(recent,), (old,), (not_v7,)],
    )
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert await db.fetchval("SELECT to_regclass('aggregate_applied')") is None
    assert await db.fetchval("SELECT array_agg(event_id) FROM aggregates.event_count_claims") == [recent]
    late = await db.fetchval("SELECT array_agg(event_id ORDER BY event_id) FROM aggregates.event_count_claims_late")
    assert sorted(late) == sorted([old, not_v7])
    partitions = await db.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'aggregates.event_count_claims'::regclass"
    )
    assert partitions == 38  # 35 days back, today, 2 ahead

    copy = clean([task_created(task_id="T-copy")])[0]._replace(event_id=str(recent))
    fresh = clean([task_created(task_id="T-new")])
    counts = HourlyEventCounts(dedup_days=7)
    assert await write(db, counts, [copy, *fresh]) == 1  # the copy was counted before the upgrade
    partitions = await db.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'aggregates.event_count_claims'::regclass"
    )
    assert partitions == 7 + 1 + 2 + 1  # the window, today, 2 ahead, and a day of grace

    await asyncio.to_thread(migrate.downgrade, database_url, "0016")
    back = await db.fetchval("SELECT array_agg(event_id::text) FROM aggregate_applied")
    assert set(back) == {str(recent), str(old), str(not_v7), fresh[0].event_id}
    await asyncio.to_thread(migrate.upgrade, database_url)
