"""The COPY sink: clean rows into the ``events`` table, once each.

Fast path: binary COPY straight into ``events`` (a batch is de-duplicated in memory
first, and the processor already dropped duplicates seen within its window). If the
table already holds one of the rows (a copy from before the window, or a batch written
again after a crash), PostgreSQL raises a unique violation; the savepoint is rolled back
and the batch goes through the slow path: COPY into a temporary staging table, then
``INSERT ... ON CONFLICT (event_id, occurred_at) DO NOTHING``. After a fallback the next
few batches take the slow path directly, since duplicates come in runs (replays).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import asyncpg

from devtrail.consumers import metrics
from devtrail.consumers.clean import EVENT_COLUMNS, CleanRow, unique_rows

log = logging.getLogger(__name__)

#: Batches that skip the fast path after one fell back to the merge.
MERGE_RUN_AFTER_CONFLICT = 8

_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS events_staging
(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
_COLUMN_LIST = ", ".join(EVENT_COLUMNS)
_MERGE = (
    f"INSERT INTO events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM events_staging "  # noqa: S608 - constants
    "ON CONFLICT (event_id, occurred_at) DO NOTHING"
)


class EventSink:
    """``Writer`` of the ``events`` table (see ``devtrail.consumers.checkpoint.host``).

    A ``CleanRow`` is the COPY record itself (``EVENT_COLUMNS`` order, the time parsed, the
    payload JSON text that asyncpg's jsonb codec sends as it is, never re-encoded).
    """

    name = "sink"

    def __init__(self) -> None:
        self._merge_runs_left = 0

    async def write(self, conn: asyncpg.Connection, rows: list[CleanRow]) -> int:
        """Insert the batch's new rows; return how many were inserted."""
        records = unique_rows(rows)
        for event_type, count in Counter(row.event_type for row in rows).items():
            metrics.EVENTS_IN.labels(self.name, event_type).inc(count)
        if self._merge_runs_left == 0:
            try:
                async with conn.transaction():  # a savepoint inside the batch's transaction
                    await conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
                return len(records)
            except asyncpg.UniqueViolationError:
                log.info("sink: batch of %d holds rows already stored; merging", len(records))
                self._merge_runs_left = MERGE_RUN_AFTER_CONFLICT
        self._merge_runs_left -= 1
        return await merge_records(conn, records)


async def merge_records(conn: asyncpg.Connection, records: Sequence[tuple[object, ...]]) -> int:
    """Insert records that are not stored yet, through a staging table; return how many."""
    await conn.execute(_STAGING)
    await conn.copy_records_to_table("events_staging", records=records, columns=EVENT_COLUMNS)
    status: str = await conn.execute(_MERGE)
    await conn.execute("TRUNCATE events_staging")
    return int(status.rsplit(" ", 1)[-1])
