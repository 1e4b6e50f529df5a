"""Every PostgreSQL query of the Grafana dashboard runs against a migrated database holding
development stories, as a role that may read schema ``analytics`` only, and shows data.

Grafana's macros and the ``project`` variable are replaced as Grafana replaces them. The
provisioning and the Prometheus panels are checked in ``tests/unit/test_grafana_dashboard.py``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from devtrail.consumers.aggregates import AggregatesWriter
from devtrail.consumers.checkpoint import WriterHost
from devtrail.consumers.clean import CLEAN_ROWS, CleanRow, encode_rows, event_to_row
from devtrail.consumers.processor.correlate import Correlator
from devtrail.consumers.projections import PROJECTIONS
from devtrail.consumers.sink import EventSink
from devtrail.producers.stories import Stories
from tests.unit.test_grafana_dashboard import dashboard, targets_of

pytestmark = pytest.mark.integration

POSTGRES = "grafana-postgresql-datasource"
#: The dashboard's time range in these tests, as Grafana writes it into a query (RFC 3339, UTC).
TIME_TO = datetime.now(UTC)
TIME_FROM = TIME_TO - timedelta(days=30)
#: The "All" value of the ``project`` variable (its ``allValue``, inserted as it is).
ALL_PROJECTS = "'__all'"
RELATION = re.compile(r"\b(?:FROM|JOIN)\s+(?!\()([\w.\"]+)", re.IGNORECASE)
#: Functions whose arguments say FROM without naming a relation.
FROM_IN_ARGUMENTS = re.compile(r"\b(?:extract|substring|trim|overlay)\s*\([^()]*\)", re.IGNORECASE)


def grafana_time(at: datetime) -> str:
    return "'" + at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "'"


def interpolate(sql: str, project: str) -> str:
    """``sql`` as Grafana's PostgreSQL data source sends it for the last 30 days and ``project``
    (the variable's value as Grafana formats it: quoted values joined by commas, or ``'__all'``)."""
    sql = re.sub(
        r"\$__timeFilter\(([^)]*)\)",
        lambda m: f"{m[1]} BETWEEN {grafana_time(TIME_FROM)} AND {grafana_time(TIME_TO)}",
        sql,
    )
    sql = sql.replace("$__timeFrom()", grafana_time(TIME_FROM)).replace("$__timeTo()", grafana_time(TIME_TO))
    sql = re.sub(r"\$\{project\}|\$project\b", project, sql)
    assert "$" not in sql, f"a macro or variable this test does not know: {sql}"
    return sql


def panel_queries() -> list[tuple[str, str, str]]:
    """(panel title, format, SQL) of every PostgreSQL target."""
    return [(title, t["format"], t["rawSql"]) for title, t in targets_of(POSTGRES)]


def project_variable_query() -> str:
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "project"]
    assert variable["datasource"]["type"] == POSTGRES
    query = variable["query"]
    return query if isinstance(query, str) else str(query["rawSql"])


def processed(events: list[Any]) -> list[CleanRow]:
    """The events as the processors write them: references correlation fills in (a session's
    project and task on its LLM calls) included."""
    correlator = Correlator()
    encoded = []
    for event in events:
        found = correlator.observe(event)
        row = event_to_row(event) if found is None else event_to_row(event, found.values, found.attribution())
        encoded.append(orjson.dumps(row))
    return [row for row in CLEAN_ROWS.decode("clean", 0, 0, encode_rows(encoded)) if isinstance(row, CleanRow)]


async def store_stories(db: asyncpg.Connection) -> set[str]:
    """Store a few days of stories, apply every projection and aggregate; return their projects."""
    events = Stories("grafana", seed=11, projects=2).events(3000)
    rows = processed(events)
    assert len(rows) == len(events)
    writers = WriterHost("writers", CLEAN_ROWS, [*(p() for p in PROJECTIONS), AggregatesWriter()])
    async with db.transaction():
        await EventSink().write(db, rows)
        applied = await writers.apply(db, rows, None)
    assert applied.refusals == []
    return {row.project_id for row in rows if row.project_id}


@pytest.fixture
async def analytics_reader(db: asyncpg.Connection) -> AsyncIterator[str]:
    """A role that may read the views of schema ``analytics`` and nothing else, as Grafana's
    user should be."""
    role = f"grafana_{uuid.uuid4().hex[:10]}"
    await db.execute(f'CREATE ROLE "{role}" NOLOGIN')
    await db.execute(f'GRANT USAGE ON SCHEMA analytics TO "{role}"')
    await db.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO "{role}"')
    try:
        yield role
    finally:
        await db.execute(f'DROP OWNED BY "{role}"')
        await db.execute(f'DROP ROLE "{role}"')


async def run_as(db: asyncpg.Connection, role: str, sql: str) -> list[asyncpg.Record]:
    async with db.transaction():
        await db.execute(f'SET LOCAL ROLE "{role}"')
        rows: list[asyncpg.Record] = await db.fetch(sql)
    return rows


def relations(sql: str) -> set[str]:
    """The tables and views ``sql`` reads (after FROM and JOIN)."""
    return {name.lower() for name in RELATION.findall(FROM_IN_ARGUMENTS.sub("", sql))}


def has_data(rows: list[asyncpg.Record]) -> bool:
    return any(value is not None for row in rows for key, value in row.items() if key != "time")


async def analytics_views(db: asyncpg.Connection, having_column: str | None = None) -> set[str]:
    """The views of schema ``analytics`` (those with the column ``having_column``)."""
    found = await db.fetch(
        "SELECT 'analytics.' || table_name FROM information_schema.columns"
        " WHERE table_schema = 'analytics' AND (column_name = $1 OR $1 IS NULL)",
        having_column,
    )
    return {row[0] for row in found}


async def test_every_query_reads_analytics_views_only_and_shows_the_stories(
    db: asyncpg.Connection, analytics_reader: str
) -> None:
    projects = await store_stories(db)
    project = sorted(projects)[0]
    views, filterable = await analytics_views(db), await analytics_views(db, "project_id")
    assert len(panel_queries()) >= 15
    for title, format_, sql in panel_queries():
        read = relations(sql)
        assert read, (title, "names no relation")
        assert all(name.startswith("analytics.") for name in read), (title, read)
        assert read <= views, (title, "no such view", read - views)
        assert (read & filterable != set()) == ("$project" in sql), (title, "a view with project_id, unfiltered")
        for value in (ALL_PROJECTS, f"'{project}'", ",".join(f"'{p}'" for p in sorted(projects))):
            rows = await run_as(db, analytics_reader, interpolate(sql, value))
            assert has_data(rows), (title, value)
            if format_ == "time_series":
                assert next(iter(rows[0].keys())) == "time", title
                assert all(row["time"].tzinfo is not None for row in rows), title
        if "$project" in sql:
            assert not has_data(await run_as(db, analytics_reader, interpolate(sql, "'no-such-project'"))), title


async def test_the_project_variable_lists_the_projects(db: asyncpg.Connection, analytics_reader: str) -> None:
    projects = await store_stories(db)
    sql = project_variable_query()
    assert relations(sql) == {"analytics.activity_daily"}
    rows = await run_as(db, analytics_reader, interpolate(sql, ALL_PROJECTS))
    assert [row[0] for row in rows] == sorted(projects)


async def test_a_query_outside_analytics_is_refused_to_the_reader(
    db: asyncpg.Connection, analytics_reader: str
) -> None:
    """The role of these tests does stop a panel that reads the tables behind the views."""
    for table in ("events", "aggregates.activity_hourly", "projections.tasks"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await run_as(db, analytics_reader, f"SELECT count(*) FROM {table}")
    assert await run_as(db, analytics_reader, "SELECT count(*) FROM analytics.activity_hourly")


def test_interpolation_matches_what_grafana_sends() -> None:
    sql = interpolate("SELECT 1 WHERE $__timeFilter(bucket) AND x IN ($project) AND d < $__timeTo()::date", "'a','b'")
    start, end = grafana_time(TIME_FROM), grafana_time(TIME_TO)
    assert sql == f"SELECT 1 WHERE bucket BETWEEN {start} AND {end} AND x IN ('a','b') AND d < {end}::date"
    assert re.fullmatch(r"'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z'", end)
    with pytest.raises(AssertionError):
        interpolate("SELECT $__timeGroup(bucket, '1h')", "'a'")
    sql = "SELECT extract(epoch FROM a) FROM analytics.x c LEFT JOIN Analytics.Y r ON true, (SELECT 1) s"
    assert relations(sql) == {"analytics.x", "analytics.y"}
