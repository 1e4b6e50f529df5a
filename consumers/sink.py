"""The COPY sink: clean events into the ``events`` table, once each.

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
from typing import Any

import asyncpg

from consumers import metrics
from consumers.rows import EVENT_COLUMNS, event_row, unique_by_event_id

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
    """``BatchWriter`` for the ``events`` table (see ``consumers.checkpoint``)."""

    stage = "sink"

    def __init__(self) -> None:
        self._merge_runs_left = 0

    async def write(self, conn: asyncpg.Connection, events: list[dict[str, Any]]) -> int:
        """Insert the batch's new events; return how many rows were inserted."""
        rows = [event_row(e) for e in unique_by_event_id(events)]
        for event_type, count in _count_types(events).items():
            metrics.EVENTS_IN.labels(self.stage, event_type).inc(count)
        if self._merge_runs_left == 0:
            try:
                async with conn.transaction():  # a savepoint inside the batch's transaction
                    await conn.copy_records_to_table("events", records=rows, columns=EVENT_COLUMNS)
                return len(rows)
            except asyncpg.UniqueViolationError:
                log.info("sink: batch of %d holds rows already stored; merging", len(rows))
                self._merge_runs_left = MERGE_RUN_AFTER_CONFLICT
        self._merge_runs_left -= 1
        return await merge_rows(conn, rows)


async def merge_rows(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert rows that are not stored yet, through a staging table; return how many."""
    await conn.execute(_STAGING)
    await conn.copy_records_to_table("events_staging", records=rows, columns=EVENT_COLUMNS)
    status: str = await conn.execute(_MERGE)
    await conn.execute("TRUNCATE events_staging")
    return int(status.rsplit(" ", 1)[-1])


def _count_types(events: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        event_type = event.get("event_type", "?")
        counts[event_type] = counts.get(event_type, 0) + 1
    return counts
