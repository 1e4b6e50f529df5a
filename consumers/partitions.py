"""Monthly partitions of ``events``: which exist, creating one, dropping one.

A month's partition is created for the months ahead of a given day and for every month
that has rows in ``events_default`` (events that arrived late, early, or while no
partition covered them). PostgreSQL refuses ``CREATE TABLE ... PARTITION OF`` while the
default partition holds rows of the new range, so a partition is built as a standalone
table, the default partition's rows of its month are moved into it, and it is attached;
all in one transaction, so no row is lost or doubled.

Every change is one short transaction that locks ``events`` before any partition, the
order in which the sink's inserts lock them, so the two cannot deadlock; it waits at most
``LOCK_TIMEOUT`` for the locks and then fails (``asyncpg.LockNotAvailableError``) rather
than hold the sink back, and a later pass tries again. Partition bounds are UTC months.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg

PARENT = "events"
DEFAULT_PARTITION = "events_default"
#: How long a change waits for its locks on ``events`` before giving up.
LOCK_TIMEOUT = "3s"

_PARTITIONS = r"""
SELECT c.oid::regclass::text AS name,
       substring(b.bound FROM $$FROM \('([^']+)'\)$$)::timestamptz AS lower,
       substring(b.bound FROM $$TO \('([^']+)'\)$$)::timestamptz AS upper,
       pg_total_relation_size(c.oid) AS size_bytes
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL pg_get_expr(c.relpartbound, c.oid) AS b(bound)
WHERE i.inhparent = 'events'::regclass AND b.bound <> 'DEFAULT'
ORDER BY lower NULLS FIRST
"""
_DEFAULT_MONTHS = """
SELECT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month, count(*) AS rows
FROM events_default GROUP BY 1 ORDER BY 1
"""
_MOVE = """
WITH moved AS (
    DELETE FROM events_default WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *
)
INSERT INTO {table} SELECT * FROM moved
"""


@dataclass(frozen=True)
class Partition:
    """A partition of ``events`` (never the default one).

    Attributes:
        name: its name as SQL takes it (quoted and schema-qualified when needed).
        lower: the first instant it holds; ``None`` for MINVALUE.
        upper: the first instant it no longer holds; ``None`` for MAXVALUE.
        size_bytes: its size on disk, indexes and TOAST included.
    """

    name: str
    lower: datetime | None
    upper: datetime | None
    size_bytes: int = 0

    def overlaps(self, lower: datetime, upper: datetime) -> bool:
        """Whether it holds any instant of ``[lower, upper)``."""
        return (self.lower is None or self.lower < upper) and (self.upper is None or lower < self.upper)


@dataclass(frozen=True)
class CreatedPartition:
    """A partition created by ``create_month_partition``, and the rows it took from the default one."""

    name: str
    month: date
    rows_moved: int


def month_of(day: date) -> date:
    """The first day of ``day``'s month."""
    return day.replace(day=1)


def add_months(month: date, count: int) -> date:
    """The first day of the month ``count`` months after ``month``'s (before it if negative)."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def month_range(month: date) -> tuple[datetime, datetime]:
    """The UTC instants where ``month``'s partition starts and where the next one starts."""
    start, end = month_of(month), add_months(month, 1)
    return datetime(start.year, start.month, 1, tzinfo=UTC), datetime(end.year, end.month, 1, tzinfo=UTC)


def partition_name(month: date) -> str:
    """The name of ``month``'s partition, as the first migration names them: ``events_2027_03``."""
    return f"events_{month:%Y_%m}"


def months_ahead_of(today: date, months_ahead: int) -> list[date]:
    """``today``'s month and the ``months_ahead`` months after it."""
    return [add_months(month_of(today), i) for i in range(months_ahead + 1)]


def uncovered_months(months: Iterable[date], partitions: Iterable[Partition]) -> list[date]:
    """The months (sorted, once each) that no partition holds any instant of."""
    existing = list(partitions)
    return sorted({m for m in months if not any(p.overlaps(*month_range(m)) for p in existing)})


async def event_partitions(conn: asyncpg.Connection) -> list[Partition]:
    """The partitions of ``events`` with their bounds, oldest first; the default one left out."""
    return [Partition(r["name"], r["lower"], r["upper"], r["size_bytes"]) for r in await conn.fetch(_PARTITIONS)]


async def default_partition_months(conn: asyncpg.Connection) -> dict[date, int]:
    """The months that have rows in ``events_default``, with how many (a scan of that partition)."""
    return {r["month"]: r["rows"] for r in await conn.fetch(_DEFAULT_MONTHS)}


async def months_to_create(conn: asyncpg.Connection, today: date, months_ahead: int) -> list[date]:
    """The months that need a partition: ahead of ``today``, or with rows in the default partition."""
    wanted = [*months_ahead_of(today, months_ahead), *await default_partition_months(conn)]
    return uncovered_months(wanted, await event_partitions(conn))


async def create_month_partition(conn: asyncpg.Connection, month: date) -> CreatedPartition | None:
    """Create ``month``'s partition, moving the default partition's rows of that month into it.

    One transaction: lock ``events`` against writes (the sink waits), then the default
    partition; create the table with ``events``' columns, indexes and a CHECK constraint
    of its range (so attaching it does not scan it again); move the rows; attach it;
    drop the CHECK constraint. Attaching scans the default partition to prove it holds
    no row of the month any more.

    Returns:
        The partition and the rows moved, or ``None`` if a partition already holds part
        of the month (created meanwhile by another worker, or by hand).

    Raises:
        asyncpg.LockNotAvailableError: the locks were not granted within ``LOCK_TIMEOUT``.
    """
    lower, upper = month_range(month)
    table = partition_name(month)
    bounds = f"FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"  # from a date: no user text
    async with conn.transaction():
        await _lock_events(conn, "SHARE ROW EXCLUSIVE")
        if uncovered_months([month], await event_partitions(conn)) != [month]:
            return None
        await conn.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
        await conn.execute(
            f"CREATE TABLE {table} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES"
            f" INCLUDING STORAGE INCLUDING COMPRESSION, CONSTRAINT {table}_range"
            f" CHECK (occurred_at >= '{lower.isoformat()}' AND occurred_at < '{upper.isoformat()}'))"
        )
        status: str = await conn.execute(_MOVE.format(table=table), lower, upper)
        await conn.execute(f"ALTER TABLE {PARENT} ATTACH PARTITION {table} FOR VALUES {bounds}")
        await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_range")
    return CreatedPartition(table, month, int(status.rsplit(" ", 1)[-1]))


async def create_month_partitions(conn: asyncpg.Connection, months: Iterable[date]) -> list[CreatedPartition]:
    """Create the partitions of ``months`` (one transaction each); return those created."""
    created = [await create_month_partition(conn, month) for month in months]
    return [c for c in created if c is not None]


async def ensure_event_partitions(conn: asyncpg.Connection, months_ahead: int, today: date | None = None) -> int:
    """Create the partitions ahead of ``today`` and those of the rows in the default partition.

    The months are ``today``'s and the ``months_ahead`` after it, and every month that has
    rows in ``events_default`` (the rows are moved into the new partition).

    Args:
        conn: a connection outside any transaction.
        months_ahead: months after ``today``'s that must have a partition.
        today: the day to count from; the database's date (UTC) by default.

    Returns:
        How many partitions were created.
    """
    today = today or await database_today(conn)
    return len(await create_month_partitions(conn, await months_to_create(conn, today, months_ahead)))


async def drop_partition(conn: asyncpg.Connection, partition: Partition) -> bool:
    """Drop ``partition`` with its rows, in one transaction; return whether it still existed.

    ``events`` is locked exclusively for the moment of the drop (readers and writers wait).
    """
    async with conn.transaction():
        await _lock_events(conn, "ACCESS EXCLUSIVE")
        if partition.name not in {p.name for p in await event_partitions(conn)}:
            return False
        await conn.execute(f"DROP TABLE {partition.name}")
    return True


async def database_today(conn: asyncpg.Connection) -> date:
    """Today's date (UTC) by the database's clock."""
    today: date = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    return today


async def _lock_events(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute(f"SELECT set_config('lock_timeout', '{LOCK_TIMEOUT}', true)")
    await conn.execute(f"LOCK TABLE ONLY {PARENT} IN {mode} MODE")
