"""The sink alone against a bare binary COPY and one-INSERT-per-event, same rows, same table."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from devtrail.bench.harness import Milestones, Timer, fresh_database, fresh_settings, say, wait_for
from devtrail.consumers.clean import CLEAN_ROWS, EVENT_COLUMNS, CleanRow, chunk_rows, encode_rows, event_to_row
from devtrail.producers import Workload
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from devtrail.topics import ensure_topics

ROWS_PER_MESSAGE = 1000


def clean_rows(count: int) -> list[bytes]:
    """``count`` realistic events as encoded clean rows, as the processor writes them."""
    return [orjson.dumps(event_to_row(e)) for e in Workload("bench-sink", seed=9).events(count)]


async def preload_clean(settings: StackSettings, encoded: list[bytes]) -> None:
    """Write encoded rows to the clean topic, 1,000 per message, spread over its partitions."""
    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 << 20)
    await kafka.start()
    try:
        topic, partitions = settings.topics.clean, settings.partitions
        bundles = chunk_rows(encoded, ROWS_PER_MESSAGE, 1 << 20)
        sends = [await kafka.send(topic, b, partition=i % partitions) for i, b in enumerate(bundles)]
        await asyncio.gather(*sends)
    finally:
        await kafka.stop()


async def bench_sink_stage(stack: Stack, settings: StackSettings, rows: int, workers: int) -> float:
    """Rows/s (10-90 %) of ``workers`` sink processes draining a pre-loaded clean topic.

    Progress is read from the offsets the sink stores with its rows (1,000 rows a message),
    not by counting rows, which would load the database being measured.
    """
    messages = -(-rows // ROWS_PER_MESSAGE)
    progress = Milestones(messages)
    await stack.start_workers(("sink",), settings.model_copy(update={"sink_workers": workers}))
    conn = await asyncpg.connect(settings.database_url)
    try:

        async def stored_all() -> bool:
            done = await conn.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = $1",
                settings.sink_group,
            )
            return progress.observe(int(done))

        await wait_for(stored_all, 60 + rows / 5000, "the sink to store every row", poll_s=0.02)
        stored = await conn.fetchval("SELECT count(*) FROM events")
        if stored != rows:
            raise AssertionError(f"the sink stored {stored} rows, expected {rows}")
    finally:
        await conn.close()
        await stack.stop_workers()
    return progress.steady_rate * ROWS_PER_MESSAGE


async def bench_raw_copy(conn: asyncpg.Connection, rows: list[tuple[Any, ...]], batch: int) -> tuple[float, float]:
    """(rows/s in ``batch``-row transactions, rows/s in one COPY) of pre-built rows."""
    await conn.execute("TRUNCATE events")
    timer = Timer()
    for start in range(0, len(rows), batch):
        async with conn.transaction():
            await conn.copy_records_to_table("events", records=rows[start : start + batch], columns=EVENT_COLUMNS)
    batched = len(rows) / timer.seconds
    await conn.execute("TRUNCATE events")
    timer = Timer()
    await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
    return batched, len(rows) / timer.seconds


async def bench_naive_insert(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> float:
    """Rows/s with one autocommitted INSERT per event, as the systems devtrail replaces do."""
    await conn.execute("TRUNCATE events")
    placeholders = ", ".join(f"${i}" for i in range(1, len(EVENT_COLUMNS) + 1))
    sql = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({placeholders})"
    statement = await conn.prepare(sql)
    timer = Timer()
    for row in rows:
        await statement.fetch(*row)
    return len(rows) / timer.seconds


async def bench_sink(stack: Stack, admin_url: str, events: int, naive_events: int) -> dict[str, object]:
    """The sink stage (one and two worker processes), raw COPY and naive INSERT: same rows, same table."""
    encoded = clean_rows(events)
    rates: dict[int, float] = {}
    for workers in (1, 2):
        settings = fresh_settings(stack.settings, await fresh_database(admin_url))
        await ensure_topics(settings, settings.replication_factor)
        await preload_clean(settings, encoded)
        rates[workers] = await bench_sink_stage(stack, settings, events, workers)
        say(f"sink: {events:,} rows at {rates[workers]:,.0f} rows/s with {workers} worker(s), 10-90 %")
    batch = settings.batch_max_events
    rows: list[tuple[Any, ...]] = [
        r for r in CLEAN_ROWS.decode("clean", 0, 0, encode_rows(encoded)) if isinstance(r, CleanRow)
    ]
    conn = await asyncpg.connect(settings.database_url)
    if not settings.db_synchronous_commit:
        await conn.execute("SET synchronous_commit TO off")  # the same session setting as the sink
    try:
        raw_batched, raw_single = await bench_raw_copy(conn, rows, batch)
        say(f"raw COPY: {raw_batched:,.0f} rows/s in {batch}-row transactions, {raw_single:,.0f} in one")
        await conn.execute("SET synchronous_commit TO on")  # as the systems devtrail replaces run
        naive = await bench_naive_insert(conn, rows[:naive_events])
        say(f"naive INSERT: {naive:,.0f} rows/s ({naive_events:,} rows, one autocommitted INSERT each)")
    finally:
        await conn.close()
    best = max(rates.values())
    return {
        "sink_rows_per_second": round(best),
        "sink_rows_per_second_one_worker": round(rates[1]),
        "sink_rows_per_second_two_workers": round(rates[2]),
        "raw_copy_rows_per_second": round(raw_batched),
        "raw_copy_single_transaction_rows_per_second": round(raw_single),
        "sink_vs_raw_copy": round(best / raw_batched, 3),
        "naive_insert_rows_per_second": round(naive),
        "sink_rows": events,
        "sink_batch_rows": batch,
    }
