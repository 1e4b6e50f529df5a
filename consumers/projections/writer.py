"""The base of the projection writers (``devtrail.consumers.checkpoint.Writer``s of the clean topic)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections.merge import Reduction, Table


class ProjectionWriter(ABC):
    """Keeps tables of current state from the clean topic, whatever the order rows come in.

    ``prepare`` reduces the batch in Python to one patch per row of each table (``reduce``)
    and encodes them as column arrays; ``apply`` merges each table's patches with one
    statement (``Table.upsert_sql``). The writer host prepares the next batch in a thread while
    the current one is written (``devtrail.consumers.checkpoint.PreparingWriter``). Idempotent per
    event: a row applied twice, in one batch or two, changes nothing the second time.
    Called by the writer host inside the batch's transaction (see ``devtrail.consumers.checkpoint.host``):
    nothing is durable when it returns.
    """

    name: str
    #: The tables it writes, in the order it writes them.
    tables: tuple[Table, ...]

    @abstractmethod
    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        """One reduction per table of ``tables``, in that order.

        Raises:
            MalformedRowError: a row of a type it reads does not hold a valid event.
        """

    def prepare(self, rows: list[CleanRow]) -> PreparedBatch:
        """The batch reduced and encoded, ready for ``apply`` (Python only: no I/O)."""
        upserts = [(r, r.table.encode(r.rows)) for r in self.reduce(rows) if r.rows]
        return PreparedBatch(len(rows), upserts)

    async def apply(self, conn: asyncpg.Connection, prepared: PreparedBatch) -> int:
        """Merge a prepared batch into the tables; return what ``write`` returns."""
        applied = 0
        for reduction, encoded in prepared.upserts:
            applied += await reduction.apply(conn, encoded)
        return min(applied, prepared.rows)

    async def write(self, conn: asyncpg.Connection, rows: list[CleanRow]) -> int:
        """Merge the batch into the tables.

        Returns:
            how many of the batch's events went into rows that changed, at most the number
            of rows: 0 for a batch applied before (an event that touches two rows of its
            tables that both changed counts twice, within that bound).
        """
        return await self.apply(conn, self.prepare(rows))


@dataclass(frozen=True)
class PreparedBatch:
    """A batch ready to send: its size, and per table with rows, the reduction and its rows as JSON."""

    rows: int
    upserts: list[tuple[Reduction, str]]
    #: What a writer that merges nothing in Python prepares instead (``DeliveryFactsProjection``).
    extra: object = None
