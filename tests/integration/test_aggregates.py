"""The analyst aggregates against a real PostgreSQL: exact under copies, batching and order,
bounded claims, percentiles from mergeable bins, cost attributed through late links.

The pipeline-level checks (workers SIGKILLed under load, a paused broker) are the fault tests
(``tests/integration/test_faults.py``, ``devtrail.bench.faults``): their final check compares every
aggregate here with a GROUP BY over ``events`` (``devtrail.consumers.aggregates.verify``).
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from devtrail.consumers.aggregates import AggregatesWriter
from devtrail.consumers.aggregates.claims import partition_name
from devtrail.consumers.aggregates.reduce import LATENCY_BOUNDS
from devtrail.consumers.aggregates.verify import aggregate_mismatches_by_table
from devtrail.consumers.checkpoint import WriterHost
from devtrail.consumers.clean import CLEAN_ROWS, CleanRow
from devtrail.consumers.projections import PROJECTIONS
from devtrail.consumers.sink import EventSink
from devtrail.producers import Workload
from devtrail.producers.stories import Stories
from devtrail.schemas.events import (
    LinearIssueLink,
    LinkCreated,
    LlmCalled,
    LlmCalledPayload,
    SessionStarted,
    SessionStartedPayload,
    TaskCreated,
    TaskCreatedPayload,
)
from devtrail.schemas.ids import uuid7_from
from tests.integration.pipeline import clean

pytestmark = pytest.mark.integration

TODAY = datetime.now(UTC).date()


def host(aggregates: AggregatesWriter | None = None) -> WriterHost[CleanRow]:
    return WriterHost("writers", CLEAN_ROWS, [*(p() for p in PROJECTIONS), aggregates or AggregatesWriter()])


async def apply(
    db: asyncpg.Connection, rows: list[CleanRow], sizes: list[int], writers: WriterHost[CleanRow] | None = None
) -> None:
    """Apply ``rows`` in batches of the given sizes (cycled), one transaction each, as the writer host does."""
    writers = writers or host()
    start, turn = 0, 0
    while start < len(rows):
        stop = start + sizes[turn % len(sizes)]
        batch = rows[start:stop]
        async with db.transaction():
            prepared = writers.prepare(batch) if turn % 2 else None  # both paths: prepared and direct
            applied = await writers.apply(db, batch, prepared)
        assert applied.refusals == []
        start, turn = stop, turn + 1


async def store(db: asyncpg.Connection, rows: list[CleanRow]) -> None:
    async with db.transaction():
        await EventSink().write(db, rows)


async def total(db: asyncpg.Connection, sql: str) -> Any:
    return await db.fetchval(sql)


async def test_every_aggregate_equals_a_group_by_over_events_whatever_the_copies_and_batches(
    db: asyncpg.Connection,
) -> None:
    workload = list(Workload("agg", seed=3).events(4000))
    stories = Stories("aggs", seed=5, session_calls=(3, 9)).events(2000)
    events = workload + stories
    rows = clean(events)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    copies = random.Random(2).sample(rows, len(rows) // 10)
    await store(db, rows)
    # Copies in the same batch, in later batches, and the whole stream replayed once more.
    await apply(db, shuffled + copies, [1, 7, 500, 2000, 64])
    mismatches = await aggregate_mismatches_by_table(db)
    assert mismatches == dict.fromkeys(mismatches, 0)
    assert await total(db, "SELECT sum(events) FROM analytics.activity_hourly") == len(rows)
    await apply(db, rows, [3000])
    assert await aggregate_mismatches_by_table(db) == mismatches
    assert await total(db, "SELECT sum(events) FROM analytics.activity_daily") == len(rows)
    # Something was counted in every table, so the comparisons compared something.
    for table in ("activity_hourly", "llm_usage_hourly", "llm_latency_hourly", "session_days", "llm_cost_daily"):
        assert await total(db, f"SELECT count(*) FROM aggregates.{table}") > 0, table
    assert await total(db, "SELECT count(*) FROM analytics.cost_by_task") > 0
    assert await total(db, "SELECT count(*) FROM analytics.cost_by_requirement") > 0
    assert await total(db, "SELECT sum(errors) FROM analytics.activity_daily") > 0


async def test_views_show_missing_references_as_null(db: asyncpg.Connection) -> None:
    call = LlmCalled(
        source="svc",
        occurred_at=datetime.now(UTC),
        payload=LlmCalledPayload(provider="p", model="m", input_tokens=1, output_tokens=1, latency_ms=10),
    )
    rows = clean([call])
    await store(db, rows)
    await apply(db, rows, [1])
    for view in ("activity_hourly", "activity_daily", "llm_usage_hourly", "llm_usage_daily"):
        row = await db.fetchrow(f"SELECT project_id, agent_id FROM analytics.{view}")
        assert row is not None and (row["project_id"], row["agent_id"]) == (None, None), view
    assert await db.fetchval("SELECT count(*) FROM analytics.activity_hourly WHERE project_id = ''") == 0


def _llm_at(at: datetime, latency_ms: int, cost: float = 0.001) -> LlmCalled:
    payload = LlmCalledPayload(
        provider="anthropic", model="m1", input_tokens=10, output_tokens=5, cost_usd=cost, latency_ms=latency_ms
    )
    return LlmCalled(source="svc", occurred_at=at, agent_id="A1", project_id="P1", payload=payload)


def nearest_rank(ordered: list[int], percent: int) -> int:
    """The nearest-rank percentile: the ceil(percent/100 * n)-th smallest value."""
    return ordered[-(-percent * len(ordered) // 100) - 1]


def _bin_upper(ms: float) -> int:
    """The upper bound of the bin holding ``ms``."""
    return next(bound for bound in LATENCY_BOUNDS if bound > ms)


async def test_latency_percentiles_come_from_merged_bins_within_five_percent(db: asyncpg.Connection) -> None:
    rng = random.Random(9)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    latencies = {hour: [int(rng.lognormvariate(6, 1)) for _ in range(200)] for hour in range(0, 24, 3)}
    events = [
        _llm_at(day + timedelta(hours=h, minutes=i % 60), ms)
        for h, values in latencies.items()
        for i, ms in enumerate(values)
    ]
    rows = clean(events)
    await store(db, rows)
    await apply(db, rows, [97])
    for h, values in latencies.items():
        row = await db.fetchrow(
            "SELECT calls, latency_calls, latency_p50_ms, latency_p95_ms, latency_p99_ms"
            " FROM analytics.llm_usage_hourly WHERE bucket = $1",
            day + timedelta(hours=h),
        )
        ordered = sorted(values)
        assert row["calls"] == row["latency_calls"] == len(values)
        for column, percent in (("latency_p50_ms", 50), ("latency_p95_ms", 95), ("latency_p99_ms", 99)):
            true = nearest_rank(ordered, percent)
            assert row[column] == _bin_upper(true), (h, column)
            assert true <= row[column] <= max(true * 1.05 + 1, true + 2), (h, column)
    everything = sorted(ms for values in latencies.values() for ms in values)
    daily = await db.fetchrow("SELECT calls, latency_p50_ms, latency_p99_ms FROM analytics.llm_usage_daily")
    assert daily["calls"] == len(everything)
    # The day's percentiles are those of all its calls (merged bins), not an average of the hours'.
    assert daily["latency_p50_ms"] == _bin_upper(nearest_rank(everything, 50))
    assert daily["latency_p99_ms"] == _bin_upper(nearest_rank(everything, 99))
    # Any window: the hours starting in [since's hour, until), merged, per provider and model.
    window = sorted(ms for h, values in latencies.items() if 5 <= h < 16 for ms in values)  # hours 6, 9, 12, 15
    found = await db.fetch(
        "SELECT * FROM analytics.llm_latency($1, $2, 'P1')",
        day + timedelta(hours=5, minutes=30),
        day + timedelta(hours=16),
    )
    assert [(r["provider"], r["model"], r["calls"]) for r in found] == [("anthropic", "m1", len(window))]
    for column, percent in (("latency_p50_ms", 50), ("latency_p95_ms", 95), ("latency_p99_ms", 99)):
        assert found[0][column] == _bin_upper(nearest_rank(window, percent)), column
    assert await db.fetch("SELECT * FROM analytics.llm_latency($1, $2, 'P2')", day, day + timedelta(days=1)) == []
    assert (await db.fetchrow("SELECT calls FROM analytics.llm_latency($1, agent => 'A1')", day))["calls"] == len(
        everything
    )


async def test_a_windows_latency_from_daily_and_hourly_bins_equals_the_hours_merged(db: asyncpg.Connection) -> None:
    """Migration 0013 reads whole UTC days from the daily bins: over random windows (partial
    days at either end, none whole, starting on the hour or at midnight) every figure equals
    0011's merge of the window's hourly bins."""
    import importlib

    rng = random.Random(13)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=4)
    events = [
        _llm_at(start + timedelta(minutes=rng.randrange(4 * 24 * 60)), int(rng.lognormvariate(6, 1))).model_copy(
            update={"project_id": rng.choice(["P1", "P2"]), "agent_id": rng.choice(["A1", "A2"])}
        )
        for _ in range(3000)
    ]
    rows = clean(events)
    await store(db, rows)
    await apply(db, rows, [len(rows)])
    hourly_only = importlib.import_module("devtrail.migrations.versions.0011_latency_window").FUNCTION
    await db.execute(hourly_only.replace("analytics.llm_latency(", "pg_temp.hours_merged(", 1))
    for _ in range(40):
        since = start + timedelta(minutes=rng.randrange(-600, 4 * 24 * 60))
        if rng.random() < 0.3:
            since = since.replace(minute=0, hour=rng.choice([0, since.hour]))
        until = since + timedelta(minutes=rng.choice([rng.randrange(1, 300), rng.randrange(60, 4 * 24 * 60)]))
        who = (rng.choice([None, "P1", "P2"]), rng.choice([None, "A1"]))
        sql = "SELECT * FROM {}($1, $2, $3, $4) ORDER BY provider, model"
        expected = await db.fetch(sql.format("pg_temp.hours_merged"), since, until, *who)
        found = await db.fetch(sql.format("analytics.llm_latency"), since, until, *who)
        assert [tuple(r) for r in found] == [tuple(r) for r in expected], (since, until, who)


def _event_id(day: date, n: int) -> Any:
    millis = int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp() * 1000)
    return uuid7_from(millis, n)


async def test_claims_are_bounded_and_a_copy_past_the_window_is_counted_again(db: asyncpg.Connection) -> None:
    today = {"now": TODAY}
    writer = AggregatesWriter(dedup_days=2, today=lambda: today["now"])
    writers = host(writer)
    made = TODAY - timedelta(days=1)
    events = [_llm_at(datetime.now(UTC), 100).model_copy(update={"event_id": _event_id(made, n)}) for n in range(50)]
    rows = clean(events)
    await apply(db, rows, [50], writers)
    partitions = {r[0] for r in await db.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'claims_2%'")}
    assert partition_name(made) in partitions and partition_name(TODAY + timedelta(days=2)) in partitions
    assert await total(db, f"SELECT count(*) FROM aggregates.{partition_name(made)}") == 50
    await apply(db, rows, [10], writers)  # copies within the window: nothing counted
    assert await total(db, "SELECT sum(calls) FROM aggregates.llm_usage_daily") == 50

    # Four days later the day the ids were made is past the window (2 days + 1 of grace): its
    # partition is dropped, and a copy arriving now is claimed late and counted again.
    today["now"] = TODAY + timedelta(days=4)
    await apply(db, rows[:5], [5], writers)
    partitions = {r[0] for r in await db.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'claims_2%'")}
    assert partition_name(made) not in partitions
    assert partition_name(today["now"] + timedelta(days=2)) in partitions
    assert await total(db, "SELECT sum(calls) FROM aggregates.llm_usage_daily") == 55
    assert await total(db, "SELECT count(*) FROM aggregates.claims_late") == 5
    await apply(db, rows[:5], [5], writers)  # late claims recognise copies too
    assert await total(db, "SELECT sum(calls) FROM aggregates.llm_usage_daily") == 55
    today["now"] = TODAY + timedelta(days=8)  # late claims pruned by the day they were made
    await apply(db, rows[5:6], [1], writers)
    assert await total(db, "SELECT count(*) FROM aggregates.claims_late") == 1


async def test_an_event_arriving_late_is_counted_in_its_own_bucket_once(db: asyncpg.Connection) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    late = [_llm_at(old, 50).model_copy(update={"event_id": _event_id(old.date(), n)}) for n in range(3)]
    rows = clean(late)
    await store(db, rows)
    await apply(db, rows + rows, [2])
    assert await total(db, "SELECT count(*) FROM aggregates.claims_late") == 3
    row = await db.fetchrow("SELECT bucket, calls FROM analytics.llm_usage_daily")
    assert (row["bucket"], row["calls"]) == (old.date(), 3)
    assert await aggregate_mismatches_by_table(db) == dict.fromkeys(await aggregate_mismatches_by_table(db), 0)


async def test_cost_is_attributed_to_the_task_when_the_link_arrives_after_the_calls(db: asyncpg.Connection) -> None:
    t0 = datetime.now(UTC) - timedelta(hours=2)
    calls = [
        LlmCalled(
            source="agent",
            occurred_at=t0 + timedelta(minutes=i),
            session_id="S1",
            payload=LlmCalledPayload(provider="p", model="m", input_tokens=100, output_tokens=10, cost_usd=0.25),
        )
        for i in range(4)
    ]
    task = TaskCreated(
        source="svc",
        occurred_at=t0,
        task_id="T1",
        requirement_id="R1",
        project_id="P1",
        payload=TaskCreatedPayload(title="t"),
    )
    link = LinkCreated(
        source="svc",
        occurred_at=t0 + timedelta(minutes=30),
        task_id="T1",
        payload=LinearIssueLink(external_id="ENG-7"),
    )
    session_link = LinkCreated(
        source="agent",
        occurred_at=t0 + timedelta(minutes=31),
        session_id="S1",
        task_id="T1",
        payload=LinearIssueLink(external_id="ENG-7"),
    )
    first, then = clean(calls), clean([task, link, session_link])
    await store(db, first + then)
    await apply(db, first, [4])
    assert await total(db, "SELECT count(*) FROM analytics.cost_by_task") == 0
    await apply(db, then, [3])  # the session -> task link arrives after the calls
    row = await db.fetchrow("SELECT * FROM analytics.cost_by_task WHERE task_id = 'T1'")
    assert (row["calls"], row["cost_usd"], row["requirement_id"], row["project_id"]) == (4, 1, "R1", "P1")
    issue = await db.fetchrow("SELECT * FROM analytics.cost_by_linear_issue WHERE linear_issue = 'ENG-7'")
    assert (issue["calls"], issue["cost_usd"]) == (4, 1)
    requirement = await db.fetchrow("SELECT * FROM analytics.cost_by_requirement WHERE requirement_id = 'R1'")
    assert (requirement["calls"], requirement["tasks"]) == (4, 1)
    mismatches = await aggregate_mismatches_by_table(db)
    assert mismatches == dict.fromkeys(mismatches, 0)


async def test_cost_without_a_requirement_on_the_calls_gets_the_tasks_else_the_sessions(
    db: asyncpg.Connection,
) -> None:
    """The three ways a day's cost of a task finds its requirement (migration 0012's branches):
    on the calls, through the task, through the session; each found by a lookup too."""
    t0 = datetime.now(UTC) - timedelta(hours=2)

    def call(task_id: str, session_id: str, requirement_id: str | None, cost: float) -> LlmCalled:
        return LlmCalled(
            source="agent",
            occurred_at=t0,
            project_id="P1",
            task_id=task_id,
            session_id=session_id,
            requirement_id=requirement_id,
            payload=LlmCalledPayload(provider="p", model="m", input_tokens=10, output_tokens=1, cost_usd=cost),
        )

    def task(task_id: str, requirement_id: str | None) -> TaskCreated:
        return TaskCreated(
            source="svc",
            occurred_at=t0,
            task_id=task_id,
            requirement_id=requirement_id,
            project_id="P1",
            payload=TaskCreatedPayload(title=task_id),
        )

    events = [
        call("T1", "S1", "R1", 0.5),  # on the call
        call("T2", "S2", None, 0.25),  # through its task
        task("T2", "R2"),
        call("T3", "S3", None, 2.0),  # its task has none: through its session
        task("T3", None),
        SessionStarted(
            source="agent",
            occurred_at=t0,
            session_id="S3",
            requirement_id="R3",
            project_id="P1",
            payload=SessionStartedPayload(),
        ),
        call("T4", "S4", None, 4.0),  # none anywhere: no requirement
    ]
    rows = clean(events)
    await store(db, rows)
    await apply(db, rows, [len(rows)])
    by_requirement = {
        r["requirement_id"]: (r["calls"], r["cost_usd"])
        for r in await db.fetch("SELECT * FROM analytics.cost_by_requirement")
    }
    assert by_requirement == {"R1": (1, Decimal("0.5")), "R2": (1, Decimal("0.25")), "R3": (1, Decimal("2.0"))}
    for requirement, figures in by_requirement.items():
        one = await db.fetchrow("SELECT * FROM analytics.cost_by_requirement WHERE requirement_id = $1", requirement)
        assert (one["calls"], one["cost_usd"]) == figures
    no_requirement = await db.fetchrow("SELECT * FROM analytics.cost_by_task WHERE task_id = 'T4'")
    assert (no_requirement["requirement_id"], no_requirement["cost_usd"]) == (None, Decimal("4.0"))
    mismatches = await aggregate_mismatches_by_table(db)
    assert mismatches == dict.fromkeys(mismatches, 0)


async def test_delivery_weekly_gives_the_dora_figures_of_the_story(db: asyncpg.Connection) -> None:
    from tests.integration.test_projections import story

    rows = clean(story())
    await store(db, rows)
    await apply(db, rows, [len(rows)])
    per_project = [dict(r) for r in await db.fetch("SELECT * FROM analytics.delivery_weekly")]
    assert {r.pop("project_id") for r in per_project} == {"P1"}  # every event of the story names P1
    everywhere = [dict(r) for r in await db.fetch("SELECT * FROM analytics.delivery_weekly_all")]
    assert sorted(per_project, key=str) == sorted(everywhere, key=str)  # one project: the same figures
    found = {r["author_kind"]: r for r in everywhere}
    assert set(found) == {"both", "all"}  # PR and first commit by an agent, the merge commit by a person
    production = await db.fetch("SELECT * FROM analytics.production_deployments ORDER BY deployment_id")
    assert [(r["deployment_id"], r["project_id"], r["caused_failure"]) for r in production] == [
        ("D1", "P1", True),
        ("D2", "P1", True),
    ]
    assert production[1]["lead_time"] == timedelta(minutes=23)
    for row in found.values():
        assert row["week"] == date(2026, 11, 16)
        assert (row["deployments"], row["failed_deployments"]) == (1, 1)  # D2 succeeded, D1 failed
        assert row["deployments_per_day"] == Decimal("0.143")
        assert row["lead_time_p50"] == timedelta(minutes=23)  # first commit at 20 min, D2 done at 43
        assert row["change_failure_rate"] == 1  # D1 failed, D2 caused INC-1
        assert (row["incidents"], row["incidents_resolved"]) == (1, 1)
        assert row["time_to_restore_p50"] == timedelta(minutes=5)


async def test_the_migration_fills_the_project_of_deployments_and_incidents_already_stored(
    db: asyncpg.Connection, database_url: str
) -> None:
    """Deployments and incidents projected before revision 0010 get the project their stored
    events name: the same values the writers set."""
    import asyncio

    from devtrail import migrate
    from tests.integration.test_projections import story

    rows = clean(story())
    await store(db, rows)
    await apply(db, rows, [len(rows)])
    columns = "project_id, project_ref_at, project_ref_event_id"
    written = [
        list(await db.fetch(f"SELECT {columns} FROM projections.{t} ORDER BY 2, 3")) for t in TABLES_WITH_PROJECT
    ]
    assert all(r["project_id"] == "P1" for table in written for r in table) and all(written)
    await asyncio.to_thread(migrate.downgrade, database_url, "0009")
    assert await db.fetchval("SELECT to_regclass('analytics.delivery_weekly_all')") is None
    assert await db.fetchval("SELECT count(*) FROM analytics.delivery_weekly") == 2  # 0009's: no project
    await asyncio.to_thread(migrate.upgrade, database_url)
    filled = [list(await db.fetch(f"SELECT {columns} FROM projections.{t} ORDER BY 2, 3")) for t in TABLES_WITH_PROJECT]
    assert filled == written
    assert await db.fetchval("SELECT count(*) FROM analytics.delivery_weekly WHERE project_id = 'P1'") == 2


TABLES_WITH_PROJECT = ("deployments", "incidents")


async def test_rebuild_recomputes_from_events_and_claims_what_the_writers_have_not_applied(
    db: asyncpg.Connection, database_url: str
) -> None:
    from devtrail.consumers.aggregates.verify import rebuild_aggregates
    from devtrail.consumers.projections.rebuild import RebuildOptions

    rows = clean(list(Workload("rb", seed=4).events(3000)))
    applied, pending = rows[:2000], rows[2000:]
    await store(db, rows)  # the sink is ahead of the writers: 1,000 events stored, not yet applied
    await apply(db, applied, [500])
    # Damage: counts wrong, a row gone.
    some = "SELECT ctid FROM aggregates.activity_hourly LIMIT 3"
    await db.execute(f"UPDATE aggregates.activity_hourly SET events = events + 5 WHERE ctid IN ({some})")
    await db.execute(
        "DELETE FROM aggregates.llm_usage_daily WHERE ctid IN (SELECT ctid FROM aggregates.llm_usage_daily LIMIT 1)"
    )
    options = RebuildOptions(sink_group="s", writers_group="w", clean_topic="c", wait_timeout_s=5)
    report = await rebuild_aggregates(database_url, options)
    assert report.events == 3000 and report.rows["activity_hourly"] > 0
    assert report.vacuum_s is not None and "vacuumed and analyzed" in report.lines()[-1]
    mismatches = await aggregate_mismatches_by_table(db)
    assert mismatches == dict.fromkeys(mismatches, 0)
    # The writers catching up count nothing twice: the rebuild claimed the stored events.
    await apply(db, pending + applied[:100], [700])
    assert await aggregate_mismatches_by_table(db) == mismatches
    assert await total(db, "SELECT sum(events) FROM aggregates.activity_daily") == 3000


async def test_a_rebuild_while_the_sink_stores_counts_and_claims_the_same_events(
    db: asyncpg.Connection, database_url: str
) -> None:
    """Every table and the claims come from one snapshot of ``events``: what the sink stores
    during the rebuild is neither counted nor claimed, and the writers count it after."""
    from devtrail.consumers.aggregates.verify import rebuild_aggregates
    from devtrail.consumers.projections.rebuild import RebuildOptions

    stories = Stories("race", seed=9, session_calls=(3, 9)).events(12_000)
    rows = clean(stories + list(Workload("race", seed=9).events(12_000)))
    random.Random(9).shuffle(rows)
    before, during = rows[:16_000], rows[16_000:]
    await store(db, before)
    sink = await asyncpg.connect(database_url)
    stored_during = 0

    async def keep_storing() -> None:
        nonlocal stored_during
        for start in range(0, len(during), 40):
            await store(sink, during[start : start + 40])
            stored_during += len(during[start : start + 40])
            await asyncio.sleep(0.002)

    options = RebuildOptions(sink_group="s", writers_group="w", clean_topic="c", wait_timeout_s=5)
    storing = asyncio.create_task(keep_storing())
    try:
        await asyncio.sleep(0.02)
        report = await rebuild_aggregates(database_url, options)
    finally:
        await storing
        await sink.close()
    assert stored_during > 0 and 16_000 <= report.events < len(rows)  # the sink was busy meanwhile
    await apply(db, rows, [900])  # the writers, catching up with everything
    mismatches = await aggregate_mismatches_by_table(db)
    assert mismatches == dict.fromkeys(mismatches, 0)
    assert await total(db, "SELECT sum(events) FROM aggregates.activity_daily") == len(rows)


async def test_the_rebuild_reads_an_ids_day_as_the_writer_does(db: asyncpg.Connection) -> None:
    from devtrail.consumers.aggregates.claims import id_day
    from devtrail.consumers.aggregates.verify import _ID_DAY

    ids = [
        str(uuid7_from(int(datetime(2026, 11, 26, 23, 59, 59, 999_000, tzinfo=UTC).timestamp() * 1000), 1)),
        str(uuid7_from(int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000), 2)),
        "00000000-0000-7000-8000-000000000000",  # the epoch
        "01890a5d-ac96-774b-0cce-b302099a8057",  # version 7, another variant
        "01890a5d-ac96-474b-bcce-b302099a8057",  # version 4
    ]
    sql = f"SELECT ({_ID_DAY.replace('e.event_id', '$1::uuid')})::text"
    for event_id in ids:
        day = id_day(event_id)
        assert await db.fetchval(sql, event_id) == (day.isoformat() if day else None), event_id
    # Year 10889: no Python date (None, claimed late), a day far outside any window in SQL (late too).
    assert id_day("ffffffff-ffff-7fff-bfff-ffffffffffff") is None
    assert await db.fetchval(sql, "ffffffff-ffff-7fff-bfff-ffffffffffff") == "10889-08-02"


async def test_rebuild_since_a_day_leaves_the_days_before_it(db: asyncpg.Connection, database_url: str) -> None:
    from devtrail.consumers.aggregates.verify import rebuild_aggregates
    from devtrail.consumers.projections.rebuild import RebuildOptions

    now = datetime.now(UTC)
    events = [_llm_at(now - timedelta(days=d), 100) for d in (0, 0, 3, 3, 3)]
    rows = clean(events)
    await store(db, rows)
    await apply(db, rows, [5])
    await db.execute("UPDATE aggregates.llm_usage_daily SET calls = calls + 100")
    options = RebuildOptions(sink_group="s", writers_group="w", clean_topic="c", wait_timeout_s=5)
    report = await rebuild_aggregates(database_url, options, since=now - timedelta(days=1))
    assert report.events == 2
    days = {r["bucket"]: r["calls"] for r in await db.fetch("SELECT bucket, calls FROM aggregates.llm_usage_daily")}
    assert days == {now.date(): 2, (now - timedelta(days=3)).date(): 103}  # the older day kept as it was
