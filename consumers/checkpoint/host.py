"""A list of writers applied to each batch: together in one savepoint, or each in its own
after the database refused some of the batch's data.

Contract of a ``Writer``:

* ``write(conn, rows)`` is called inside the batch's open transaction, in a savepoint, with
  the rows of one batch (possibly including rows it applied before: a replay after a crash,
  or an upstream duplicate). It must be idempotent per event and return how many events
  took effect for the first time.
* If PostgreSQL refuses the data (``devtrail.consumers.errors.judge`` says ``REFUSED``), the
  host rolls back every writer's work on the batch and runs each again in a savepoint of its
  own (from a fresh ``prepare``), calling the refusing one again on halves of the batch until
  the refused rows stand alone; those rows are dead-lettered *for that writer*, and the
  other writers still apply them.
* Any other error is raised: a lost connection is retried by the consumer; a bug (a
  ``KeyError`` in the writer, a missing table) stops the worker loudly.
* Nothing is durable when ``write`` returns: the consumer stores the batch's offsets in the
  same transaction and commits, after every writer has run.

A writer whose work is mostly Python (reducing a batch) can also be a ``PreparingWriter``:
``prepare(rows)`` does the CPU work with no I/O, and ``apply(conn, prepared)`` only sends
it. The consumer then prepares a batch in a thread while the batch before it is being
written, so the writer's Python and PostgreSQL's work on the previous batch overlap instead
of adding up. ``write(conn, rows)`` must stay equivalent to ``apply(conn, prepare(rows))``:
it is what refused rows are isolated with, and what runs when nothing was prepared.

Adding a projection or an aggregate is one module with a ``Writer`` and one line in
``devtrail.consumers.writers.WRITERS``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, runtime_checkable

import asyncpg

from devtrail.consumers import metrics
from devtrail.consumers.checkpoint.format import R, RowFormat
from devtrail.consumers.poison import Rejected, apply_isolating, is_poison, write_isolating

log = logging.getLogger(__name__)


class Writer(Protocol[R]):
    """Applies batches of rows to its own tables; see the module docstring for when."""

    @property
    def name(self) -> str:
        """Names the writer in metrics, logs and dead letters."""
        ...

    async def write(self, conn: asyncpg.Connection, rows: list[R]) -> int:
        """Apply ``rows``; return how many took effect for the first time."""
        ...


@runtime_checkable
class PreparingWriter(Writer[R], Protocol[R]):
    """A ``Writer`` that can do its CPU work before the batch's transaction (see the module docstring)."""

    def prepare(self, rows: list[R]) -> Any:
        """What ``apply`` sends for ``rows``: no I/O, no shared mutable state (it runs in a thread)."""
        ...

    async def apply(self, conn: asyncpg.Connection, prepared: Any) -> int:
        """Send what ``prepare`` made; return what ``write`` on the same rows would return."""
        ...


#: What ``WriterHost.prepare`` made: the prepared work of each preparing writer, by name.
Prepared = Mapping[str, Any]


@dataclass(frozen=True)
class Refusal:
    """A row a writer's table refused: ``position`` in the batch's rows."""

    position: int
    writer: str
    reason: str


@dataclass
class Applied:
    """What a batch did: events applied per writer, and the rows refused."""

    by_writer: dict[str, int] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)


class WriterHost(Generic[R]):
    """The writers one checkpointed consumer runs on each batch, in order.

    Args:
        stage: the consumer's name in metrics and logs (``sink``, ``writers``...).
        row_format: how the topic's messages become rows.
        writers: applied to every batch, in this order, each in its own savepoint.
        publish_refusals: dead-letter refused rows to the dead-letter topic; false for the
            consumer of that topic itself (it logs and counts them instead of looping).
    """

    def __init__(
        self, stage: str, row_format: RowFormat[R], writers: Sequence[Writer[R]], publish_refusals: bool = True
    ) -> None:
        if not writers:
            raise ValueError(f"{stage}: a writer host needs at least one writer")
        names = [w.name for w in writers]
        if len(set(names)) != len(names):
            raise ValueError(f"{stage}: writer names must be unique, got {names}")
        self.stage = stage
        self.row_format = row_format
        self.writers = tuple(writers)
        self.publish_refusals = publish_refusals

    def prepare(self, rows: list[R]) -> Prepared:
        """The CPU work of every ``PreparingWriter`` on ``rows`` (thread-safe: no I/O, nothing shared).

        A writer whose ``prepare`` raises is left out: ``apply`` then runs its ``write``,
        which raises the same error where it is judged (refused data, or a bug).
        """
        prepared: dict[str, Any] = {}
        for writer in self.writers:
            if isinstance(writer, PreparingWriter):
                try:
                    prepared[writer.name] = writer.prepare(rows)
                except Exception as exc:  # noqa: BLE001 - judged when write raises it again
                    log.debug(
                        "%s: %s could not prepare a batch (%r); writing it directly", self.stage, writer.name, exc
                    )
        return prepared

    async def apply(self, conn: asyncpg.Connection, rows: list[R], prepared: Prepared | None = None) -> Applied:
        """Run every writer on ``rows`` inside the caller's transaction.

        Args:
            prepared: ``prepare(rows)``, when it was made beforehand.
        """
        if len(self.writers) > 1:
            # Every writer in one savepoint first: the usual case, when the database takes every
            # row. A savepoint per writer (two statements each) was a tenth of a small batch's round
            # trips (11 writers, 46 for 100 events, measured); a refusal rolls the lot back and the
            # writers run again, each isolating what it refuses.
            try:
                async with conn.transaction():
                    return await self._apply_each(conn, rows, prepared, isolating=False)
            except Exception as exc:
                if not is_poison(exc):
                    raise
                log.info("%s: the database refused data of a batch (%s); each writer again, alone", self.stage, exc)
                # Again from scratch: a writer's apply may have consumed what was prepared.
                prepared = self.prepare(rows) if prepared is not None else None
        return await self._apply_each(conn, rows, prepared, isolating=True)

    async def _apply_each(
        self, conn: asyncpg.Connection, rows: list[R], prepared: Prepared | None, isolating: bool
    ) -> Applied:
        """Every writer in turn; with ``isolating``, each in its own savepoint, its refused rows
        found and left out for it only."""
        applied = Applied()
        for writer in self.writers:
            started = time.perf_counter()
            rejected: list[Rejected] = []
            if prepared is not None and writer.name in prepared and isinstance(writer, PreparingWriter):
                if isolating:
                    count, rejected = await apply_isolating(conn, writer, prepared[writer.name], rows)
                else:
                    count = await writer.apply(conn, prepared[writer.name])
            elif isolating:
                count, rejected = await write_isolating(conn, writer, rows)
            else:
                count = await writer.write(conn, rows)
            metrics.FLUSH_SECONDS.labels(self.stage, writer.name).observe(time.perf_counter() - started)
            applied.by_writer[writer.name] = count
            applied.refusals += [Refusal(r.position, writer.name, r.reason) for r in rejected]
        return applied

    def confirm(self, applied: Applied) -> None:
        """Count what a committed batch applied (call after the commit only)."""
        for name, count in applied.by_writer.items():
            metrics.WRITER_APPLIED.labels(name).inc(count)
