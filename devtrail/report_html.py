"""``devtrail report --html FILE``: the report as one self-contained HTML file with SVG charts.

Nothing is fetched when the file is opened: the CSS is inline, the charts are SVG drawn here
(no script, no font, no image), the fonts are the system's. Each chart is a ``<figure
class="chart" id="chart-...">`` (``CHART_IDS``) holding one or two ``<svg class="plot">``, or
``<p class="empty">no data in this window</p>`` when its section is empty; under it, the
section's figures as a table. Every text taken from the data goes through ``html.escape``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from devtrail.report import (
    Report,
    TextTable,
    format_cost,
    format_duration,
    text_tables,
    window_text,
)

#: The charts' element ids, in the order they appear.
CHART_IDS = (
    "chart-events",
    "chart-models",
    "chart-requirements",
    "chart-task-throughput",
    "chart-task-durations",
    "chart-agents",
    "chart-delivery",
)
EMPTY = '<p class="empty">no data in this window</p>'
WIDTH = 960
BLUE, RED, GREEN, ORANGE, GREY, PURPLE = "#3b6fd8", "#d8453b", "#2e9e5b", "#e39a2d", "#9aa3ad", "#8a5cc9"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1000px;
       color: #1d232a; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0 0 8px; }
.window { color: #5b6570; margin: 0 0 16px; }
.tiles { display: grid; grid-template-columns: repeat(4, 1fr); gap: 8px; margin-bottom: 24px; }
.tile { border: 1px solid #dde2e7; border-radius: 6px; padding: 8px 12px; }
.tile b { display: block; font-size: 20px; } .tile span { color: #5b6570; font-size: 12px; }
figure.chart { margin: 0 0 28px; border-top: 1px solid #dde2e7; padding-top: 12px; }
svg.plot { width: 100%; height: auto; display: block; margin-bottom: 6px; }
svg text { font: 11px system-ui, sans-serif; fill: #3a424b; }
.legend span { margin-right: 14px; font-size: 12px; } .legend i { display: inline-block; width: 10px; height: 10px;
       margin-right: 4px; vertical-align: -1px; }
.empty { color: #8a939c; font-style: italic; padding: 24px; border: 1px dashed #c9d0d6; text-align: center; }
table { border-collapse: collapse; font-size: 12px; margin-top: 8px; }
td, th { padding: 2px 8px; text-align: right; border-bottom: 1px solid #eef1f4; }
td:first-child, th:first-child { text-align: left; max-width: 320px; overflow-wrap: anywhere; }
details summary { cursor: pointer; color: #5b6570; font-size: 12px; }
"""


def esc(text: object) -> str:
    """``text`` safe in HTML text and attribute values."""
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class Series:
    """One coloured series of a chart; ``None`` is a missing value (a gap in a line)."""

    name: str
    color: str
    values: Sequence[float | None]


Label = Callable[[float], str]


def _short(value: float) -> str:
    """``950``, ``12k``, ``3.4M``: axis labels."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _dollars(value: float) -> str:
    return format_cost(Decimal(str(round(value, 6))))


def _seconds(value: float) -> str:
    return format_duration(timedelta(seconds=value))


def _ceiling(top: float) -> float:
    """A round axis maximum at or above ``top`` whose quarters are round too (1, 2, 4, 8 or 10 x 10^n)."""
    if top <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(top))
    return next(power * step for step in (1, 2, 4, 8, 10) if power * step >= top)


#: Axis maxima for durations (seconds) whose quarters read well: 1m ... 8h, then days.
DURATION_MAXIMA = (60, 120, 240, 480, 1200, 2400, 3600, 7200, 14400, 28800, 43200, 86400)


def _duration_ceiling(top: float) -> float:
    """A duration axis maximum at or above ``top`` seconds."""
    if top <= 0:
        return 60.0
    return float(next((m for m in DURATION_MAXIMA if m >= top), 86400 * _ceiling(top / 86400)))


def _legend(series: Sequence[Series]) -> str:
    items = "".join(f'<span><i style="background:{s.color}"></i>{esc(s.name)}</span>' for s in series)
    return f'<div class="legend">{items}</div>'


def _grid(left: int, top: int, width: int, height: int, maximum: float, label: Label) -> list[str]:
    """Horizontal grid lines with their values (0, 1/4 ... of ``maximum``)."""
    parts = []
    for i in range(5):
        y = top + height - height * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#e6eaee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(label(maximum * i / 4))}</text>')
    return parts


def _x_labels(labels: Sequence[str], left: int, slot: float, y: int) -> list[str]:
    every = max(1, -(-len(labels) // 12))
    return [
        f'<text x="{left + slot * (i + 0.5):.1f}" y="{y}" text-anchor="middle">{esc(text)}</text>'
        for i, text in enumerate(labels)
        if i % every == 0
    ]


def columns_svg(labels: Sequence[str], series: Sequence[Series], label: Label = _short, height: int = 240) -> str:
    """Stacked vertical bars, one per label (days, weeks)."""
    left, top, bottom = 64, 10, 28
    plot_w, plot_h = WIDTH - left - 10, height - top - bottom
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    maximum = _ceiling(max(totals, default=0))
    slot = plot_w / max(1, len(labels))
    parts = _grid(left, top, plot_w, plot_h, maximum, label)
    for i, text in enumerate(labels):
        base = float(top + plot_h)
        for s in series:
            value = s.values[i] or 0
            h = plot_h * value / maximum
            base -= h
            tip = f"{text}: {s.name} {label(value)}"
            parts.append(
                f'<rect x="{left + slot * i + slot * 0.15:.1f}" y="{base:.1f}" width="{slot * 0.7:.1f}" '
                f'height="{h:.1f}" fill="{s.color}"><title>{esc(tip)}</title></rect>'
            )
    parts += _x_labels(labels, left, slot, height - 8)
    return _svg(height, parts)


def lines_svg(labels: Sequence[str], series: Sequence[Series], height: int = 220) -> str:
    """One line per series of durations (seconds) over the labels, a dot on every value; a missing value
    breaks the line."""
    left, top, bottom = 64, 10, 28
    plot_w, plot_h = WIDTH - left - 10, height - top - bottom
    label = _seconds
    maximum = _duration_ceiling(max((v for s in series for v in s.values if v is not None), default=0))
    slot = plot_w / max(1, len(labels))
    parts = _grid(left, top, plot_w, plot_h, maximum, label)
    for s in series:
        points = [
            (i, left + slot * (i + 0.5), top + plot_h - plot_h * v / maximum, v)
            for i, v in enumerate(s.values)
            if v is not None
        ]
        path = " ".join(
            f"{'L' if n and points[n - 1][0] == i - 1 else 'M'}{x:.1f},{y:.1f}" for n, (i, x, y, _) in enumerate(points)
        )
        if path:
            parts.append(f'<path d="{path}" fill="none" stroke="{s.color}" stroke-width="2"/>')
        parts += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s.color}">'
            f"<title>{esc(f'{labels[i]}: {s.name} {label(v)}')}</title></circle>"
            for i, x, y, v in points
        ]
    parts += _x_labels(labels, left, slot, height - 8)
    return _svg(height, parts)


def bars_svg(labels: Sequence[str], series: Sequence[Series], label: Label = _short) -> str:
    """Stacked horizontal bars, one per label (models, requirements, agents), the total at the end."""
    left, row, top = 250, 22, 6
    plot_w = WIDTH - left - 90
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    maximum = max(totals, default=0) or 1
    parts = []
    for i, text in enumerate(labels):
        y = top + row * i
        shown = text if len(text) <= 36 else text[:35] + "…"
        parts.append(
            f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{esc(shown)}<title>{esc(text)}</title></text>'
        )
        x = float(left)
        for s in series:
            value = s.values[i] or 0
            w = plot_w * value / maximum
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{s.color}">'
                f"<title>{esc(f'{text}: {s.name} {label(value)}')}</title></rect>"
            )
            x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 14}">{esc(label(totals[i]))}</text>')
    return _svg(top * 2 + row * len(labels), parts)


def _svg(height: int, parts: Sequence[str]) -> str:
    body = "".join(parts)
    return f'<svg class="plot" viewBox="0 0 {WIDTH} {height}" role="img">{body}</svg>'


def _table_html(table: TextTable) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    return f"<details><summary>the figures</summary><table><tr>{head}</tr>{rows}</table></details>"


def _figure(chart_id: str, title: str, charts: Sequence[str], table: TextTable | None = None) -> str:
    body = "".join(charts) if charts else EMPTY
    below = _table_html(table) if table is not None and table.rows else ""
    return f'<figure class="chart" id="{chart_id}"><h2>{esc(title)}</h2>{body}{below}</figure>'


def _events(report: Report, tables: dict[str, TextTable]) -> str:
    days = report.events_by_day
    series = [
        Series("events", BLUE, [d.events - d.errors for d in days]),
        Series("errors", RED, [d.errors for d in days]),
    ]
    charts = [columns_svg([d.day.isoformat() for d in days], series), _legend(series)] if days else []
    return _figure("chart-events", "Events per day", charts, tables["events_by_day"])


def _models(report: Report, tables: dict[str, TextTable]) -> str:
    models = report.models
    names = [f"{m.provider} {m.model}" for m in models]
    tokens = [Series("input tokens", BLUE, [m.input_tokens for m in models]),
              Series("output tokens", ORANGE, [m.output_tokens for m in models])]  # fmt: skip
    cost = [Series("cost (USD)", GREEN, [float(m.cost_usd) for m in models])]
    charts = [bars_svg(names, tokens), _legend(tokens), bars_svg(names, cost, _dollars), _legend(cost)]
    return _figure("chart-models", "Tokens and cost by model", charts if models else [], tables["models"])


def _requirements(report: Report, tables: dict[str, TextTable]) -> str:
    rows = report.requirements
    names = [f"{r.requirement_id} {r.title}" if r.title else r.requirement_id for r in rows]
    cost = [Series("LLM cost (USD)", GREEN, [float(r.cost_usd) for r in rows])]
    charts = [bars_svg(names, cost, _dollars)] if rows else []
    title = f"Cost by requirement (top {len(rows)} of {report.requirements_total})"
    return _figure("chart-requirements", title, charts, tables["requirements"])


def _task_throughput(report: Report, tables: dict[str, TextTable]) -> str:
    days = report.tasks_by_day
    series = [
        Series("completed", GREEN, [t.completed for t in days]),
        Series("failed", RED, [t.failed for t in days]),
        Series("cancelled", GREY, [t.cancelled for t in days]),
    ]
    charts = [columns_svg([t.day.isoformat() for t in days], series), _legend(series)] if days else []
    return _figure("chart-task-throughput", "Tasks finished per day", charts, tables["tasks_by_day"])


def _task_durations(report: Report, _tables: dict[str, TextTable]) -> str:
    days = [t for t in report.tasks_by_day if t.duration_p50 is not None]
    series = [
        Series("p50", BLUE, [t.duration_p50.total_seconds() if t.duration_p50 is not None else None for t in days]),
        Series("p95", PURPLE, [t.duration_p95.total_seconds() if t.duration_p95 is not None else None for t in days]),
    ]
    charts = [lines_svg([t.day.isoformat() for t in days], series), _legend(series)] if days else []
    return _figure("chart-task-durations", "Durations of the tasks completed each day (start to completion)", charts)


def _agents(report: Report, tables: dict[str, TextTable]) -> str:
    agents = report.agents
    names = [a.agent_id for a in agents]
    tasks = [Series("tasks completed", GREEN, [a.tasks_completed for a in agents]),
             Series("tasks failed", RED, [a.tasks_failed for a in agents])]  # fmt: skip
    cost = [Series("LLM cost (USD)", ORANGE, [float(a.llm_cost_usd) for a in agents])]
    charts = [bars_svg(names, tasks), _legend(tasks), bars_svg(names, cost, _dollars), _legend(cost)]
    return _figure("chart-agents", "Agent performance", charts if agents else [], tables["agents"])


def _delivery(report: Report, tables: dict[str, TextTable]) -> str:
    weeks = [w for w in report.delivery if w.author_kind == "all"]
    series = [Series("deployments", GREEN, [w.deployments for w in weeks]),
              Series("failed deployments", RED, [w.failed_deployments for w in weeks])]  # fmt: skip
    labels = [w.week.isoformat() for w in weeks]
    charts = [columns_svg(labels, series, height=200), _legend(series)] if weeks else []
    lead = [w.lead_time_p50.total_seconds() if w.lead_time_p50 is not None else None for w in weeks]
    restore = [w.time_to_restore_p50.total_seconds() if w.time_to_restore_p50 is not None else None for w in weeks]
    if any(v is not None for v in lead + restore):
        times = [Series("lead time for changes, p50", BLUE, lead), Series("time to restore, p50", PURPLE, restore)]
        charts += [lines_svg(labels, times, height=180), _legend(times)]
    title = "Delivery per week"
    return _figure("chart-delivery", title, charts, tables["delivery"])


SECTIONS = (_events, _models, _requirements, _task_throughput, _task_durations, _agents, _delivery)


def _tiles(table: TextTable) -> str:
    tiles = "".join(
        f'<div class="tile"><b>{esc(value)}</b><span>{esc(name)}</span></div>' for name, value in table.rows
    )
    return f'<section class="tiles" id="summary">{tiles}</section>'


def render_html(report: Report) -> str:
    """The report as one HTML document, with everything it shows inside it."""
    tables = text_tables(report)
    generated = report.window.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(section(report, tables) for section in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>devtrail report {esc(window_text(report.window))}</title><style>{CSS}</style></head>"
        f'<body><h1>devtrail report</h1><p class="window">{esc(window_text(report.window))}; '
        f"made {esc(generated)}</p>{_tiles(tables['summary'])}{body}</body></html>\n"
    )
