"""Aggregators: tables of counts that stay exact under redelivery, crashes and duplicates.

An aggregator applies a batch in one transaction (see ``devtrail.consumers.checkpoint``):

1. claim the batch's event ids in ``aggregates.event_count_claims`` (bounded as the analyst
   aggregates' claims are: day partitions of the ids' UUIDv7 day, dropped past
   ``DEVTRAIL_AGGREGATES_DEDUP_DAYS``; ``devtrail.consumers.aggregates.claims``); only ids not
   claimed before count;
2. add the new events' counts to the aggregate table, rows in key order (so that two
   workers never deadlock on the same hours);
3. store the consumer's offsets.

A crash anywhere before the commit leaves nothing; a copy applied before is not counted
again, whether it comes from a replay or from upstream within the dedup window (a copy
arriving later than that is counted again, as by the analyst aggregates).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import asyncpg

from devtrail.consumers.aggregates.claims import Claims, id_day_sql
from devtrail.consumers.clean import CleanRow, unique_rows

#: The claims table of ``event_counts_hourly`` in schema ``aggregates`` (migration 0017).
CLAIMS = "event_count_claims"
_UPSERT_HOURLY = """
INSERT INTO event_counts_hourly AS c (bucket, project_id, agent_id, event_type, count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[])
ON CONFLICT (bucket, project_id, agent_id, event_type)
DO UPDATE SET count = c.count + EXCLUDED.count
"""


def hourly_counts(rows: list[CleanRow]) -> Counter[tuple[datetime, str, str, str]]:
    """Count rows per (hour in UTC, project, agent, event type); a missing reference counts as ``''``."""
    counts: Counter[tuple[datetime, str, str, str]] = Counter()
    for row in rows:
        hour = row.occurred_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        counts[(hour, row.project_id or "", row.agent_id or "", row.event_type)] += 1
    return counts


class HourlyEventCounts:
    """``Writer`` maintaining ``event_counts_hourly`` (bucket, project, agent, type).

    Args:
        dedup_days: how long a copy of an event is recognised (``DEVTRAIL_AGGREGATES_DEDUP_DAYS``).
    """

    name = aggregate = "event_counts_hourly"

    def __init__(self, dedup_days: int = 7) -> None:
        self.claims = Claims(dedup_days, CLAIMS)

    async def write(self, conn: asyncpg.Connection, rows: list[CleanRow]) -> int:
        """Count the batch's new events into their hours; return how many counted."""
        today = datetime.now(UTC).date()
        fresh = await self.claims.claim(conn, unique_rows(rows), today)
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
_FORGET_UNSTORED = """
DELETE FROM aggregates.{table} a WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = a.event_id)
"""
_CLAIM_STORED = f"""
INSERT INTO aggregates.{CLAIMS} (id_day, event_id)
SELECT d, event_id FROM (SELECT DISTINCT event_id, {id_day_sql("event_id")} AS d FROM events) s
WHERE d BETWEEN $1 AND $2
ON CONFLICT DO NOTHING
"""  # noqa: S608 - names from code
_CLAIM_STORED_LATE = f"""
INSERT INTO aggregates.{CLAIMS}_late (event_id, claimed_on)
SELECT DISTINCT event_id, $3::date FROM events
WHERE {id_day_sql("event_id")} IS NULL OR {id_day_sql("event_id")} NOT BETWEEN $1 AND $2
ON CONFLICT DO NOTHING
"""  # noqa: S608 - names from code


async def rebuild_hourly_counts(conn: asyncpg.Connection, dedup_days: int = 7) -> int:
    """Make ``event_counts_hourly`` and its claims agree with ``events``, in one transaction.

    For when the clean topic cannot be replayed: the embedded broker lost its topics (a
    killed ``devtrail up``), so events the sink stored may never reach the aggregator, and
    events the aggregator counted may never reach the sink. The hours from the oldest
    stored event on are recomputed; older hours (whose events retention dropped) keep their
    counts. Claims of events not stored are forgotten; every stored event is claimed (in its
    id's day partition within the window, else as a late claim of today). Run while no
    aggregator runs.

    Returns:
        the number of stored events counted.
    """
    claims = Claims(dedup_days, CLAIMS)
    today = datetime.now(UTC).date()
    async with conn.transaction():
        await conn.execute(
            f"LOCK TABLE event_counts_hourly, aggregates.{CLAIMS}, aggregates.{CLAIMS}_late IN EXCLUSIVE MODE"
        )
        oldest = await conn.fetchval("SELECT date_trunc('hour', min(occurred_at)) FROM events")
        if oldest is None:
            return 0
        await conn.execute("DELETE FROM event_counts_hourly WHERE bucket >= $1", oldest)
        for table in (CLAIMS, f"{CLAIMS}_late"):
            await conn.execute(_FORGET_UNSTORED.format(table=table))
        await claims.ensure_partitions(conn, today)
        first, last = claims.window(today)
        await conn.execute(_CLAIM_STORED, first, last)
        await conn.execute(_CLAIM_STORED_LATE, first, last, today)
        await conn.execute(_REBUILD_HOURLY)
        counted: int = await conn.fetchval("SELECT count(*) FROM events")
    return counted
