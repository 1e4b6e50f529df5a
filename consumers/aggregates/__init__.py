"""The analysts' aggregates: one writer of the writer host keeping every table of schema ``aggregates``.

Per batch, in the writer host's transaction (with the offsets): claim the batch's events
once for every aggregate (``devtrail.consumers.aggregates.claims``: bounded, see there), then add the
new ones to each table with one upsert per table (``devtrail.consumers.aggregates.reduce``). The
Python work is done beforehand in the host's preparing thread; when the claim finds copies
counted before, the batch is reduced again without them. Exact under redelivery (offsets in
the same transaction), crashes in the middle of a transaction (nothing of it stays) and
copies of an event (claims). The views over these tables are in ``analytics`` (docs/analytics.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg

from devtrail.consumers.aggregates.claims import Claims
from devtrail.consumers.aggregates.reduce import Additions, reduce_rows
from devtrail.consumers.clean import CleanRow, unique_rows

DEFAULT_DEDUP_DAYS = 7


@dataclass(frozen=True)
class PreparedAggregates:
    rows: list[CleanRow]
    additions: Additions


def utc_today() -> date:
    return datetime.now(UTC).date()


class AggregatesWriter:
    """``PreparingWriter`` of the ``aggregates`` schema.

    Args:
        dedup_days: how long after an event's creation a copy of it is recognised (claims kept).
        today: the clock (tests move it).
    """

    name = "aggregates"

    def __init__(self, dedup_days: int = DEFAULT_DEDUP_DAYS, today: Callable[[], date] = utc_today) -> None:
        self.claims = Claims(dedup_days)
        self._today = today

    def prepare(self, rows: list[CleanRow]) -> PreparedAggregates:
        unique = unique_rows(rows)
        return PreparedAggregates(unique, reduce_rows(unique))

    async def apply(self, conn: asyncpg.Connection, prepared: PreparedAggregates) -> int:
        fresh = await self.claims.claim(conn, prepared.rows, self._today())
        if not fresh:
            return 0
        additions = prepared.additions if len(fresh) == len(prepared.rows) else reduce_rows(fresh)
        for sql, columns in additions.statements():
            await conn.execute(sql, *columns)
        return len(fresh)

    async def write(self, conn: asyncpg.Connection, rows: list[CleanRow]) -> int:
        """Count the batch's events not counted before into every aggregate; return how many."""
        return await self.apply(conn, self.prepare(rows))
