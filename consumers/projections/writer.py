"""The base of the projection writers (``consumers.checkpoint.Writer``s of the clean topic)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import asyncpg

from consumers.clean import CleanRow
from consumers.projections.merge import Reduction, Table


class ProjectionWriter(ABC):
    """Keeps tables of current state from the clean topic, whatever the order rows come in.

    ``write`` reduces the batch in Python to one patch per row of each table (``reduce``),
    then merges each table's patches with one statement (``Table.upsert``). Idempotent per
    event: a row applied twice, in one batch or two, changes nothing the second time.
    Called by the writer host inside the batch's transaction (see ``consumers.checkpoint.host``):
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

    async def write(self, conn: asyncpg.Connection, rows: list[CleanRow]) -> int:
        """Merge the batch into the tables.

        Returns:
            how many of the batch's events went into rows that changed, at most the number
            of rows: 0 for a batch applied before (an event that touches two rows of its
            tables that both changed counts twice, within that bound).
        """
        applied = 0
        for reduction in self.reduce(rows):
            applied += await reduction.apply(conn)
        return min(applied, len(rows))
