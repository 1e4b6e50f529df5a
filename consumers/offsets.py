"""Consumer offsets kept in PostgreSQL, written in the same transaction as the data."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from aiokafka import TopicPartition

_STORE = """
INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, updated_at)
SELECT $1, t, p, o, now() FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x(t, p, o)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE
SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset),
    updated_at = now()
"""

_LOAD = """
SELECT topic, partition, next_offset FROM consumer_offsets
WHERE consumer_group = $1 AND topic = ANY($2::text[])
"""


async def store_offsets(conn: asyncpg.Connection, group: str, next_offsets: Mapping[TopicPartition, int]) -> None:
    """Record the next offset to read per partition. Call inside the data's transaction.

    Offsets never move backwards here: a late writer that lost its partitions cannot undo
    the progress of the one that took them over.
    """
    tps = sorted(next_offsets)
    await conn.execute(
        _STORE,
        group,
        [tp.topic for tp in tps],
        [tp.partition for tp in tps],
        [next_offsets[tp] for tp in tps],
    )


async def load_offsets(conn: asyncpg.Connection, group: str, topics: list[str]) -> dict[TopicPartition, int]:
    """Return the stored next offsets of ``group`` for ``topics``."""
    rows = await conn.fetch(_LOAD, group, topics)
    return {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def forget_offsets(conn: asyncpg.Connection, groups: list[str]) -> int:
    """Delete the stored offsets of ``groups`` (after their topics were recreated empty)."""
    status: str = await conn.execute("DELETE FROM consumer_offsets WHERE consumer_group = ANY($1::text[])", groups)
    return int(status.split()[-1])
