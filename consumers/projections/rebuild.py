"""Recompute every projection from ``events``, exactly, while the pipeline runs.

One transaction:

1. ``LOCK`` the projection tables ``IN EXCLUSIVE MODE``, in the order the writers write them
   (so a writer batch holding some of them finishes first instead of deadlocking). Analysts'
   ``SELECT``s go on and see the old rows until the commit; the writer host's next batch
   blocks, and resumes after it (its writes are idempotent, so applying again what the
   rebuild applied changes nothing).
2. Wait until the sink's stored offsets are at or past the writers' on every clean-topic
   partition: every event the writers applied is then in ``events``. The writers cannot
   move on meanwhile (they wait for the lock); the sink does.
3. ``DELETE`` the projection rows (not ``TRUNCATE``, which would block the readers).
4. Replay ``events`` in ``(occurred_at, event_id)`` order, through a server-side cursor, in
   batches, through the same writers (``devtrail.consumers.poison.write_isolating``, as the writer
   host: a row PostgreSQL refuses is skipped for that writer, and counted).
5. Commit.

Events that retention dropped are gone from the projections after a rebuild.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.poison import write_isolating
from devtrail.consumers.projections import PROJECTIONS, ProjectionWriter
from devtrail.consumers.projections.errors import SinkBehindError

_BEHIND = """
SELECT w.partition, s.next_offset AS sink, w.next_offset AS writers
FROM consumer_offsets w
LEFT JOIN consumer_offsets s
  ON s.consumer_group = $2 AND s.topic = w.topic AND s.partition = w.partition
WHERE w.consumer_group = $1 AND w.topic = $3 AND (s.next_offset IS NULL OR s.next_offset < w.next_offset)
ORDER BY w.partition
"""
_ESTIMATE = """
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass
"""
_REPLAY = """
DECLARE projections_replay NO SCROLL CURSOR FOR
SELECT event_id::text, occurred_at, event_type, schema_version, source, project_id, agent_id, session_id,
       task_id, requirement_id, correlation_id, causation_id::text, payload::text, attribution::text
FROM events ORDER BY occurred_at, event_id
"""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RebuildOptions:
    """How a rebuild runs.

    Args:
        sink_group: the sink's consumer group (``SinkSettings.sink_group``).
        writers_group: the writer host's group (``WritersSettings.writers_group``).
        clean_topic: the topic both read.
        batch_events: events replayed per batch.
        wait_timeout_s: how long to wait for the lock, then for the sink to catch up.
        poll_s: pause between two looks at the offsets.
    """

    sink_group: str
    writers_group: str
    clean_topic: str
    batch_events: int = 10_000
    wait_timeout_s: float = 300.0
    poll_s: float = 0.5


@dataclass
class RebuildReport:
    """What a rebuild did.

    Attributes:
        events: events replayed.
        seconds: time from the lock to the commit.
        waited_s: of which waiting for the lock and for the sink.
        refused: per writer, rows PostgreSQL refused (dead letters in the incremental path).
        tables: the tables rebuilt.
        vacuum_s: the ``VACUUM (ANALYZE)`` after the commit (``rebuild``), not in ``seconds``.
    """

    events: int = 0
    seconds: float = 0.0
    waited_s: float = 0.0
    refused: dict[str, int] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    vacuum_s: float | None = None

    @property
    def events_per_second(self) -> float:
        replay_s = self.seconds - self.waited_s
        return self.events / replay_s if replay_s > 0 else 0.0

    def lines(self) -> list[str]:
        """The report for people."""
        lines = [
            f"rebuilt {len(self.tables)} projection tables from {self.events:,} events in {self.seconds:.1f}s"
            f" ({self.events_per_second:,.0f} events/s replayed; {self.waited_s:.1f}s waiting for locks and the sink)"
        ]
        lines += [f"{writer}: {count} rows refused by PostgreSQL, skipped" for writer, count in self.refused.items()]
        if self.vacuum_s is not None:
            lines.append(f"vacuumed and analyzed them in {self.vacuum_s:.1f}s")
        return lines


async def rebuild_projections(
    conn: asyncpg.Connection,
    options: RebuildOptions,
    writers: Sequence[ProjectionWriter] | None = None,
    progress: Progress | None = None,
) -> RebuildReport:
    """Recompute the projections of ``writers`` (all by default) from ``events``, in one transaction.

    Args:
        conn: a connection outside any transaction.
        options: groups, topic, batch size, timeouts.
        writers: the projection writers to rebuild.
        progress: called with a line of progress now and then.

    Raises:
        SinkBehindError: the sink did not catch up with the writers in time (nothing changed).
        asyncpg.LockNotAvailableError: the tables stayed locked by others too long (nothing changed).
    """
    chosen = list(writers) if writers is not None else [projection() for projection in PROJECTIONS]
    say = progress or (lambda _line: None)
    report = RebuildReport(tables=[table.name for writer in chosen for table in writer.tables])
    started = time.monotonic()
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(options.wait_timeout_s * 1000)}")
        say(f"locking {len(report.tables)} projection tables (writers pause; readers go on)...")
        await conn.execute(f"LOCK TABLE {', '.join(report.tables)} IN EXCLUSIVE MODE")
        await wait_for_sink(conn, options, say)
        report.waited_s = time.monotonic() - started
        for table in report.tables:
            await conn.execute(f"DELETE FROM {table}")  # noqa: S608 - names from code
        await _replay(conn, chosen, options.batch_events, report, say)
    report.seconds = time.monotonic() - started
    return report


async def wait_for_sink(conn: asyncpg.Connection, options: RebuildOptions, say: Progress) -> None:
    """Return once the sink's offsets are at or past the writers' on every clean-topic partition.

    Raises:
        SinkBehindError: not within ``options.wait_timeout_s``.
    """
    started = time.monotonic()
    while True:
        rows = await conn.fetch(_BEHIND, options.writers_group, options.sink_group, options.clean_topic)
        if not rows:
            return
        behind = {r["partition"]: (r["sink"], r["writers"]) for r in rows}
        waited = time.monotonic() - started
        if waited > options.wait_timeout_s:
            raise SinkBehindError(behind, waited)
        lag = sum(writers - (sink or 0) for sink, writers in behind.values())
        say(f"waiting for the sink to store what the writers applied: {len(behind)} partitions, {lag:,} offsets behind")
        await asyncio.sleep(options.poll_s)


async def _replay(
    conn: asyncpg.Connection, writers: list[ProjectionWriter], batch: int, report: RebuildReport, say: Progress
) -> None:
    estimate = await conn.fetchval(_ESTIMATE)
    await conn.execute(_REPLAY)
    replay_started = time.monotonic()
    while records := await conn.fetch(f"FETCH {int(batch)} FROM projections_replay"):
        rows = [CleanRow(*record) for record in records]
        for writer in writers:
            _, refused = await write_isolating(conn, writer, rows)
            if refused:
                report.refused[writer.name] = report.refused.get(writer.name, 0) + len(refused)
        report.events += len(rows)
        rate = report.events / max(time.monotonic() - replay_started, 1e-9)
        say(f"replayed {report.events:,} of ~{max(estimate, report.events):,} events ({rate:,.0f}/s)")
    await conn.execute("CLOSE projections_replay")


async def rebuild(database_url: str, options: RebuildOptions, progress: Progress | None = None) -> RebuildReport:
    """Connect to ``database_url`` and rebuild every projection (see ``rebuild_projections``)."""
    conn = await asyncpg.connect(database_url)
    try:
        report = await rebuild_projections(conn, options, progress=progress)
        (progress or (lambda _line: None))("committed; vacuuming and analyzing the rebuilt tables...")
        report.vacuum_s = await vacuum_analyze(conn, report.tables)
        return report
    finally:
        await conn.close()


async def vacuum_analyze(conn: asyncpg.Connection, tables: Sequence[str]) -> float:
    """``VACUUM (ANALYZE)`` the tables a rebuild rewrote (outside any transaction); return the seconds.

    A rebuild rewrites every row: until a vacuum marks their pages all-visible, the analysts'
    queries that read indexes alone (migrations 0014, 0016) read the table too, two to four
    times slower at 10,000,000 events; and the planner needs the new statistics. Autovacuum
    would get there, later.
    """
    started = time.monotonic()
    await conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
    return time.monotonic() - started
