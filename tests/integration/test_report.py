"""``devtrail report`` against a real PostgreSQL filled with development stories: its figures
against the stories' truth and the views, the CLI's JSON, CSV and HTML, and the HTML drawn by
headless Chromium."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from devtrail.consumers.aggregates.reduce import LATENCY_BOUNDS
from devtrail.producers.stories import Stories, StoryTruth
from devtrail.report import Report, gather
from devtrail.report_html import BLUE, CHART_IDS, GREEN, RED
from tests.integration import chromium
from tests.integration.pipeline import clean
from tests.integration.test_aggregates import apply, store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING = datetime.now(UTC) - timedelta(days=30)


async def fill(db: asyncpg.Connection) -> StoryTruth:
    """Stories over about a week (one every 12 hours per project), stored and applied by every writer."""
    stories = Stories("rpt", seed=5, session_calls=(3, 9), story_gap=timedelta(hours=12))
    rows = clean(stories.events(3000))
    await store(db, rows)
    await apply(db, rows, [500])
    return stories.truth


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def money(value: float) -> Decimal:
    """A cost as the event carried it (orjson writes the shortest repr, as ``str`` does)."""
    return Decimal(str(value))


def nearest_rank_bin(latencies: list[float], percent: int) -> int:
    """The upper bound of the latency bin holding the nearest-rank percentile."""
    ordered = sorted(latencies)
    true = ordered[-(-percent * len(ordered) // 100) - 1]
    return next(bound for bound in LATENCY_BOUNDS if bound > true)


def pg_round(value: Decimal, places: int) -> Decimal:
    """PostgreSQL's round(numeric, places): halves away from zero."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def percentile_cont(values: list[timedelta], fraction: float) -> timedelta:
    """PostgreSQL's percentile_cont: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def test_the_summary_and_sections_agree_with_the_stories_and_the_views(db: asyncpg.Connection) -> None:
    truth = await fill(db)
    report = await gather(db, EVERYTHING, None)
    s = report.summary
    assert s.events == truth.events == await db.fetchval("SELECT count(*) FROM events")
    tools_failed = sum(1 for call in truth.tool_calls.values() if not call.success)
    counts = truth.event_counts
    errors = counts.get("agent.error", 0) + counts.get("task.failed", 0) + counts.get("deployment.failed", 0)
    assert s.errors == errors + tools_failed > 0
    calls = truth.llm_calls.values()
    assert (s.llm_calls, s.input_tokens, s.output_tokens, s.cached_tokens) == (
        len(calls),
        sum(c.input_tokens for c in calls),
        sum(c.output_tokens for c in calls),
        sum(c.cached_tokens for c in calls),
    )
    assert s.cost_usd == sum(money(c.cost_usd) for c in calls) > 0
    assert s.sessions == len(truth.sessions) > 0
    assert s.tasks_completed == sum(1 for t in truth.tasks.values() if t.completed_at is not None) > 0
    assert s.tasks_failed == sum(1 for t in truth.tasks.values() if t.failed_at is not None) > 0
    rows = await db.fetch("SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) FROM events GROUP BY 1")
    assert {d.day: d.events for d in report.events_by_day} == {r["day"]: r["count"] for r in rows}
    assert len(report.events_by_day) >= 3  # the stories span days: the chart has several bars
    check_models(report, truth)
    await check_latency_from_events(db, report)
    await check_requirements(db, report, truth)
    await check_tasks(db, report, truth)
    await check_agents(db, report, truth)
    await check_delivery(db, report, truth)


def check_models(report: Report, truth: StoryTruth) -> None:
    calls: defaultdict[tuple[str, str], list[Any]] = defaultdict(list)
    for call in truth.llm_calls.values():
        calls[(call.provider, call.model)].append(call)
    assert {(m.provider, m.model) for m in report.models} == set(calls)
    for m in report.models:
        mine = calls[(m.provider, m.model)]
        assert m.calls == len(mine)
        assert m.cost_usd == sum(money(c.cost_usd) for c in mine)
        assert m.input_tokens == sum(c.input_tokens for c in mine)
        p50, p95, p99 = m.latency_p50_ms, m.latency_p95_ms, m.latency_p99_ms
        assert p50 is not None and p95 is not None and p99 is not None
        assert p50 <= p95 <= p99
    costs = [m.cost_usd for m in report.models]
    assert costs == sorted(costs, reverse=True)


async def check_latency_from_events(db: asyncpg.Connection, report: Report) -> None:
    """The window's percentiles per model equal the nearest-rank values of the stored calls, binned."""
    rows = await db.fetch(
        "SELECT payload ->> 'provider' AS provider, payload ->> 'model' AS model,"
        " array_agg((payload ->> 'latency_ms')::numeric) AS latencies FROM events"
        " WHERE event_type = 'llm.called' AND payload ? 'latency_ms' GROUP BY 1, 2"
    )
    assert rows
    for row in rows:
        model = next(m for m in report.models if (m.provider, m.model) == (row["provider"], row["model"]))
        latencies = [int(v) if v == int(v) else float(v) for v in row["latencies"]]
        assert model.latency_p50_ms == nearest_rank_bin(latencies, 50)
        assert model.latency_p95_ms == nearest_rank_bin(latencies, 95)
        assert model.latency_p99_ms == nearest_rank_bin(latencies, 99)


async def check_requirements(db: asyncpg.Connection, report: Report, truth: StoryTruth) -> None:
    view = await db.fetch(
        "SELECT requirement_id, tasks, calls, input_tokens, output_tokens, cost_usd FROM analytics.cost_by_requirement"
        " ORDER BY cost_usd DESC, requirement_id LIMIT 10"
    )
    assert [
        (r.requirement_id, r.tasks, r.calls, r.input_tokens, r.output_tokens, r.cost_usd) for r in report.requirements
    ] == [tuple(r.values()) for r in view]
    assert report.requirements_total == await db.fetchval("SELECT count(*) FROM analytics.cost_by_requirement") > 10
    exact: defaultdict[str, Decimal] = defaultdict(Decimal)
    for call in truth.llm_calls.values():
        exact[call.requirement_id] += money(call.cost_usd)
    assert {r.requirement_id: r.cost_usd for r in report.requirements} == {
        key: exact[key] for key in sorted(exact, key=lambda k: (-exact[k], k))[:10]
    }
    for r in report.requirements:
        assert (r.title, r.status) == (
            truth.requirements[r.requirement_id].title,
            truth.requirements[r.requirement_id].status,
        )


async def check_tasks(db: asyncpg.Connection, report: Report, truth: StoryTruth) -> None:
    completed: defaultdict[date, list[timedelta]] = defaultdict(list)
    for t in truth.tasks.values():
        if t.completed_at is not None:
            assert t.started_at is not None
            completed[t.completed_at.astimezone(UTC).date()].append(t.completed_at - t.started_at)
    created = Counter(t.created_at.astimezone(UTC).date() for t in truth.tasks.values())
    assert {d.day: d.created for d in report.tasks_by_day if d.created} == created
    assert {d.day: d.completed for d in report.tasks_by_day if d.completed} == {k: len(v) for k, v in completed.items()}
    for day in report.tasks_by_day:
        if day.completed:
            assert day.duration_p50 is not None and day.duration_p95 is not None
            assert abs(day.duration_p50 - percentile_cont(completed[day.day], 0.5)) <= timedelta(milliseconds=1)
            assert abs(day.duration_p95 - percentile_cont(completed[day.day], 0.95)) <= timedelta(milliseconds=1)
            finished = day.completed + day.failed + day.cancelled
            assert day.completion_rate == pg_round(Decimal(day.completed) / finished, 4)
    flow = await db.fetchval("SELECT sum(completed) FROM analytics.task_flow_daily")
    assert sum(d.completed for d in report.tasks_by_day) == flow


async def check_agents(db: asyncpg.Connection, report: Report, truth: StoryTruth) -> None:
    cost: defaultdict[str, Decimal] = defaultdict(Decimal)
    for call in truth.llm_calls.values():
        cost[call.agent_id] += money(call.cost_usd)
    assert {a.agent_id: a.llm_cost_usd for a in report.agents if a.llm_calls} == dict(cost)
    done = await db.fetch(
        "SELECT agent_id, count(*) FILTER (WHERE completed_at IS NOT NULL) AS completed,"
        " count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed FROM analytics.tasks"
        " WHERE agent_id IS NOT NULL GROUP BY agent_id"
    )
    agents = {a.agent_id: a for a in report.agents}
    for row in done:
        assert (agents[row["agent_id"]].tasks_completed, agents[row["agent_id"]].tasks_failed) == (
            row["completed"],
            row["failed"],
        )
    for a in report.agents:
        if a.tasks_completed:
            assert a.cost_per_completed_task == pg_round(a.llm_cost_usd / a.tasks_completed, 6)
        if a.events:
            assert a.error_rate == pg_round(Decimal(a.errors) / a.events, 4)


async def check_delivery(db: asyncpg.Connection, report: Report, truth: StoryTruth) -> None:
    assert truth.deployments and truth.incidents
    view = await db.fetch("SELECT * FROM analytics.delivery_weekly_all ORDER BY week, author_kind")
    assert sorted((w.week, w.author_kind, w.deployments, w.lead_time_p50) for w in report.delivery) == sorted(
        (r["week"], r["author_kind"], r["deployments"], r["lead_time_p50"]) for r in view
    )
    weeks: Counter[tuple[date, str]] = Counter()
    for d in truth.deployments.values():
        monday = d.ended_at.astimezone(UTC).date() - timedelta(days=d.ended_at.astimezone(UTC).weekday())
        weeks[(monday, d.status.value)] += 1
    overall = {w.week: w for w in report.delivery if w.author_kind == "all"}
    assert {(week, "completed"): w.deployments for week, w in overall.items() if w.deployments} == {
        k: v for k, v in weeks.items() if k[1] == "completed"
    }
    assert sum(w.failed_deployments for w in overall.values()) == sum(v for k, v in weeks.items() if k[1] == "failed")
    assert sum(w.incidents for w in overall.values()) == len(truth.incidents)


async def test_a_window_and_a_project_leave_the_rest_out(db: asyncpg.Connection) -> None:
    truth = await fill(db)
    days = sorted(
        {r["day"] for r in await db.fetch("SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day FROM events")}
    )
    middle = days[len(days) // 2]
    project = sorted(set(truth.agents.values()))[0]
    report = await gather(db, midnight(middle) + timedelta(hours=15), project)
    assert report.window.first_day == middle
    in_window = await db.fetchval(
        "SELECT count(*) FROM events WHERE occurred_at >= $1 AND project_id = $2", midnight(middle), project
    )
    everything = await db.fetchval("SELECT count(*) FROM events")
    assert report.summary.events == in_window
    assert 0 < in_window < everything
    assert all(d.day >= middle for d in report.events_by_day)
    assert all(t.day >= middle for t in report.tasks_by_day)
    exact: defaultdict[str, Decimal] = defaultdict(Decimal)
    for call in truth.llm_calls.values():
        if call.project_id == project and call.occurred_at.astimezone(UTC).date() >= middle:
            exact[call.requirement_id] += money(call.cost_usd)
    top = sorted(exact, key=lambda k: (-exact[k], k))[:10]
    assert [(r.requirement_id, r.cost_usd) for r in report.requirements] == [(k, exact[k]) for k in top]
    assert report.requirements_total == len(exact)
    # Delivery of that project only: its deployments from the window's week on, as the story made them.
    monday = middle - timedelta(days=middle.weekday())
    weeks: Counter[date] = Counter()
    for d in truth.deployments.values():
        ended = d.ended_at.astimezone(UTC).date()
        if d.project_id == project and d.status.value == "completed" and ended >= monday:
            weeks[ended - timedelta(days=ended.weekday())] += 1
    overall = {w.week: w.deployments for w in report.delivery if w.author_kind == "all" and w.deployments}
    assert overall == dict(weeks)
    assert sum(weeks.values()) < sum(1 for d in truth.deployments.values() if d.status.value == "completed")
    nothing = await gather(db, datetime.now(UTC) + timedelta(days=2), None)
    assert nothing.summary.events == 0 and nothing.models == () and nothing.requirements == ()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def devtrail(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "devtrail", "report", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.timeout(1200)  # the first run may install chromium
async def test_the_cli_writes_json_csv_and_an_html_file_chromium_draws(
    db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    truth = await fill(db)
    events = await db.fetchval("SELECT count(*) FROM events")
    cost = await db.fetchval(
        "SELECT sum((payload ->> 'cost_usd')::numeric) FROM events WHERE event_type = 'llm.called'"
    )

    out = json.loads(devtrail("--database-url", database_url, "--since", "30d", "--json").stdout, parse_float=Decimal)
    assert out["summary"]["events"] == events
    assert out["summary"]["cost_usd"] == cost  # exact: a JSON number with every digit
    assert {m["model"] for m in out["models"]} == {c.model for c in truth.llm_calls.values()}
    assert all(isinstance(t["duration_p50"], Decimal | None) for t in out["tasks_by_day"])

    page = tmp_path / "report.html"
    done = devtrail(
        "--database-url", database_url, "--since", "30d", "--csv", str(tmp_path / "csv"), "--html", str(page)
    )
    assert "Summary" in done.stdout and f"{events:,}" in done.stdout  # the tables, on the terminal
    files = {p.name: read_csv(p) for p in (tmp_path / "csv").iterdir()}
    assert set(files) == {"summary.csv", "events_by_day.csv", "models.csv", "requirements.csv", "tasks_by_day.csv",
                          "agents.csv", "delivery.csv"}  # fmt: skip
    assert int(files["summary.csv"][0]["events"]) == events
    assert Decimal(files["summary.csv"][0]["cost_usd"]) == cost
    assert sum(int(r["events"]) for r in files["events_by_day.csv"]) == events
    assert [r["requirement_id"] for r in files["requirements.csv"]] == [
        r["requirement_id"] for r in out["requirements"]
    ]

    document = page.read_text(encoding="utf-8")
    for fetched in ("http://", "https://", "<script", "src=", "href=", "url(", "@import"):
        assert fetched not in document
    check_drawn(page, tmp_path)


def check_drawn(page: Path, tmp_path: Path) -> None:
    """Every chart has shapes in Chromium's DOM, and the screenshot shows them, in their colours."""
    drawn = chromium.charts(chromium.dump_dom(page, tmp_path / "profile"))
    assert set(drawn) == set(CHART_IDS)
    for chart_id, chart in drawn.items():
        assert not chart.empty and chart.svgs >= 1, chart_id
        assert chart.shapes["rect"] + chart.shapes["path"] + chart.shapes["circle"] > 0, (chart_id, chart)
    image = chromium.decode_png(chromium.screenshot(page, tmp_path / "profile", tmp_path / "report.png"))
    assert (image.width, image.height) == (1280, 4000)
    colours = image.colours()
    background, most = colours.most_common(1)[0]
    assert background[:3] == b"\xff\xff\xff"
    assert image.width * image.height - most > image.width * image.height // 50  # over 2 % is not background
    for colour in (BLUE, GREEN, RED):  # bar fills, exact in the middle of the bars
        rgb = bytes.fromhex(colour[1:])
        assert sum(n for c, n in colours.items() if c[:3] == rgb) > 500, colour
