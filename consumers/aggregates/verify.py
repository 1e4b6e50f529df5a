"""Every aggregate computed from ``events`` in SQL: to check the incremental tables, and to rebuild them.

``TRUTH`` holds, per table of schema ``aggregates``, the ``SELECT`` giving its rows from
``events`` (a ``GROUP BY``), with a ``{since}`` predicate on ``e.occurred_at``. The same
statements serve:

* ``aggregate_mismatches_by_table``: each table ``FULL JOIN``ed with its truth; a key whose
  figures differ, or that one side lacks, is a mismatch. For tests, the fault benchmark and
  operators after an incident. Run it drained: while events are in flight, the sink and the
  writer host are at different offsets.
* ``rebuild_aggregates`` (``devtrail aggregates rebuild``): the tables' rows from a day on
  replaced by their truth, while the pipeline runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg

from devtrail.consumers.aggregates.claims import Claims, id_day_sql
from devtrail.consumers.aggregates.reduce import LATENCY_BOUNDS
from devtrail.consumers.projections.delivery import MISMATCHES as DELIVERY_MISMATCHES
from devtrail.consumers.projections.rebuild import RebuildOptions, vacuum_analyze, wait_for_sink

_HOUR = "date_trunc('hour', e.occurred_at, 'UTC')"
_DAY = "(e.occurred_at AT TIME ZONE 'UTC')::date"
_ERROR = (
    "(e.event_type IN ('agent.error', 'task.failed', 'deployment.failed')"
    " OR (e.event_type = 'tool.called' AND e.payload -> 'success' = 'false'::jsonb))"
)
_REFS = "coalesce(e.project_id, '') AS project_id, coalesce(e.agent_id, '') AS agent_id"
_MODEL = "e.payload ->> 'provider' AS provider, e.payload ->> 'model' AS model"
_USAGE = (
    "count(*) AS calls, sum((e.payload ->> 'input_tokens')::bigint) AS input_tokens,"
    " sum((e.payload ->> 'output_tokens')::bigint) AS output_tokens,"
    " sum(coalesce((e.payload ->> 'cached_tokens')::bigint, 0)) AS cached_tokens,"
    " sum(coalesce((e.payload ->> 'cost_usd')::numeric, 0)) AS cost_usd"
)
#: The latency bin in SQL: ``width_bucket`` counts the bounds <= the latency, a binary search,
#: as ``devtrail.consumers.aggregates.reduce.latency_bin`` does with ``bisect_right``.
_BIN = (  # braces doubled: the statements go through str.format
    "width_bucket((e.payload ->> 'latency_ms')::bigint, '{{"
    + ",".join(str(bound) for bound in LATENCY_BOUNDS)
    + "}}'::bigint[])"
)
_LATENCY_FROM = (
    "FROM events e WHERE e.event_type = 'llm.called' AND jsonb_typeof(e.payload -> 'latency_ms') = 'number' AND {since}"
)


@dataclass(frozen=True)
class Truth:
    """An aggregate table, its key, its figures, and the SELECT computing its rows from ``events``."""

    table: str
    key: tuple[str, ...]
    figures: tuple[str, ...]
    select: str  # with ``{since}``: a predicate on ``e.occurred_at``
    #: For a rebuild, the same rows from a table rebuilt before it (a day from its hours:
    #: one scan of ``events`` less), with ``{since}``: a predicate on that table's ``bucket``.
    rebuild_select: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return self.key + self.figures


def _from_hours(hourly: str, key: tuple[str, ...], sums: tuple[str, ...]) -> str:
    rest = ", ".join(key[1:])
    return (
        f"SELECT (bucket AT TIME ZONE 'UTC')::date AS bucket, {rest}, {', '.join(f'sum({c})' for c in sums)}"
        f" FROM aggregates.{hourly} WHERE {{since}} GROUP BY 1, {rest}"
    )


def _activity(table: str, bucket: str, hourly: str | None = None) -> Truth:
    key, figures = ("bucket", "project_id", "agent_id", "event_type", "source"), ("events", "errors")
    return Truth(
        table,
        key,
        figures,
        f"SELECT {bucket} AS bucket, {_REFS}, e.event_type, e.source, count(*) AS events,"
        f" count(*) FILTER (WHERE {_ERROR}) AS errors FROM events e WHERE {{since}} GROUP BY 1, 2, 3, 4, 5",
        hourly and _from_hours(hourly, key, figures),
    )


def _usage(table: str, bucket: str, hourly: str | None = None) -> Truth:
    key = ("bucket", "project_id", "agent_id", "provider", "model")
    figures = ("calls", "input_tokens", "output_tokens", "cached_tokens", "cost_usd")
    return Truth(
        table,
        key,
        figures,
        f"SELECT {bucket} AS bucket, {_REFS}, {_MODEL}, {_USAGE}"
        " FROM events e WHERE e.event_type = 'llm.called' AND {since} GROUP BY 1, 2, 3, 4, 5",
        hourly and _from_hours(hourly, key, figures),
    )


def _latency(table: str, bucket: str, hourly: str | None = None) -> Truth:
    key = ("bucket", "project_id", "agent_id", "provider", "model", "bin")
    return Truth(
        table,
        key,
        ("calls",),
        f"SELECT {bucket} AS bucket, {_REFS}, {_MODEL}, {_BIN} AS bin, count(*) AS calls {_LATENCY_FROM}"
        " GROUP BY 1, 2, 3, 4, 5, 6",
        hourly and _from_hours(hourly, key, ("calls",)),
    )


#: Every table of schema ``aggregates`` the ``aggregates`` writer keeps, in the order it writes them.
TRUTH: tuple[Truth, ...] = (
    _activity("activity_hourly", _HOUR),
    _activity("activity_daily", _DAY, "activity_hourly"),
    _usage("llm_usage_hourly", _HOUR),
    _usage("llm_usage_daily", _DAY, "llm_usage_hourly"),
    _latency("llm_latency_hourly", _HOUR),
    _latency("llm_latency_daily", _DAY, "llm_latency_hourly"),
    Truth(
        "session_days",
        ("bucket", "project_id", "agent_id", "session_id"),
        (),
        f"SELECT DISTINCT {_DAY} AS bucket, {_REFS}, e.session_id FROM events e"
        " WHERE e.session_id IS NOT NULL AND {since}",
    ),
    Truth(
        "llm_cost_daily",
        ("bucket", "task_id", "requirement_id", "project_id", "session_id"),
        ("calls", "input_tokens", "output_tokens", "cached_tokens", "cost_usd"),
        f"SELECT {_DAY} AS bucket, e.task_id, coalesce(e.requirement_id, '') AS requirement_id,"
        f" coalesce(e.project_id, '') AS project_id, coalesce(e.session_id, '') AS session_id, {_USAGE}"
        " FROM events e WHERE e.event_type = 'llm.called' AND e.task_id IS NOT NULL AND {since}"
        " GROUP BY 1, 2, 3, 4, 5",
    ),
)

#: The cost views against the per-event attribution of ``analytics.event_attribution``, and the delivery facts.
VIEW_CHECKS: dict[str, str] = {
    "cost_by_task": """
        WITH truth AS (
            SELECT task_id, count(*) AS calls, sum(coalesce((payload ->> 'cost_usd')::numeric, 0)) AS cost_usd,
                   sum((payload ->> 'output_tokens')::bigint) AS output_tokens
            FROM analytics.event_attribution WHERE event_type = 'llm.called' AND task_id IS NOT NULL GROUP BY 1
        )
        SELECT count(*) FROM truth FULL JOIN analytics.cost_by_task a USING (task_id)
        WHERE (truth.calls, truth.cost_usd, truth.output_tokens) IS DISTINCT FROM (a.calls, a.cost_usd, a.output_tokens)
    """,
    "cost_by_requirement": """
        WITH truth AS (
            SELECT requirement_id, count(*) AS calls, sum(coalesce((payload ->> 'cost_usd')::numeric, 0)) AS cost_usd
            FROM analytics.event_attribution WHERE event_type = 'llm.called' AND requirement_id IS NOT NULL GROUP BY 1
        )
        SELECT count(*) FROM truth FULL JOIN analytics.cost_by_requirement a USING (requirement_id)
        WHERE (truth.calls, truth.cost_usd) IS DISTINCT FROM (a.calls, a.cost_usd)
    """,
    # the kept delivery facts against the view computing them (devtrail.consumers.projections.delivery)
    "production_deployments": DELIVERY_MISMATCHES,
}


def mismatch_sql(truth: Truth) -> str:
    """Keys of ``truth.table`` whose figures differ from its truth, or that only one side has."""
    present = ", true AS present_" if not truth.figures else ""
    mine = f"(SELECT *{present} FROM aggregates.{truth.table})" if present else f"aggregates.{truth.table}"
    if truth.figures:
        theirs, ours = ", ".join("t." + f for f in truth.figures), ", ".join("a." + f for f in truth.figures)
        differs = f"({theirs}) IS DISTINCT FROM ({ours})"
    else:
        differs = "t.present_ IS NULL OR a.present_ IS NULL"
    select = truth.select.format(since="true")
    if not truth.figures:
        select = f"SELECT *, true AS present_ FROM ({select}) s"
    return f"SELECT count(*) FROM ({select}) t FULL JOIN {mine} a USING ({', '.join(truth.key)}) WHERE {differs}"


async def aggregate_mismatches_by_table(conn: asyncpg.Connection) -> dict[str, int]:
    """Per aggregate table and cost view, how many keys differ from the figure computed from ``events``."""
    found = {truth.table: int(await conn.fetchval(mismatch_sql(truth))) for truth in TRUTH}
    found |= {name: int(await conn.fetchval(sql)) for name, sql in VIEW_CHECKS.items()}
    return found


Progress = Callable[[str], None]

_ID_DAY = id_day_sql("e.event_id")
#: The stored events a rebuild counts, with their ids' day, read once (in parallel).
_STORED_IDS = f"""
CREATE TEMP TABLE rebuild_ids ON COMMIT DROP AS
SELECT e.event_id, {_ID_DAY} AS id_day FROM events e WHERE {{since}}
"""
_CLAIM_STORED = """
INSERT INTO aggregates.claims (id_day, event_id)
SELECT id_day, event_id FROM rebuild_ids WHERE id_day BETWEEN $1 AND $2
ON CONFLICT DO NOTHING
"""
_CLAIM_STORED_LATE = """
INSERT INTO aggregates.claims_late (event_id, claimed_on)
SELECT event_id, $3::date FROM rebuild_ids WHERE id_day IS NULL OR id_day NOT BETWEEN $1 AND $2
ON CONFLICT DO NOTHING
"""
_FORGET_UNSTORED = [
    "DELETE FROM aggregates.claims c WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = c.event_id)",
    "DELETE FROM aggregates.claims_late c WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = c.event_id)",
]


@dataclass
class AggregatesRebuildReport:
    """What ``rebuild_aggregates`` did."""

    since: date | None = None
    events: int = 0
    seconds: float = 0.0
    waited_s: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    table_seconds: dict[str, float] = field(default_factory=dict)
    vacuum_s: float | None = None

    @property
    def events_per_second(self) -> float:
        work_s = self.seconds - self.waited_s
        return self.events / work_s if work_s > 0 else 0.0

    def lines(self) -> list[str]:
        scope = f"from {self.since.isoformat()} on" if self.since else "all of events"
        return [
            f"rebuilt {len(self.rows)} aggregate tables ({scope}) from {self.events:,} events in {self.seconds:.1f}s"
            f" ({self.events_per_second:,.0f} events/s; {self.waited_s:.1f}s waiting for locks and the sink)",
            "rows: " + ", ".join(f"{table} {count:,}" for table, count in self.rows.items()),
            *([] if self.vacuum_s is None else [f"vacuumed and analyzed them in {self.vacuum_s:.1f}s"]),
        ]


def _day(since: datetime | None) -> date | None:
    return None if since is None else since.astimezone(UTC).date()


async def rebuild_aggregates(
    database_url: str,
    options: RebuildOptions,
    since: datetime | None = None,
    dedup_days: int = 7,
    today: date | None = None,
    progress: Progress | None = None,
) -> AggregatesRebuildReport:
    """Replace the aggregates' rows from the UTC day of ``since`` (everything when None) by a
    GROUP BY over ``events``, in one transaction, while the pipeline runs.

    1. ``LOCK`` the claims and the tables ``IN EXCLUSIVE MODE``, in the order the writer
       writes them: readers go on (they see the old rows until the commit), the writer
       host's next batch waits;
    2. wait until the sink has stored everything the writers applied (``wait_for_sink``, on
       a second connection: the transaction has not taken its snapshot yet);
    3. delete the rows from that day on and insert their truth (``TRUTH``). The transaction
       is REPEATABLE READ: every table and the claims see the same stored events, while the
       sink goes on storing (what it stores meanwhile is neither counted nor claimed: the
       writers count it);
    4. claim every stored event from that day on, so that the writers, catching up, count
       none of them again; a full rebuild also forgets the claims of events not in ``events``
       (lost with an in-memory broker, or dropped by retention), so that if they are sent
       again they are counted when stored.

    Raises:
        SinkBehindError: the sink did not catch up in time (nothing changed).
        asyncpg.LockNotAvailableError: the tables stayed locked too long (nothing changed).
    """
    say = progress or (lambda _line: None)
    day = _day(since)
    report = AggregatesRebuildReport(since=day)
    today = today or datetime.now(UTC).date()
    claims = Claims(dedup_days)
    started = time.monotonic()
    since_sql = "true" if day is None else f"e.occurred_at >= '{day.isoformat()}T00:00:00+00:00'::timestamptz"
    conn = await asyncpg.connect(database_url)
    waiter = await asyncpg.connect(database_url)
    try:
        await _rebuild(conn, waiter, options, report, since_sql, claims, today, say, started)
        report.seconds = time.monotonic() - started
        say("committed; vacuuming and analyzing the rebuilt tables...")
        report.vacuum_s = await vacuum_analyze(conn, [f"aggregates.{truth.table}" for truth in TRUTH])
    finally:
        await waiter.close()
        await conn.close()
    return report


async def _rebuild(
    conn: asyncpg.Connection,
    waiter: asyncpg.Connection,
    options: RebuildOptions,
    report: AggregatesRebuildReport,
    since_sql: str,
    claims: Claims,
    today: date,
    say: Progress,
    started: float,
) -> None:
    day = report.since
    first, last = claims.window(today)
    # The snapshot is taken by the first query after the LOCK (neither LOCK nor SET takes one).
    async with conn.transaction(isolation="repeatable_read"):
        await conn.execute(f"SET LOCAL lock_timeout = {int(options.wait_timeout_s * 1000)}")
        say("locking the aggregate tables (the writers pause at their next batch; readers go on)...")
        tables = ", ".join(f"aggregates.{t.table}" for t in TRUTH)
        await conn.execute(f"LOCK TABLE aggregates.claims, aggregates.claims_late, {tables} IN EXCLUSIVE MODE")
        await wait_for_sink(waiter, options, say)
        report.waited_s = time.monotonic() - started
        midnight = None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)
        for truth in TRUTH:
            timer = time.monotonic()
            hourly = truth.table.endswith("_hourly")
            if day is None:
                await conn.execute(f"DELETE FROM aggregates.{truth.table}")
            else:
                await conn.execute(
                    f"DELETE FROM aggregates.{truth.table} WHERE bucket >= $1", midnight if hourly else day
                )
            columns = ", ".join(truth.columns)
            if truth.rebuild_select is not None:  # from the hours just rebuilt
                since_hours = "true" if midnight is None else f"bucket >= '{midnight.isoformat()}'::timestamptz"
                select = truth.rebuild_select.format(since=since_hours)
            else:
                # Computed into a temporary table first: CREATE TABLE AS may use parallel workers
                # (INSERT ... SELECT may not), and the rows then go in key order (about 2x).
                staged = f"rebuild_{truth.table}"
                await conn.execute(
                    f"CREATE TEMP TABLE {staged} ON COMMIT DROP AS {truth.select.format(since=since_sql)}"
                )
                select = f"SELECT {columns} FROM {staged} ORDER BY {', '.join(truth.key)}"
            inserted = await conn.execute(f"INSERT INTO aggregates.{truth.table} ({columns}) {select}")
            report.rows[truth.table] = int(inserted.split()[-1])
            report.table_seconds[truth.table] = round(time.monotonic() - timer, 2)
            say(f"{truth.table}: {report.rows[truth.table]:,} rows ({report.table_seconds[truth.table]:.1f}s)")
        timer = time.monotonic()
        await claims.ensure_partitions(conn, today)
        if day is None:
            for statement in _FORGET_UNSTORED:
                await conn.execute(statement)
        stored = await conn.execute(_STORED_IDS.format(since=since_sql))
        await conn.execute(_CLAIM_STORED, first, last)
        await conn.execute(_CLAIM_STORED_LATE, first, last, today)
        report.events = int(stored.split()[-1])
        report.table_seconds["claims"] = round(time.monotonic() - timer, 2)
        say(f"claimed {report.events:,} stored events ({report.table_seconds['claims']:.1f}s)")
