"""Monthly partitions of ``events``, created ahead of time by the sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from consumers.errors import is_retriable_db_error

log = logging.getLogger(__name__)


async def ensure_event_partitions(conn: asyncpg.Connection, months_ahead: int) -> int:
    """Create the monthly partitions from this month to ``months_ahead`` months on.

    Returns:
        How many partitions were created.
    """
    created: int = await conn.fetchval("SELECT devtrail_ensure_event_partitions(now()::date, $1)", months_ahead + 1)
    return created


async def maintain_event_partitions(
    database_url: str, months_ahead: int, interval_s: float, stop: asyncio.Event
) -> None:
    """Keep partitions ahead of time until ``stop`` is set (checked every ``interval_s``).

    A failure is logged and tried again at the next interval: rows keep landing in the
    default partition meanwhile, nothing fails.
    """
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(database_url)
            try:
                created = await ensure_event_partitions(conn, months_ahead)
            finally:
                await conn.close()
            if created:
                log.info("created %d monthly partition(s) of events", created)
        except (asyncpg.PostgresError, OSError) as exc:
            level = logging.WARNING if is_retriable_db_error(exc) else logging.ERROR
            log.log(level, "partition maintenance failed (%s); next try in %.0fs", exc, interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
