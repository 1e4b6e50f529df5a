"""The sink alone against a bare binary COPY and one-INSERT-per-event, same rows, same table."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from bench.harness import Timer, fresh_database, fresh_settings, say
from consumers.checkpoint import CheckpointedConsumer
from consumers.clean import EVENT_COLUMNS, Row, chunk_rows, decode_rows, encode_rows, event_to_row
from consumers.sink import EventSink, copy_record
from devtrail.settings import StackSettings
from devtrail.topics import ensure_topics
from producers import Workload


def clean_rows(count: int) -> list[bytes]:
    """``count`` realistic events as encoded clean rows, as the processor writes them."""
    return [orjson.dumps(event_to_row(e)) for e in Workload("bench-sink", seed=9).events(count)]


class _TimedSink(EventSink):
    """The real sink, noting when its first batch started and how many rows it wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.first_write: float | None = None
        self.rows = 0

    async def write(self, conn: asyncpg.Connection, rows: list[Row]) -> int:
        if self.first_write is None:
            self.first_write = time.perf_counter()
        written = await super().write(conn, rows)
        self.rows += written
        return written


async def bench_sink_stage(settings: StackSettings, encoded: list[bytes]) -> float:
    """Rows/s of the sink consuming a pre-loaded clean topic (offsets stored with the rows)."""
    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 << 20)
    await kafka.start()
    try:
        bundles = chunk_rows(encoded, 1000, 512 * 1024)
        sends = [
            await kafka.send(settings.topics.clean, b, partition=i % settings.partitions) for i, b in enumerate(bundles)
        ]
        await asyncio.gather(*sends)
    finally:
        await kafka.stop()
    sink = _TimedSink()
    consumer = CheckpointedConsumer(settings, sink, settings.sink_group, settings.topics.clean)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    while sink.rows < len(encoded):
        await asyncio.sleep(0.01)
        if running.done():
            running.result()
    finished = time.perf_counter()
    stop.set()
    await running
    assert sink.first_write is not None
    return len(encoded) / (finished - sink.first_write)


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


async def bench_sink(base: StackSettings, admin_url: str, events: int, naive_events: int) -> dict[str, object]:
    """Run the three measurements on the same rows and the same table."""
    settings = fresh_settings(base, await fresh_database(admin_url))
    await ensure_topics(settings, settings.replication_factor)
    encoded = clean_rows(events)
    sink_rate = await bench_sink_stage(settings, encoded)
    batch = settings.batch_max_events
    say(f"sink: {events:,} rows from the clean topic at {sink_rate:,.0f} rows/s (batches of {batch})")
    rows = [copy_record(row) for row in decode_rows(encode_rows(encoded))]
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
    return {
        "sink_rows_per_second": round(sink_rate),
        "raw_copy_rows_per_second": round(raw_batched),
        "raw_copy_single_transaction_rows_per_second": round(raw_single),
        "sink_vs_raw_copy": round(sink_rate / raw_batched, 3),
        "naive_insert_rows_per_second": round(naive),
        "sink_rows": events,
        "sink_batch_rows": settings.batch_max_events,
    }
