"""Aggregators: tables of counts that stay exact under redelivery, crashes and duplicates.

An aggregator applies a batch in one transaction (see ``consumers.checkpoint``):

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
from datetime import datetime
from typing import Any

import asyncpg

from consumers import metrics
from consumers.rows import unique_by_event_id

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


async def claim_new(conn: asyncpg.Connection, aggregate: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Record the events as applied to ``aggregate``; return those not applied before.

    Args:
        conn: a connection inside the batch's transaction.
        aggregate: name of the aggregate (one claim per event per aggregate).
        events: events with distinct ``event_id``.
    """
    records = [(aggregate, e["event_id"]) for e in events]
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("aggregate_applied", records=records, columns=("aggregate", "event_id"))
        return events
    except asyncpg.UniqueViolationError:
        pass
    await conn.execute(_CLAIM_STAGING)
    await conn.copy_records_to_table("applied_staging", records=records, columns=("aggregate", "event_id"))
    fresh = {r[0] for r in await conn.fetch(_CLAIM_MERGE)}
    await conn.execute("TRUNCATE applied_staging")
    return [e for e in events if e["event_id"] in fresh]


def hour_of(occurred_at: str) -> datetime:
    """The hourly bucket of an ISO-8601 timestamp."""
    return datetime.fromisoformat(occurred_at).replace(minute=0, second=0, microsecond=0)


class HourlyEventCounts:
    """``BatchWriter`` maintaining ``event_counts_hourly`` (bucket, project, agent, type)."""

    stage = "aggregator"
    aggregate = "event_counts_hourly"

    async def write(self, conn: asyncpg.Connection, events: list[dict[str, Any]]) -> int:
        """Count the batch's new events into their hours; return how many counted."""
        fresh = await claim_new(conn, self.aggregate, unique_by_event_id(events))
        counts = Counter(
            (hour_of(e["occurred_at"]), e.get("project_id") or "", e.get("agent_id") or "", e["event_type"])
            for e in fresh
        )
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
        metrics.EVENTS_IN.labels(self.stage, "*").inc(len(events))
        return len(fresh)
