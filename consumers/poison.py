"""Finding the events a database write rejects, so that the rest of the batch goes through.

A batch that fails with a data error (SQLSTATE class 22, 23 or 54: a value PostgreSQL
will not take, a constraint, a row too large) or that the writer cannot turn into rows is
split in halves, each in its own savepoint, until the rejected events stand alone. They
are returned with the reason and dead-lettered; the batch's other events are written.
Any other error (connection lost, missing table) is not the events' fault and is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

POISON_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


class _Writer(Protocol):
    async def write(self, conn: asyncpg.Connection, rows: list[Any]) -> int: ...


@dataclass(frozen=True)
class Rejected:
    """An event the database (or the conversion to rows) refused, and why."""

    position: int
    reason: str


def is_poison(exc: BaseException) -> bool:
    """Whether the error comes from the data written rather than from the database's state."""
    if isinstance(exc, (KeyError, ValueError, TypeError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", None) or "")[:2] in POISON_SQLSTATE_CLASSES
    return False


def _reason(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    prefix = f"SQLSTATE {sqlstate}: " if sqlstate else ""
    return f"{type(exc).__name__}: {prefix}{exc}"


async def write_isolating(
    conn: asyncpg.Connection, writer: _Writer, events: list[Any], offset: int = 0
) -> tuple[int, list[Rejected]]:
    """Write ``events`` inside savepoints; return (events written, rejected events).

    Args:
        conn: a connection inside the batch's transaction.
        writer: the batch writer.
        events: the events to write.
        offset: position of ``events[0]`` in the whole batch (for ``Rejected.position``).
    """
    try:
        async with conn.transaction():
            return await writer.write(conn, events), []
    except Exception as exc:
        if not is_poison(exc):
            raise
        if len(events) == 1:
            return 0, [Rejected(offset, _reason(exc))]
    middle = len(events) // 2
    written_left, rejected_left = await write_isolating(conn, writer, events[:middle], offset)
    written_right, rejected_right = await write_isolating(conn, writer, events[middle:], offset + middle)
    return written_left + written_right, rejected_left + rejected_right
