"""``devtrail report``: the ``analytics`` views over a window, as terminal tables, JSON or CSV.

``gather`` reads the views for the UTC days from the day of ``since`` on, for one project or
all, into a ``Report`` (plain dataclasses); the renderers only format it. The HTML report
with charts is ``devtrail.report_html``.

Two figures cannot be summed from the views and are read from the tables behind them, as
docs/analytics.md advises: the distinct sessions of the window (``aggregates.session_days``)
and the LLM latency percentiles of the window per model, from the merged latency bins
(``aggregates.llm_latency_daily``), never averaged from daily percentiles. Task durations per
day are computed from ``analytics.tasks`` for the same reason (the view's percentiles are
per agent). Delivery comes from ``analytics.delivery_weekly_all`` (every project) or, with
``project``, ``analytics.delivery_weekly``.

Encodings (JSON and CSV): money and rates are ``Decimal``s written as exact decimal numbers
(JSON numbers, not strings); durations are seconds; days are ISO dates; a missing value is
``null`` (JSON) or empty (CSV).
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Characters a terminal would act on rather than show.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Requirements shown in "cost by requirement" (the most expensive first).
TOP_REQUIREMENTS = 10


@dataclass(frozen=True)
class Window:
    """What the report covers: the UTC days from ``first_day`` on, for ``project`` (None: all)."""

    since: datetime
    first_day: date
    project: str | None
    generated_at: datetime


@dataclass(frozen=True)
class Summary:
    """Totals of the window. ``sessions`` are distinct sessions active in it."""

    events: int
    errors: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: Decimal
    sessions: int
    tasks_completed: int
    tasks_failed: int


@dataclass(frozen=True)
class DayActivity:
    """Events and errors of one UTC day (``analytics.activity_daily``)."""

    day: date
    events: int
    errors: int


@dataclass(frozen=True)
class ModelUsage:
    """LLM usage of one provider and model; latency percentiles of the window's calls, in ms."""

    provider: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: Decimal
    latency_p50_ms: int | None
    latency_p95_ms: int | None
    latency_p99_ms: int | None


@dataclass(frozen=True)
class RequirementCost:
    """LLM usage attributed to one requirement in the window (``analytics.llm_cost_attributed``)."""

    requirement_id: str
    title: str | None
    status: str | None
    tasks: int
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


@dataclass(frozen=True)
class TaskDay:
    """Tasks created, started, completed... on one UTC day, and durations of those completed."""

    day: date
    created: int
    started: int
    completed: int
    failed: int
    cancelled: int
    completion_rate: Decimal | None
    duration_p50: timedelta | None
    duration_p95: timedelta | None


@dataclass(frozen=True)
class AgentPerformance:
    """One agent over the window (``analytics.agent_performance_daily``, summed)."""

    agent_id: str
    actions: int
    events: int
    errors: int
    error_rate: Decimal | None
    tasks_completed: int
    tasks_failed: int
    success_rate: Decimal | None
    llm_calls: int
    llm_cost_usd: Decimal
    cost_per_completed_task: Decimal | None


@dataclass(frozen=True)
class DeliveryWeek:
    """One row of ``analytics.delivery_weekly``: a week (its Monday) and who authored the change."""

    week: date
    author_kind: str
    deployments: int
    failed_deployments: int
    deployments_per_day: Decimal
    lead_time_p50: timedelta | None
    change_failure_rate: Decimal | None
    incidents: int
    incidents_resolved: int
    time_to_restore_p50: timedelta | None


@dataclass(frozen=True)
class Report:
    """Everything ``devtrail report`` shows. ``requirements`` holds the top ones of
    ``requirements_total`` with a cost in the window."""

    window: Window
    summary: Summary
    events_by_day: tuple[DayActivity, ...]
    models: tuple[ModelUsage, ...]
    requirements: tuple[RequirementCost, ...]
    requirements_total: int
    tasks_by_day: tuple[TaskDay, ...]
    agents: tuple[AgentPerformance, ...]
    delivery: tuple[DeliveryWeek, ...]


# The queries take $1 = the first day (date) and $2 = the project (NULL: all).
EVENTS_BY_DAY = """
SELECT bucket AS day, sum(events)::bigint AS events, sum(errors)::bigint AS errors
FROM analytics.activity_daily WHERE bucket >= $1 AND ($2::text IS NULL OR project_id = $2)
GROUP BY bucket ORDER BY bucket"""

MODELS = """
SELECT provider, model, sum(calls)::bigint AS calls, sum(input_tokens)::bigint AS input_tokens,
       sum(output_tokens)::bigint AS output_tokens, sum(cached_tokens)::bigint AS cached_tokens,
       sum(cost_usd) AS cost_usd
FROM analytics.llm_usage_daily WHERE bucket >= $1 AND ($2::text IS NULL OR project_id = $2)
GROUP BY provider, model ORDER BY sum(cost_usd) DESC, provider, model"""

# Nearest-rank percentiles from the window's merged bins, as the views compute a bucket's.
LATENCY = """
WITH bins AS (
    SELECT provider, model, bin, sum(calls) AS calls
    FROM aggregates.llm_latency_daily WHERE bucket >= $1 AND ($2::text IS NULL OR project_id = $2)
    GROUP BY provider, model, bin
), running AS (
    SELECT provider, model, bin, sum(calls) OVER (PARTITION BY provider, model ORDER BY bin) AS cum,
           sum(calls) OVER (PARTITION BY provider, model) AS total
    FROM bins
)
SELECT provider, model,
       min(b.upper_ms) FILTER (WHERE cum >= 0.50 * total) AS p50,
       min(b.upper_ms) FILTER (WHERE cum >= 0.95 * total) AS p95,
       min(b.upper_ms) FILTER (WHERE cum >= 0.99 * total) AS p99
FROM running JOIN aggregates.latency_bins b USING (bin)
GROUP BY provider, model"""

SESSIONS = """
SELECT count(DISTINCT session_id) FROM aggregates.session_days
WHERE bucket >= $1 AND ($2::text IS NULL OR project_id = $2)"""

REQUIREMENTS = """
WITH costs AS (
    SELECT requirement_id, count(DISTINCT task_id) AS tasks, sum(calls)::bigint AS calls,
           sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
           sum(cost_usd) AS cost_usd, count(*) OVER () AS total
    FROM analytics.llm_cost_attributed
    WHERE requirement_id IS NOT NULL AND bucket >= $1 AND ($2::text IS NULL OR project_id = $2)
    GROUP BY requirement_id ORDER BY sum(cost_usd) DESC, requirement_id LIMIT $3
)
SELECT c.*, r.title, r.status
FROM costs c LEFT JOIN analytics.requirements r USING (requirement_id)
ORDER BY c.cost_usd DESC, c.requirement_id"""

TASK_FLOW = """
SELECT bucket AS day, sum(created)::bigint AS created, sum(started)::bigint AS started,
       sum(completed)::bigint AS completed, sum(failed)::bigint AS failed, sum(cancelled)::bigint AS cancelled,
       round(sum(completed)::numeric / NULLIF(sum(completed) + sum(failed) + sum(cancelled), 0), 4)
           AS completion_rate
FROM analytics.task_flow_daily WHERE bucket >= $1 AND ($2::text IS NULL OR project_id = $2)
GROUP BY bucket ORDER BY bucket"""

# As analytics.task_flow_daily computes them, over every agent of the day.
TASK_DURATIONS = """
SELECT (completed_at AT TIME ZONE 'UTC')::date AS day,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration) AS duration_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration) AS duration_p95
FROM analytics.tasks
WHERE completed_at >= ($1::date)::timestamp AT TIME ZONE 'UTC' AND duration >= interval '0'
  AND ($2::text IS NULL OR project_id = $2)
GROUP BY 1"""

AGENTS = """
SELECT agent_id, sum(actions)::bigint AS actions, sum(events)::bigint AS events, sum(errors)::bigint AS errors,
       round(sum(errors)::numeric / NULLIF(sum(events), 0), 4) AS error_rate,
       sum(tasks_completed)::bigint AS tasks_completed, sum(tasks_failed)::bigint AS tasks_failed,
       round(sum(tasks_completed)::numeric / NULLIF(sum(tasks_completed) + sum(tasks_failed), 0), 4) AS success_rate,
       sum(llm_calls)::bigint AS llm_calls, sum(llm_cost_usd) AS llm_cost_usd,
       round(sum(llm_cost_usd) / NULLIF(sum(tasks_completed), 0), 6) AS cost_per_completed_task
FROM analytics.agent_performance_daily WHERE bucket >= $1 AND ($2::text IS NULL OR project_id = $2)
GROUP BY agent_id ORDER BY sum(llm_cost_usd) DESC, agent_id"""

DELIVERY = """
SELECT week, author_kind, deployments, failed_deployments, deployments_per_day, lead_time_p50,
       change_failure_rate, incidents, incidents_resolved, time_to_restore_p50
FROM {view} WHERE week >= date_trunc('week', $1::date)::date {project}
ORDER BY week, author_kind = 'all' DESC, author_kind"""
#: Over every project (``analytics.delivery_weekly_all``), or one (``analytics.delivery_weekly``).
DELIVERY_ALL = DELIVERY.format(view="analytics.delivery_weekly_all", project="")
DELIVERY_PROJECT = DELIVERY.format(view="analytics.delivery_weekly", project="AND project_id = $2")


async def _delivery(conn: asyncpg.Connection, first_day: date, project: str | None) -> list[asyncpg.Record]:
    if project is None:
        return list(await conn.fetch(DELIVERY_ALL, first_day))
    return list(await conn.fetch(DELIVERY_PROJECT, first_day, project))


async def gather(conn: asyncpg.Connection, since: datetime, project: str | None, top: int = TOP_REQUIREMENTS) -> Report:
    """Read the report's figures from the ``analytics`` views.

    Args:
        conn: a connection to a migrated devtrail database.
        since: the window starts at the beginning of this moment's UTC day (an aware datetime).
        project: only this project's figures; None: all.
        top: requirements to list in "cost by requirement".

    Returns:
        The report; sections with nothing in the window are empty tuples.
    """
    first_day = since.astimezone(UTC).date()
    args = (first_day, project)
    events = tuple(DayActivity(**r) for r in await conn.fetch(EVENTS_BY_DAY, *args))
    models = await _models(conn, args)
    tasks = await _tasks(conn, args)
    requirements = await conn.fetch(REQUIREMENTS, *args, top)
    window = Window(since, first_day, project, datetime.now(UTC))
    return Report(
        window=window,
        summary=_summary(events, models, tasks, await conn.fetchval(SESSIONS, *args)),
        events_by_day=events,
        models=models,
        requirements=tuple(_requirement(r) for r in requirements),
        requirements_total=requirements[0]["total"] if requirements else 0,
        tasks_by_day=tasks,
        agents=tuple(AgentPerformance(**r) for r in await conn.fetch(AGENTS, *args)),
        delivery=tuple(DeliveryWeek(**r) for r in await _delivery(conn, first_day, project)),
    )


async def _models(conn: asyncpg.Connection, args: tuple[date, str | None]) -> tuple[ModelUsage, ...]:
    latency = {(r["provider"], r["model"]): r for r in await conn.fetch(LATENCY, *args)}
    models = []
    for r in await conn.fetch(MODELS, *args):
        p = latency.get((r["provider"], r["model"]))
        models.append(
            ModelUsage(**r, latency_p50_ms=p and p["p50"], latency_p95_ms=p and p["p95"], latency_p99_ms=p and p["p99"])
        )
    return tuple(models)


async def _tasks(conn: asyncpg.Connection, args: tuple[date, str | None]) -> tuple[TaskDay, ...]:
    durations = {r["day"]: r for r in await conn.fetch(TASK_DURATIONS, *args)}
    days = []
    for r in await conn.fetch(TASK_FLOW, *args):
        d = durations.get(r["day"])
        days.append(TaskDay(**r, duration_p50=d and d["duration_p50"], duration_p95=d and d["duration_p95"]))
    return tuple(days)


def _requirement(r: asyncpg.Record) -> RequirementCost:
    fields = {f.name for f in dataclasses.fields(RequirementCost)}
    return RequirementCost(**{k: v for k, v in r.items() if k in fields})


def _summary(
    events: Sequence[DayActivity], models: Sequence[ModelUsage], tasks: Sequence[TaskDay], sessions: int
) -> Summary:
    return Summary(
        events=sum(d.events for d in events),
        errors=sum(d.errors for d in events),
        llm_calls=sum(m.calls for m in models),
        input_tokens=sum(m.input_tokens for m in models),
        output_tokens=sum(m.output_tokens for m in models),
        cached_tokens=sum(m.cached_tokens for m in models),
        cost_usd=sum((m.cost_usd for m in models), Decimal(0)),
        sessions=sessions,
        tasks_completed=sum(t.completed for t in tasks),
        tasks_failed=sum(t.failed for t in tasks),
    )


# ---- formatting, shared with the HTML report --------------------------------------------


def format_count(value: int | None) -> str:
    """``12,345``; ``-`` for nothing."""
    return "-" if value is None else f"{value:,}"


def format_cost(value: Decimal | None) -> str:
    """Dollars with 4 decimals (``$0.0123``), more if that would show 0 for a non-zero cost."""
    if value is None:
        return "-"
    places = 4 if value == 0 or abs(value) >= Decimal("0.0001") else 8
    return f"${value:,.{places}f}"


def format_rate(value: Decimal | None) -> str:
    """A share as a percentage (``87.5%``)."""
    return "-" if value is None else f"{value * 100:.1f}%"


def format_duration(value: timedelta | None) -> str:
    """``2d 3h``, ``3h 12m``, ``8m 05s``, ``42.0s``."""
    if value is None:
        return "-"
    seconds = value.total_seconds()
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if days:
        return f"{days}d {hours % 24}h"
    if hours:
        return f"{hours}h {minutes % 60:02d}m"
    if minutes:
        return f"{minutes}m {int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


def format_ms(value: int | None) -> str:
    """Milliseconds, as the latency percentiles are."""
    return "-" if value is None else f"{value:,} ms"


def window_text(window: Window) -> str:
    """``from 2026-11-19 (UTC), all projects``."""
    who = "all projects" if window.project is None else f"project {window.project}"
    return f"from {window.first_day.isoformat()} (UTC), {who}"


# ---- tables of text: the terminal's, and the HTML report's ----------------------------------


@dataclass(frozen=True)
class TextTable:
    """A section as formatted text: what the terminal shows, and the HTML report under its chart."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def text_tables(report: Report) -> dict[str, TextTable]:
    """Every section formatted, by section name (``summary``, ``events_by_day``, ``models``, ...)."""
    return {name: build(report) for name, build in TEXT_TABLES.items()}


def _summary_table(report: Report) -> TextTable:
    s = report.summary
    rows = (
        ("events", format_count(s.events)),
        ("errors", format_count(s.errors)),
        ("LLM calls", format_count(s.llm_calls)),
        ("tokens in / out / cached", f"{s.input_tokens:,} / {s.output_tokens:,} / {s.cached_tokens:,}"),
        ("LLM cost", format_cost(s.cost_usd)),
        ("sessions", format_count(s.sessions)),
        ("tasks completed / failed", f"{s.tasks_completed:,} / {s.tasks_failed:,}"),
    )
    return TextTable("Summary", ("figure", "value"), rows)


def _events_table(report: Report) -> TextTable:
    rows = tuple((d.day.isoformat(), format_count(d.events), format_count(d.errors)) for d in report.events_by_day)
    return TextTable("Events per day", ("day", "events", "errors"), rows)


def _models_table(report: Report) -> TextTable:
    rows = tuple(
        (f"{m.provider} {m.model}", format_count(m.calls), format_count(m.input_tokens), format_count(m.output_tokens),
         format_count(m.cached_tokens), format_cost(m.cost_usd), format_ms(m.latency_p50_ms),
         format_ms(m.latency_p95_ms), format_ms(m.latency_p99_ms))
        for m in report.models
    )  # fmt: skip
    columns = ("model", "calls", "input", "output", "cached", "cost", "p50", "p95", "p99")
    return TextTable("Tokens and cost by model", columns, rows)


def _requirements_table(report: Report) -> TextTable:
    rows = tuple(
        (r.requirement_id, r.title or "-", r.status or "-", format_count(r.tasks), format_count(r.calls),
         format_count(r.input_tokens + r.output_tokens), format_cost(r.cost_usd))
        for r in report.requirements
    )  # fmt: skip
    title = f"Cost by requirement (top {len(rows)} of {report.requirements_total})"
    return TextTable(title, ("requirement", "title", "status", "tasks", "calls", "tokens", "cost"), rows)


def _tasks_table(report: Report) -> TextTable:
    rows = tuple(
        (t.day.isoformat(), format_count(t.created), format_count(t.started), format_count(t.completed),
         format_count(t.failed), format_count(t.cancelled), format_rate(t.completion_rate),
         format_duration(t.duration_p50), format_duration(t.duration_p95))
        for t in report.tasks_by_day
    )  # fmt: skip
    columns = ("day", "created", "started", "completed", "failed", "cancelled", "completion", "p50", "p95")
    return TextTable("Task throughput and durations", columns, rows)


def _agents_table(report: Report) -> TextTable:
    rows = tuple(
        (a.agent_id, format_count(a.actions), format_count(a.errors), format_rate(a.error_rate),
         format_count(a.tasks_completed), format_count(a.tasks_failed), format_rate(a.success_rate),
         format_cost(a.llm_cost_usd), format_cost(a.cost_per_completed_task))
        for a in report.agents
    )  # fmt: skip
    columns = ("agent", "actions", "errors", "error rate", "completed", "failed", "success", "LLM cost", "per task")
    return TextTable("Agent performance", columns, rows)


def _delivery_table(report: Report) -> TextTable:
    rows = tuple(
        (w.week.isoformat(), w.author_kind, format_count(w.deployments), format_count(w.failed_deployments),
         format_duration(w.lead_time_p50), format_rate(w.change_failure_rate), format_count(w.incidents),
         format_duration(w.time_to_restore_p50))
        for w in report.delivery
    )  # fmt: skip
    title = "Delivery per week"
    columns = ("week", "authored by", "deploys", "failed", "lead time", "failure rate", "incidents", "restore")
    return TextTable(title, columns, rows)


TEXT_TABLES = {
    "summary": _summary_table,
    "events_by_day": _events_table,
    "models": _models_table,
    "requirements": _requirements_table,
    "tasks_by_day": _tasks_table,
    "agents": _agents_table,
    "delivery": _delivery_table,
}


def render_terminal(report: Report, console: Console | None = None) -> None:
    """Print the report as rich tables (on stdout unless ``console`` says otherwise)."""
    console = console or Console()
    console.print(Text.assemble(("devtrail report", "bold"), " ", _visible(window_text(report.window))))
    for table in text_tables(report).values():
        console.print(_rich_table(table))


def _visible(text: str) -> str:
    """``text`` with control characters (a terminal's escape sequences) shown as ``\\x1b``, not obeyed."""
    return CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _rich_table(table: TextTable) -> Table:
    caption = None if table.rows else "no data in this window"
    rich = Table(title=Text(table.title), title_justify="left", caption=caption)
    for i, column in enumerate(table.columns):
        rich.add_column(column, justify="left" if i == 0 else "right", overflow="fold")
    for row in table.rows:
        rich.add_row(*(Text(_visible(cell)) for cell in row))  # Text: no markup read from the data
    return rich


# ---- JSON and CSV -------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """What orjson does not encode: a Decimal as an exact JSON number, a timedelta as seconds."""
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f")) if value.is_finite() else None
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot encode {type(value).__name__}")


def to_json(report: Report) -> bytes:
    """The report as one JSON object: ``window``, ``summary`` and one array per section."""
    return orjson.dumps(report, default=_encode)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, timedelta):
        return str(value.total_seconds())
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    return str(value)


def csv_sections(report: Report) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Each section's CSV: file name -> (header, rows). ``summary.csv`` holds the window too."""
    window = [f.name for f in dataclasses.fields(Window)]
    summary = dataclasses.astuple(report.summary)
    sections: dict[str, tuple[list[str], list[list[str]]]] = {
        "summary.csv": (
            [*window, *(f.name for f in dataclasses.fields(Summary))],
            [[_cell(v) for v in (*dataclasses.astuple(report.window), *summary)]],
        )
    }
    for name, kind, rows in (
        ("events_by_day.csv", DayActivity, report.events_by_day),
        ("models.csv", ModelUsage, report.models),
        ("requirements.csv", RequirementCost, report.requirements),
        ("tasks_by_day.csv", TaskDay, report.tasks_by_day),
        ("agents.csv", AgentPerformance, report.agents),
        ("delivery.csv", DeliveryWeek, report.delivery),
    ):
        header = [f.name for f in dataclasses.fields(kind)]
        sections[name] = (header, [[_cell(v) for v in dataclasses.astuple(row)] for row in rows])
    return sections


def write_csv(report: Report, directory: Path) -> list[Path]:
    """Write one CSV file per section into ``directory`` (created if missing); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (header, rows) in csv_sections(report).items():
        path = directory / name
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            writer.writerows(rows)
        written.append(path)
    return written
