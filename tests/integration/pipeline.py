"""Helpers for tests that run the whole pipeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer

from devtrail.bench.faults import aggregate_mismatches
from devtrail.consumers.clean import CLEAN_ROWS, CleanRow, encode_rows, event_to_row
from devtrail.settings import StackSettings


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.25)


async def counts(db: asyncpg.Connection) -> tuple[int, int, int]:
    """(rows in events, distinct event ids, sum of hourly counts)."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM events) AS rows, (SELECT count(DISTINCT event_id) FROM events) AS ids,"
        " (SELECT coalesce(sum(count), 0) FROM event_counts_hourly) AS aggregated"
    )
    return int(row["rows"]), int(row["ids"]), int(row["aggregated"])


async def aggregate_matches_events(db: asyncpg.Connection, analyst: bool = True) -> bool:
    """Whether every hourly count (and, with ``analyst``, every analyst aggregate) equals a
    GROUP BY over the stored events."""
    return await aggregate_mismatches(db, analyst) == 0


async def read_values(
    settings: StackSettings,
    topic: str,
    enough: Callable[[list[bytes]], bool],
    quiet_s: float = 0.0,
    timeout_s: float = 30,
) -> list[bytes]:
    """Message values from the start of ``topic``: until ``enough`` of them are there and
    nothing new came for ``quiet_s``, or ``timeout_s`` passed."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    values: list[bytes] = []
    last = time.monotonic()
    deadline = last + timeout_s
    try:
        while time.monotonic() < deadline and not (enough(values) and time.monotonic() - last >= quiet_s):
            batch = await consumer.getmany(timeout_ms=500)
            fresh = [m.value for msgs in batch.values() for m in msgs if m.value is not None]
            if fresh:
                values += fresh
                last = time.monotonic()
    finally:
        await consumer.stop()
    return values


async def read_topic(settings: StackSettings, topic: str, expected: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Read ``expected`` JSON messages from the start of ``topic``."""
    values = await read_values(settings, topic, lambda read: len(read) >= expected, timeout_s=timeout_s)
    return [orjson.loads(v) for v in values]


def clean(events: list[Any]) -> list[CleanRow]:
    """The events as the processor writes them to the clean topic, read back."""
    decoded = CLEAN_ROWS.decode("clean", 0, 0, encode_rows([orjson.dumps(event_to_row(e)) for e in events]))
    rows = [row for row in decoded if isinstance(row, CleanRow)]
    assert len(rows) == len(decoded)
    return rows


async def wait_until_applied(db: asyncpg.Connection, events: int, timeout_s: float = 180) -> None:
    """Wait until ``events`` events are stored and counted in ``event_counts_hourly`` (the
    writers apply every writer of a batch in one transaction: the projections too)."""

    async def applied() -> bool:
        stored = int(await db.fetchval("SELECT count(*) FROM events"))
        counted = int(await db.fetchval("SELECT coalesce(sum(count), 0) FROM event_counts_hourly"))
        return stored >= events and counted >= events

    await wait_for(applied, timeout_s, f"{events:,} story events stored and applied")


async def assert_story_matches(db: asyncpg.Connection, truth: Any, events: int, least_tasks: int) -> None:
    """Every event stored once, and every ``analytics`` view equal to the story's ``truth``."""
    from devtrail.story_check import check_stories

    assert int(await db.fetchval("SELECT count(*) FROM events")) == events
    check = await check_stories(db, truth)
    assert check.ok, "\n".join(check.problems[:40])
    assert check.checked["call attribution"] == len(truth.llm_calls) + len(truth.tool_calls)
    assert check.checked["task"] == len(truth.tasks) > least_tasks
