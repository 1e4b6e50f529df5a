"""Retention of ``events``, and the sink's upkeep of its partitions.

Retention drops whole partitions whose every row is older than the cut-off (their upper
bound is at or before it); it never deletes rows one by one. The partition holding the
cut-off is kept whole, so rows live up to about a month longer than the retention age.
Rows of ``events_default`` are first moved into partitions of their months
(``devtrail.consumers.partitions``), so old rows that arrived late are dropped with their month's
partition too; the default partition never ages rows of its own.

One upkeep pass (``maintain_events``) does both, in this order; the sink runs a pass every
``DEVTRAIL_PARTITIONS_CHECK_INTERVAL_S`` and ``devtrail db retention`` runs one on demand.

If ``events`` is a TimescaleDB hypertable (the extension is not available where devtrail
is developed, so that path is untested), TimescaleDB creates its chunks itself and
retention is its ``drop_chunks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from devtrail.consumers.errors import is_retriable_db_error
from devtrail.consumers.partitions import (
    CreatedPartition,
    Partition,
    create_month_partitions,
    database_today,
    default_partition_months,
    drop_partition,
    event_partitions,
    month_range,
    months_to_create,
)

log = logging.getLogger(__name__)


@dataclass
class MaintenanceReport:
    """What one upkeep pass did, or would do (``dry_run``).

    Attributes:
        cutoff: rows older than this may be dropped; ``None`` when retention is off.
        created: partitions created, with the rows moved into them from the default one.
        dropped: partitions (or TimescaleDB chunks, without bounds) dropped with their rows.
        default_rows_to_drop: dry run only: rows of the default partition, per month, that
            would be moved into a new partition and dropped with it.
        dry_run: whether nothing was changed.
    """

    cutoff: datetime | None
    created: list[CreatedPartition] = field(default_factory=list)
    dropped: list[Partition] = field(default_factory=list)
    default_rows_to_drop: dict[date, int] = field(default_factory=dict)
    dry_run: bool = False

    def lines(self) -> list[str]:
        """The report as lines of text for people."""
        lines = [f"created {c.name} (moved {_rows(c.rows_moved)} from events_default)" for c in self.created]
        if self.cutoff is None:
            return [*lines, "retention is off: nothing dropped"]
        verb = "would drop" if self.dry_run else "dropped"
        lines.append(f"retention cut-off: {self.cutoff:%Y-%m-%d %H:%M} UTC")
        lines += [f"{verb} {_describe(p)}" for p in self.dropped]
        lines += [
            f"{verb} {_rows(rows)} of events_default from {month:%Y-%m} (moved into a partition of their month first)"
            for month, rows in self.default_rows_to_drop.items()
        ]
        if not self.dropped and not self.default_rows_to_drop:
            lines.append("nothing is older than the cut-off")
        return lines


def retention_cutoff(today: date, older_than_days: int | None) -> datetime | None:
    """Midnight UTC ``older_than_days`` days before ``today``; ``None`` (keep forever) for 0 or ``None``."""
    if not older_than_days:
        return None
    return datetime.combine(today - timedelta(days=older_than_days), time(), tzinfo=UTC)


def expired_partitions(partitions: list[Partition], cutoff: datetime) -> list[Partition]:
    """The partitions whose every row is older than ``cutoff``."""
    return [p for p in partitions if p.upper is not None and p.upper <= cutoff]


async def maintain_events(
    conn: asyncpg.Connection, today: date, months_ahead: int, retention_days: int | None
) -> MaintenanceReport:
    """One upkeep pass: create the partitions needed, then drop those older than the retention.

    Partitions are created ahead of ``today`` and for the months of the rows in the default
    partition (the rows are moved into them), so old rows there are dropped too.

    Args:
        conn: a connection outside any transaction.
        today: the day partitions ahead and the retention cut-off count from.
        months_ahead: months after ``today``'s that must have a partition.
        retention_days: drop what is older than this many days; ``None`` or 0: keep everything.

    Raises:
        asyncpg.LockNotAvailableError: ``events`` was too busy; what was done so far stays done.
    """
    cutoff = retention_cutoff(today, retention_days)
    if await events_is_hypertable(conn):
        return MaintenanceReport(cutoff, dropped=await _drop_chunks(conn, cutoff, dry_run=False) if cutoff else [])
    created = await create_month_partitions(conn, await months_to_create(conn, today, months_ahead))
    dropped = await drop_expired_partitions(conn, cutoff) if cutoff else []
    return MaintenanceReport(cutoff, created, dropped)


async def drop_expired_partitions(conn: asyncpg.Connection, cutoff: datetime) -> list[Partition]:
    """Drop the partitions whose every row is older than ``cutoff`` (one transaction each); return them."""
    expired = expired_partitions(await event_partitions(conn), cutoff)
    return [partition for partition in expired if await drop_partition(conn, partition)]


async def plan_retention(conn: asyncpg.Connection, today: date, retention_days: int) -> MaintenanceReport:
    """What ``maintain_events`` would drop, changing nothing (a dry run)."""
    cutoff = retention_cutoff(today, retention_days)
    if cutoff is None:
        return MaintenanceReport(None, dry_run=True)
    if await events_is_hypertable(conn):
        return MaintenanceReport(cutoff, dropped=await _drop_chunks(conn, cutoff, dry_run=True), dry_run=True)
    default_rows = {m: n for m, n in (await default_partition_months(conn)).items() if month_range(m)[1] <= cutoff}
    expired = expired_partitions(await event_partitions(conn), cutoff)
    return MaintenanceReport(cutoff, dropped=expired, default_rows_to_drop=default_rows, dry_run=True)


async def run_retention(database_url: str, months_ahead: int, retention_days: int, dry_run: bool) -> MaintenanceReport:
    """One upkeep pass (or its plan) on its own connection, dated by the database's clock."""
    conn = await asyncpg.connect(database_url)
    try:
        today = await database_today(conn)
        if dry_run:
            return await plan_retention(conn, today, retention_days)
        return await maintain_events(conn, today, months_ahead, retention_days)
    finally:
        await conn.close()


async def maintain_event_partitions(
    database_url: str, months_ahead: int, interval_s: float, stop: asyncio.Event, retention_days: int | None = None
) -> None:
    """Run an upkeep pass now and every ``interval_s`` until ``stop`` is set (the sink runs it).

    A failure is logged and tried again at the next interval: meanwhile rows keep landing
    in the default partition and old partitions stay; nothing fails.
    """
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(database_url)
            try:
                report = await maintain_events(conn, await database_today(conn), months_ahead, retention_days)
            finally:
                await conn.close()
            if report.created or report.dropped:
                log.info("events upkeep: %s", "; ".join(report.lines()))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            busy = isinstance(exc, asyncpg.LockNotAvailableError) or is_retriable_db_error(exc)
            log.log(
                logging.WARNING if busy else logging.ERROR,
                "events upkeep failed (%s); next try in %.0fs",
                exc,
                interval_s,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def _describe(partition: Partition) -> str:
    if partition.lower is None and partition.upper is None:
        return partition.name
    lower = f"{partition.lower:%Y-%m-%d}" if partition.lower else "MINVALUE"
    upper = f"{partition.upper:%Y-%m-%d}" if partition.upper else "MAXVALUE"
    size = partition.size_bytes
    return f"{partition.name} [{lower}, {upper}) " + (
        f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"
    )


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


# --- TimescaleDB: used only when ``events`` is a hypertable. Untested here (no TimescaleDB). ---


async def events_is_hypertable(conn: asyncpg.Connection) -> bool:
    """Whether the ``timescaledb`` extension is installed and ``events`` is one of its hypertables."""
    if not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')"):
        return False
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT FROM timescaledb_information.hypertables WHERE hypertable_name = 'events')"
        )
    )


async def _drop_chunks(conn: asyncpg.Connection, cutoff: datetime, dry_run: bool) -> list[Partition]:
    """Drop (or, dry, list) the chunks of ``events`` whose every row is older than ``cutoff``."""
    function = "show_chunks" if dry_run else "drop_chunks"
    rows = await conn.fetch(f"SELECT {function}('events', older_than => $1::timestamptz)::text AS chunk", cutoff)
    return [Partition(r["chunk"], None, None) for r in rows]
