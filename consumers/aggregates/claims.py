"""Which events the aggregates counted: bounded claims, so that no event is counted twice.

Offsets stored in the batch's transaction already make a replay after a crash count nothing
twice; claims are for *copies*: the same event twice on the clean topic (a producer re-sending
after the processor's dedup window, a processor replay). One claim per event serves every
aggregate of the ``aggregates`` writer.

Bounded: a claim lives in ``aggregates.claims``, partitioned by the day of the event's id (a
UUIDv7 holds its creation time), and a day's partition is dropped once that day is
``dedup_days`` old (one day of grace). An id from outside the kept window (an event created
long ago and arriving late, an id from the future, an id that is not a UUIDv7) is claimed in
``aggregates.claims_late``, pruned by the day it was claimed. So a copy is recognised when it
arrives within ``dedup_days`` of the original's creation, or of the original's arrival for ids
claimed late; a copy arriving later than that is counted again (``docs/analytics.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import asyncpg

from devtrail.consumers.clean import CleanRow

log = logging.getLogger(__name__)

#: Days ahead of today that always have a partition (ids made just after midnight, clocks ahead).
DAYS_AHEAD = 2

#: The claims of the ``aggregates`` writer; ``event_counts_hourly`` keeps its own
#: (``devtrail.consumers.aggregator``), in the same shape.
TABLE = "claims"


def _sql(table: str) -> dict[str, str]:
    """The statements of a claims table ``aggregates.<table>`` (with ``<table>_late``)."""
    staging = f"{table}_staging"
    return {
        "staging": f"""
CREATE TEMP TABLE IF NOT EXISTS {staging}
(id_day date, event_id uuid NOT NULL) ON COMMIT DELETE ROWS
""",
        "merge": f"""
INSERT INTO aggregates.{table} (id_day, event_id)
SELECT id_day, event_id FROM {staging} WHERE id_day IS NOT NULL
ON CONFLICT DO NOTHING
RETURNING event_id::text
""",  # noqa: S608 - names from code
        "merge_late": f"""
INSERT INTO aggregates.{table}_late (event_id, claimed_on)
SELECT event_id, $1::date FROM {staging} WHERE id_day IS NULL
ON CONFLICT DO NOTHING
RETURNING event_id::text
""",  # noqa: S608 - names from code
        "partitions": f"""
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'aggregates.{table}'::regclass
""",  # noqa: S608 - names from code
    }


def id_day(event_id: str) -> date | None:
    """The UTC day a UUIDv7 id was made (its first 48 bits: Unix milliseconds); None if not a UUIDv7."""
    if len(event_id) != 36 or event_id[14] != "7":
        return None
    try:
        millis = int(event_id[:8] + event_id[9:13], 16)
    except ValueError:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, UTC).date()
    except (OverflowError, OSError, ValueError):
        return None


def id_day_sql(column: str) -> str:
    """``id_day`` in SQL, of the uuid ``column``: the version nibble and the first 48 bits (Unix
    milliseconds) read as bytes; NULL for ids other than UUIDv7s."""
    as_bytes = f"uuid_send({column})"
    millis = " | ".join(f"(get_byte({as_bytes}, {i})::bigint << {8 * (5 - i)})" for i in range(6))
    return (
        f"CASE WHEN get_byte({as_bytes}, 6) >> 4 = 7"
        f" THEN (to_timestamp(({millis}) / 1000.0) AT TIME ZONE 'UTC')::date END"
    )


def partition_name(day: date, table: str = TABLE) -> str:
    return f"{table}_{day:%Y%m%d}"


def partition_day(name: str, table: str = TABLE) -> date | None:
    """The day of a partition named by ``partition_name``; None for any other name."""
    if not name.startswith(f"{table}_"):
        return None
    digits = name.removeprefix(f"{table}_")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


class Claims:
    """Claims events for the aggregates, keeping the partitions of the window and pruning past it.

    Args:
        dedup_days: how long after an event's creation a copy of it is still recognised.
        table: the claims table in schema ``aggregates`` (partitioned by ``id_day``), with its
            ``<table>_late``: ``claims`` for the ``aggregates`` writer.
    """

    def __init__(self, dedup_days: int, table: str = TABLE) -> None:
        if dedup_days < 1:
            raise ValueError("dedup_days must be at least 1")
        self.dedup_days = dedup_days
        self.table = table
        self._sql = _sql(table)
        self._pruned_on: date | None = None

    def window(self, today: date) -> tuple[date, date]:
        """The id days claimed in partitions on ``today``: ``dedup_days`` back, ``DAYS_AHEAD`` ahead."""
        return today - timedelta(days=self.dedup_days), today + timedelta(days=DAYS_AHEAD)

    async def claim(self, conn: asyncpg.Connection, rows: Sequence[CleanRow], today: date) -> list[CleanRow]:
        """Claim the rows' events (distinct ids); return the rows not claimed before, in order.

        Runs in the caller's transaction: nothing is claimed unless it commits.
        """
        await self.ensure_partitions(conn, today)
        first, last = self.window(today)
        records: list[tuple[date | None, str]] = []
        for row in rows:
            day = id_day(row.event_id)
            records.append((day if day is not None and first <= day <= last else None, row.event_id))
        if all(day is not None for day, _ in records):
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        self.table, schema_name="aggregates", records=records, columns=("id_day", "event_id")
                    )
                return list(rows)
            except asyncpg.UniqueViolationError:
                pass
        await conn.execute(self._sql["staging"])
        await conn.copy_records_to_table(f"{self.table}_staging", records=records, columns=("id_day", "event_id"))
        fresh = {r[0] for r in await conn.fetch(self._sql["merge"])}
        fresh |= {r[0] for r in await conn.fetch(self._sql["merge_late"], today)}
        await conn.execute(f"TRUNCATE {self.table}_staging")
        return [row for row in rows if row.event_id in fresh]

    async def ensure_partitions(self, conn: asyncpg.Connection, today: date) -> None:
        """Create the window's missing partitions (checked every batch: a rolled-back batch takes
        back what it created); once a day, drop the partitions past the window and prune late claims.

        In the batch's transaction, under an advisory lock when it changes anything, so that two
        writer processes do not create the same partition.
        """
        first, last = self.window(today)
        existing = {r[0] for r in await conn.fetch(self._sql["partitions"])}
        wanted = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        missing = [day for day in wanted if partition_name(day, self.table) not in existing]
        prune = self._pruned_on != today
        if not missing and not prune:
            return
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"devtrail.aggregates.{self.table}")
        existing = {r[0] for r in await conn.fetch(self._sql["partitions"])}
        for day in missing:
            if partition_name(day, self.table) not in existing:
                await conn.execute(
                    f"CREATE TABLE aggregates.{partition_name(day, self.table)} PARTITION OF aggregates.{self.table} "
                    f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
                )
        if not prune:
            return
        dropped = 0
        for name in sorted(existing):
            made_for = partition_day(name, self.table)
            if made_for is None:
                continue
            if made_for < first - timedelta(days=1):  # one day of grace for writers whose clock is behind
                await conn.execute(f"DROP TABLE aggregates.{name}")
                dropped += 1
        pruned = await conn.execute(f"DELETE FROM aggregates.{self.table}_late WHERE claimed_on < $1", first)  # noqa: S608
        if dropped or pruned != "DELETE 0":
            log.info("%s: claims pruned (%d day partitions dropped, %s late claims)", self.table, dropped, pruned)
        # Not durable until the batch commits; a rolled-back prune waits for tomorrow's (harmless).
        self._pruned_on = today
