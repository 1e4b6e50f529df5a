"""Finding the rows a database write refuses, so that the rest of the batch goes through.

A batch that fails on its data (``devtrail.consumers.errors.judge`` says ``REFUSED``: a value
PostgreSQL will not take, a constraint, a row too large) is split in halves, each in its
own savepoint, until the refused rows stand alone. They are returned with the reason and
dead-lettered; the batch's other rows are written. Any other error (connection lost, a
bug in the writer, a missing table) is not the rows' fault and is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from devtrail.consumers.errors import Verdict, judge


class _Writer(Protocol):
    async def write(self, conn: asyncpg.Connection, rows: list[Any]) -> int: ...


@dataclass(frozen=True)
class Rejected:
    """A row the database refused, and why."""

    position: int
    reason: str


def is_poison(exc: BaseException) -> bool:
    """Whether the error comes from the data written rather than from the database or our code."""
    return judge(exc) is Verdict.REFUSED


def _reason(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    prefix = f"SQLSTATE {sqlstate}: " if sqlstate else ""
    return f"{type(exc).__name__}: {prefix}{exc}"


async def write_isolating(
    conn: asyncpg.Connection, writer: _Writer, rows: list[Any], offset: int = 0
) -> tuple[int, list[Rejected]]:
    """Write ``rows`` inside savepoints; return (rows that took effect, refused rows).

    Args:
        conn: a connection inside the batch's transaction.
        writer: the writer.
        rows: the rows to write.
        offset: position of ``rows[0]`` in the whole batch (for ``Rejected.position``).
    """
    if not rows:
        return 0, []
    try:
        async with conn.transaction():
            return await writer.write(conn, rows), []
    except Exception as exc:
        if not is_poison(exc):
            raise
        if len(rows) == 1:
            return 0, [Rejected(offset, _reason(exc))]
    middle = len(rows) // 2
    written_left, rejected_left = await write_isolating(conn, writer, rows[:middle], offset)
    written_right, rejected_right = await write_isolating(conn, writer, rows[middle:], offset + middle)
    return written_left + written_right, rejected_left + rejected_right


class _Preparing(_Writer, Protocol):
    async def apply(self, conn: asyncpg.Connection, prepared: Any) -> int: ...


async def apply_isolating(
    conn: asyncpg.Connection, writer: _Preparing, prepared: Any, rows: list[Any]
) -> tuple[int, list[Rejected]]:
    """Apply a batch ``writer.prepare`` made beforehand, in a savepoint; like ``write_isolating``.

    If the database refuses the data, the savepoint is rolled back and the batch is written
    again by ``write_isolating``, which finds the refused rows.
    """
    try:
        async with conn.transaction():
            return await writer.apply(conn, prepared), []
    except Exception as exc:
        if not is_poison(exc):
            raise
    return await write_isolating(conn, writer, rows)
