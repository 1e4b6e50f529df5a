"""Partitions of ``events`` as time goes on: created ahead of the date, rows moved out of the
default partition, retention dropping whole old partitions. The date is a parameter, so the
tests move the clock a year."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from devtrail.consumers.partitions import (
    add_months,
    create_month_partition,
    ensure_event_partitions,
    event_partitions,
    month_of,
    months_ahead_of,
    partition_name,
)
from devtrail.consumers.retention import maintain_event_partitions, maintain_events, plan_retention
from devtrail.consumers.sink import EventSink
from tests.factories import task_created
from tests.integration.pipeline import clean, wait_for

pytestmark = pytest.mark.integration

TODAY = datetime.now(UTC).date()
A_YEAR_ON = TODAY + timedelta(days=365)


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


async def write(conn: asyncpg.Connection, occurred: dict[str, datetime]) -> None:
    """Store one event per ``task_id: occurred_at`` as the sink does (one batch, one transaction)."""
    events = [task_created(task_id=task, occurred_at=when) for task, when in occurred.items()]
    rows = clean(events)
    async with conn.transaction():
        await EventSink().write(conn, rows)


async def placement(conn: asyncpg.Connection) -> dict[str, str]:
    """``task_id`` -> the partition its row is in."""
    rows = await conn.fetch("SELECT task_id, tableoid::regclass::text AS part FROM events")
    return {r["task_id"]: r["part"] for r in rows}


async def partition_names(conn: asyncpg.Connection) -> set[str]:
    return {p.name for p in await event_partitions(conn)}


async def test_a_year_on_partitions_exist_ahead_of_the_new_date(db: asyncpg.Connection) -> None:
    assert await ensure_event_partitions(db, months_ahead=3, today=A_YEAR_ON) == 4
    assert {partition_name(m) for m in months_ahead_of(A_YEAR_ON, 3)} <= await partition_names(db)
    three_months_on = add_months(month_of(A_YEAR_ON), 3)
    await write(db, {"then": at(A_YEAR_ON), "later": at(three_months_on)})
    assert await placement(db) == {"then": partition_name(A_YEAR_ON), "later": partition_name(three_months_on)}
    assert await ensure_event_partitions(db, months_ahead=3, today=A_YEAR_ON) == 0


async def test_a_partition_is_created_although_the_default_one_holds_rows_of_its_month(
    db: asyncpg.Connection,
) -> None:
    five_months_on = add_months(month_of(TODAY), 5)
    await write(db, {"early": at(five_months_on)})  # beyond the partitions: lands in the default one
    assert await placement(db) == {"early": "events_default"}
    assert await ensure_event_partitions(db, months_ahead=6, today=TODAY) >= 1  # PARTITION OF would fail here
    assert await placement(db) == {"early": partition_name(five_months_on)}


async def test_rows_in_the_default_partition_move_into_partitions_of_their_months(db: asyncpg.Connection) -> None:
    a_year_ago = TODAY - timedelta(days=365)
    occurred = {
        "now": at(TODAY),
        "year-ago-1": at(a_year_ago),
        "year-ago-2": at(a_year_ago) + timedelta(hours=1),
        "year-on": at(A_YEAR_ON),
        "first-instant": datetime(2030, 7, 1, tzinfo=UTC),
    }
    await write(db, occurred)
    assert list((await placement(db)).values()).count("events_default") == 4

    report = await maintain_events(db, TODAY, months_ahead=3, retention_days=None)

    moved = {c.name: c.rows_moved for c in report.created if c.rows_moved}
    assert moved == {partition_name(a_year_ago): 2, partition_name(A_YEAR_ON): 1, "events_2030_07": 1}
    assert await placement(db) == {task: partition_name(when.date()) for task, when in occurred.items()}
    assert await db.fetchval("SELECT count(*) FROM events_default") == 0
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM events") == len(occurred)
    assert not await db.fetchval("SELECT count(*) FROM pg_constraint WHERE conname LIKE 'events%range'")
    partitions_with_key = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events_pkey'::regclass"
    assert await db.fetchval(partitions_with_key) == len(await partition_names(db)) + 1  # + the default one
    assert (await maintain_events(db, TODAY, months_ahead=3, retention_days=None)).created == []


async def test_retention_a_year_on_drops_whole_old_partitions_with_their_rows(db: asyncpg.Connection) -> None:
    half_a_year_on = TODAY + timedelta(days=200)
    await write(
        db,
        {"now": at(TODAY), "long-ago": at(TODAY - timedelta(days=400)), "later": at(half_a_year_on)},
    )
    before = await partition_names(db)

    report = await maintain_events(db, A_YEAR_ON, months_ahead=3, retention_days=180)

    assert report.cutoff == datetime.combine(A_YEAR_ON - timedelta(days=180), datetime.min.time(), tzinfo=UTC)
    assert await placement(db) == {"later": partition_name(half_a_year_on)}
    assert {p.upper for p in await event_partitions(db) if p.upper and p.upper <= report.cutoff} == set()
    dropped = {p.name for p in report.dropped}
    assert {partition_name(TODAY), partition_name(TODAY - timedelta(days=400))} <= dropped
    after = await partition_names(db)
    assert before - after <= dropped
    assert not dropped & after
    assert {partition_name(m) for m in months_ahead_of(A_YEAR_ON, 3)} <= await partition_names(db)
    assert await db.fetchval("SELECT count(*) FROM events_default") == 0


async def test_without_retention_nothing_is_dropped_however_old(db: asyncpg.Connection) -> None:
    await write(db, {"now": at(TODAY), "old": at(TODAY - timedelta(days=3000))})
    for retention_days in (None, 0):
        report = await maintain_events(db, A_YEAR_ON + timedelta(days=3650), 3, retention_days)
        assert report.dropped == []
    assert set(await placement(db)) == {"now", "old"}


async def test_a_dry_run_names_what_would_be_dropped_and_changes_nothing(db: asyncpg.Connection) -> None:
    await write(db, {"now": at(TODAY), "long-ago": datetime(2005, 3, 9, tzinfo=UTC)})
    before = (await partition_names(db), await placement(db))

    plan = await plan_retention(db, A_YEAR_ON, 180)

    assert (await partition_names(db), await placement(db)) == before
    assert plan.default_rows_to_drop == {date(2005, 3, 1): 1}
    done = await maintain_events(db, A_YEAR_ON, 3, 180)
    assert {p.name for p in done.dropped} == {p.name for p in plan.dropped} | {"events_2005_03"}


async def test_upkeep_while_the_sink_writes_loses_and_doubles_no_row(db: asyncpg.Connection, database_url: str) -> None:
    months = [date(2005 + i // 12, i % 12 + 1, 1) for i in range(24)]  # no partition: rows go to the default one
    rng = random.Random(7)
    batches = [
        {f"b{b}-{i}": at(rng.choice(months)) + timedelta(days=rng.randrange(27)) for i in range(50)} for b in range(40)
    ]
    done = asyncio.Event()

    async def sink() -> None:
        writer = await asyncpg.connect(database_url)
        try:
            for batch in batches:
                await write(writer, batch)
        finally:
            done.set()
            await writer.close()

    async def upkeep() -> int:
        passes = 0
        while not done.is_set():
            await ensure_event_partitions(db, months_ahead=1, today=TODAY)
            passes += 1
        return passes

    _, passes = await asyncio.gather(sink(), upkeep())
    await ensure_event_partitions(db, months_ahead=1, today=TODAY)

    assert passes > 1
    expected = {task: partition_name(when.date()) for batch in batches for task, when in batch.items()}
    assert await placement(db) == expected
    assert await db.fetchval("SELECT count(*) FROM events") == len(expected) == 2000


async def test_two_upkeep_passes_at_once_create_each_partition_once(db: asyncpg.Connection, database_url: str) -> None:
    occurred = {f"e{i}": datetime(2010, 1 + i % 12, 3, tzinfo=UTC) for i in range(36)}
    await write(db, occurred)
    other = await asyncpg.connect(database_url)
    try:
        reports = await asyncio.gather(maintain_events(db, TODAY, 3, None), maintain_events(other, TODAY, 3, None))
    finally:
        await other.close()
    created = [c for report in reports for c in report.created if c.month.year == 2010]
    assert sorted(c.month.month for c in created) == list(range(1, 13))
    assert sum(c.rows_moved for c in created) == 36
    assert await placement(db) == {task: partition_name(when.date()) for task, when in occurred.items()}


async def test_an_existing_partition_is_left_alone(db: asyncpg.Connection) -> None:
    assert await create_month_partition(db, TODAY) is None  # the migration created it


async def test_the_sink_upkeep_loop_applies_retention_until_stopped(db: asyncpg.Connection, database_url: str) -> None:
    await write(db, {"now": at(TODAY), "old": datetime(2004, 5, 6, tzinfo=UTC)})
    stop = asyncio.Event()
    loop = asyncio.create_task(maintain_event_partitions(database_url, 3, 0.05, stop, retention_days=365))
    try:

        async def old_row_dropped() -> bool:
            return "old" not in await placement(db)

        await wait_for(old_row_dropped, 30, "the loop to drop the old row's partition")
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
    assert await placement(db) == {"now": partition_name(TODAY)}
    assert "events_2004_05" not in await partition_names(db)
