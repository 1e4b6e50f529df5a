"""The report's renderers on hand-built reports: terminal tables, JSON, CSV and HTML, with empty
sections and ids that hold markup, quotes and terminal escapes."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from devtrail.report import (
    AgentPerformance,
    DayActivity,
    DeliveryWeek,
    ModelUsage,
    Report,
    RequirementCost,
    Summary,
    TaskDay,
    Window,
    format_cost,
    format_duration,
    render_terminal,
    to_json,
    write_csv,
)
from devtrail.report_html import CHART_IDS, render_html
from tests.integration.chromium import charts

SCRIPT = "<script>alert('x')</script>"
QUOTES = '"><img src=x onerror=alert(1)>'
DAY = date(2026, 11, 20)
WINDOW = Window(datetime(2026, 11, 19, 8, tzinfo=UTC), date(2026, 11, 19), "P<1>", datetime(2026, 11, 26, tzinfo=UTC))
COST = Decimal("0.123456789012345678")


def full() -> Report:
    """A report with every section filled, its ids hostile."""
    return Report(
        window=WINDOW,
        summary=Summary(1200, 30, 90, 50_000, 9_000, 1_000, COST, 12, 7, 2),
        events_by_day=(DayActivity(DAY, 700, 10), DayActivity(DAY + timedelta(days=1), 500, 20)),
        models=(
            ModelUsage("anthropic", SCRIPT, 60, 40_000, 7_000, 1_000, COST, 900, 2_100, 4_000),
            ModelUsage("openai", 'gpt, "quoted"\nline', 30, 10_000, 2_000, 0, Decimal("0.000001"), None, None, None),
        ),
        requirements=(RequirementCost(SCRIPT, QUOTES, "open", 3, 40, 20_000, 4_000, Decimal("0.1")),),
        requirements_total=4,
        tasks_by_day=(
            TaskDay(DAY, 5, 4, 3, 1, 0, Decimal("0.75"), timedelta(minutes=8), timedelta(minutes=30)),
            TaskDay(DAY + timedelta(days=1), 2, 2, 0, 1, 1, Decimal("0"), None, None),
            TaskDay(DAY + timedelta(days=2), 1, 1, 4, 0, 0, Decimal("1"), timedelta(hours=2), timedelta(hours=5)),
        ),
        agents=(
            AgentPerformance(
                "a&b\x1b[31m[bold]x", 20, 300, 15, Decimal("0.05"), 7, 2, Decimal("0.7778"), 90, COST, Decimal("0.0176")
            ),
        ),
        delivery=(
            DeliveryWeek(
                date(2026, 11, 16),
                "all",
                3,
                1,
                Decimal("0.429"),
                timedelta(hours=20),
                Decimal("0.25"),
                1,
                1,
                timedelta(minutes=90),
            ),
            DeliveryWeek(
                date(2026, 11, 16), "agent", 2, 0, Decimal("0.286"), timedelta(hours=10), Decimal("0"), 0, 0, None
            ),
        ),
    )


def empty() -> Report:
    return Report(WINDOW, Summary(0, 0, 0, 0, 0, 0, Decimal(0), 0, 0, 0), (), (), (), 0, (), (), ())


def test_every_chart_draws_shapes_and_only_its_own_svg() -> None:
    found = charts(render_html(full()))
    assert set(found) == set(CHART_IDS)
    for chart_id, chart in found.items():
        assert not chart.empty and chart.svgs >= 1, chart_id
        assert chart.shapes["rect"] + chart.shapes["path"] + chart.shapes["circle"] > 0, chart_id
    assert found["chart-task-durations"].shapes["path"] == 2  # p50 and p95: one line each
    assert found["chart-events"].shapes["rect"] == 4  # two days, events and errors stacked


def test_every_chart_says_so_when_its_section_is_empty() -> None:
    document = render_html(empty())
    found = charts(document)
    assert set(found) == set(CHART_IDS)
    for chart_id, chart in found.items():
        assert chart.empty and chart.svgs == 0 and not chart.shapes, chart_id
    assert document.count("no data in this window") == len(CHART_IDS)


def test_text_from_the_data_is_escaped_in_the_html() -> None:
    document = render_html(full())
    assert "<script" not in document and "<img" not in document
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in document
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in document
    assert "P&lt;1&gt;" in document and "a&amp;b" in document
    # Every tag in the document is one the renderer writes: no tag came from the data.
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", document))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "section", "div", "b", "span",
                    "figure", "svg", "line", "text", "rect", "path", "circle", "i", "details", "summary", "table",
                    "tr", "th", "td"}  # fmt: skip


def test_the_html_fetches_nothing() -> None:
    document = render_html(full())
    for fetched in ("http://", "https://", "src=", "href=", "url(", "@import", "<link", "<script"):
        assert fetched not in document.replace("src=x", ""), fetched
    assert "nan" not in document.lower().replace("span", "") and "inf" not in document.lower()


def test_charts_of_zeros_and_one_day_draw_without_dividing_by_zero() -> None:
    report = full()
    zeros = Report(
        report.window,
        report.summary,
        (DayActivity(DAY, 0, 0),),
        (ModelUsage("p", "m", 1, 0, 0, 0, Decimal(0), None, None, None),),
        (RequirementCost("R", None, None, 1, 1, 0, 0, Decimal(0)),),
        1,
        (TaskDay(DAY, 0, 0, 1, 0, 0, Decimal(1), timedelta(0), timedelta(0)),),
        (),
        (),
    )
    document = render_html(zeros)
    assert "nan" not in document.lower().replace("span", "") and "inf" not in document.lower()
    assert not charts(document)["chart-events"].empty


def test_json_keeps_costs_exact_and_durations_in_seconds() -> None:
    out = json.loads(to_json(full()), parse_float=Decimal)
    assert out["summary"]["cost_usd"] == COST  # every digit, as a number
    assert isinstance(out["summary"]["cost_usd"], Decimal)
    assert out["window"]["first_day"] == "2026-11-19" and out["window"]["project"] == "P<1>"
    assert out["tasks_by_day"][0]["duration_p50"] == 480
    assert out["tasks_by_day"][1]["duration_p50"] is None
    assert out["models"][0]["model"] == SCRIPT
    assert out["models"][1]["latency_p95_ms"] is None
    assert out["delivery"][0]["lead_time_p50"] == 72000
    assert set(out) == {"window", "summary", "events_by_day", "models", "requirements", "requirements_total",
                        "tasks_by_day", "agents", "delivery"}  # fmt: skip


def test_json_of_an_empty_report_has_empty_sections() -> None:
    out = json.loads(to_json(empty()))
    assert out["events_by_day"] == [] and out["models"] == [] and out["summary"]["cost_usd"] == 0


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def test_csv_writes_one_file_per_section_and_round_trips_awkward_text(tmp_path: Path) -> None:
    written = write_csv(full(), tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(
        ["summary.csv", "events_by_day.csv", "models.csv", "requirements.csv", "tasks_by_day.csv", "agents.csv",
         "delivery.csv"]
    )  # fmt: skip
    rows = {p.name: read_csv(p) for p in written}
    assert rows["summary.csv"][0]["cost_usd"] == "0.123456789012345678"
    assert rows["summary.csv"][0]["project"] == "P<1>"
    assert [r["model"] for r in rows["models.csv"]] == [SCRIPT, 'gpt, "quoted"\nline']
    assert rows["models.csv"][1]["latency_p50_ms"] == ""
    assert rows["tasks_by_day.csv"][2]["duration_p95"] == "18000.0"
    assert rows["requirements.csv"][0]["title"] == QUOTES


def test_csv_of_an_empty_section_is_its_header(tmp_path: Path) -> None:
    write_csv(empty(), tmp_path)
    assert (tmp_path / "models.csv").read_text(encoding="utf-8").splitlines() == [
        "provider,model,calls,input_tokens,output_tokens,cached_tokens,cost_usd,latency_p50_ms,latency_p95_ms,"
        "latency_p99_ms"
    ]


def terminal(report: Report) -> str:
    out = io.StringIO()
    render_terminal(report, Console(file=out, width=220, force_terminal=True, color_system="standard"))
    return out.getvalue()


def test_terminal_shows_the_figures_and_never_obeys_the_data() -> None:
    text = terminal(full())
    assert "1,200" in text and "$0.1235" in text and "75.0%" in text and "8m 00s" in text
    assert "[bold]x" in text  # rich markup in an id is shown, not applied
    assert "a&b\\x1b[31m" in text  # the escape is shown, never sent to the terminal
    assert "\x1b[31m[bold]" not in text
    assert "Delivery per week" in text


def test_terminal_says_which_sections_are_empty() -> None:
    text = terminal(empty())
    assert text.count("no data in this window") == 6  # every section but the summary


@pytest.mark.parametrize(
    ("cost", "shown"),
    [(Decimal("12.5"), "$12.5000"), (Decimal("0.00000123"), "$0.00000123"), (Decimal(0), "$0.0000"), (None, "-")],
)
def test_costs_are_never_rounded_to_nothing(cost: Decimal | None, shown: str) -> None:
    assert format_cost(cost) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(42, "42.0s"), (485, "8m 05s"), (3 * 3600 + 720, "3h 12m"), (2 * 86400 + 3 * 3600, "2d 3h")],
)
def test_durations_read_as_people_write_them(seconds: int, shown: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == shown
