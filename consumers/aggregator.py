"""Aggregators: tables of counts that stay exact under redelivery, crashes and duplicates.

An aggregator applies a batch in one transaction (see ``devtrail.consumers.checkpoint``):

1. claim the batch's event ids in ``aggregate_applied`` for this aggregate; only ids
   not claimed before count (fast path: plain COPY; on a unique violation, a staging
   table and ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` find the new ones);
2. add the new events' counts to the aggregate table, rows in key order (so that two
   workers never deadlock on the same hours);
3. store the consumer's offsets.

A crash anywhere before the commit leaves nothing; a copy applied before is not
counted again, whether it comes from a replay or from upstream.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import asyncpg

from devtrail.consumers.clean import CleanRow, unique_rows

_CLAIM_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS applied_staging
(aggregate text NOT NULL, event_id uuid NOT NULL) ON COMMIT DELETE ROWS
"""
_CLAIM_MERGE = """
INSERT INTO aggregate_applied (aggregate, event_id)
SELECT aggregate, event_id FROM applied_staging
ON CONFLICT DO NOTHING
RETURNING event_id::text
"""
_UPSERT_HOURLY = """
INSERT INTO event_counts_hourly AS c (bucket, project_id, agent_id, event_type, count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[])
ON CONFLICT (bucket, project_id, agent_id, event_type)
DO UPDATE SET count = c.count + EXCLUDED.count
"""


async def claim_new(conn: asyncpg.Connection, aggregate: str, rows: list[CleanRow]) -> list[CleanRow]:
    """Record the rows' events as applied to ``aggregate``; return those not applied before.

    Args:
        conn: a connection inside the batch's transaction.
        aggregate: name of the aggregate (one claim per event per aggregate).
        rows: clean rows with distinct ``event_id``.
    """
    records = [(aggregate, row.event_id) for row in rows]
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("aggregate_applied", records=records, columns=("aggregate", "event_id"))
        return rows
    except asyncpg.UniqueViolationError:
        pass
    await conn.execute(_CLAIM_STAGING)
    await conn.copy_records_to_table("applied_staging", records=records, columns=("aggregate", "event_id"))
    fresh = {r[0] for r in await conn.fetch(_CLAIM_MERGE)}
    await conn.execute("TRUNCATE applied_staging")
    return [row for row in rows if row.event_id in fresh]


def hourly_counts(rows: list[CleanRow]) -> Counter[tuple[datetime, str, str, str]]:
    """Count rows per (hour in UTC, project, agent, event type); a missing reference counts as ``''``."""
    counts: Counter[tuple[datetime, str, str, str]] = Counter()
    for row in rows:
        hour = row.occurred_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        counts[(hour, row.project_id or "", row.agent_id or "", row.event_type)] += 1
    return counts


class HourlyEventCounts:
    """``Writer`` maintaining ``event_counts_hourly`` (bucket, project, agent, type)."""

    name = aggregate = "event_counts_hourly"

    async def write(self, conn: asyncpg.Connection, rows: list[CleanRow]) -> int:
        """Count the batch's new events into their hours; return how many counted."""
        fresh = await claim_new(conn, self.aggregate, unique_rows(rows))
        counts = hourly_counts(fresh)
        keys = sorted(counts)
        if keys:
            await conn.execute(
                _UPSERT_HOURLY,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [k[3] for k in keys],
                [counts[k] for k in keys],
            )
        return len(fresh)


_REBUILD_HOURLY = """
INSERT INTO event_counts_hourly (bucket, project_id, agent_id, event_type, count)
SELECT date_trunc('hour', occurred_at), coalesce(project_id, ''), coalesce(agent_id, ''), event_type, count(*)
FROM events GROUP BY 1, 2, 3, 4
"""
_FORGET_UNSTORED_CLAIMS = """
DELETE FROM aggregate_applied a
WHERE a.aggregate = $1 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = a.event_id)
"""
_CLAIM_STORED = """
INSERT INTO aggregate_applied (aggregate, event_id) SELECT DISTINCT $1::text, event_id FROM events
ON CONFLICT DO NOTHING
"""


async def rebuild_hourly_counts(conn: asyncpg.Connection) -> int:
    """Make ``event_counts_hourly`` and its claims agree with ``events``, in one transaction.

    For when the clean topic cannot be replayed: the embedded broker lost its topics (a
    killed ``devtrail up``), so events the sink stored may never reach the aggregator, and
    events the aggregator counted may never reach the sink. The hours from the oldest
    stored event on are recomputed; older hours (whose events retention dropped) keep their
    counts. Claims of events not stored are forgotten. Run while no aggregator runs.

    Returns:
        the number of stored events counted.
    """
    aggregate = HourlyEventCounts.aggregate
    async with conn.transaction():
        await conn.execute("LOCK TABLE event_counts_hourly, aggregate_applied IN EXCLUSIVE MODE")
        oldest = await conn.fetchval("SELECT date_trunc('hour', min(occurred_at)) FROM events")
        if oldest is None:
            return 0
        await conn.execute("DELETE FROM event_counts_hourly WHERE bucket >= $1", oldest)
        await conn.execute(_FORGET_UNSTORED_CLAIMS, aggregate)
        await conn.execute(_CLAIM_STORED, aggregate)
        await conn.execute(_REBUILD_HOURLY)
        counted: int = await conn.fetchval("SELECT count(*) FROM events")
    return counted
