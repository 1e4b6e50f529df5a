"""The aggregates' Python side: latency bins, claim days, reductions, malformed rows."""

from __future__ import annotations

import importlib.util
import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from devtrail.consumers.aggregates.claims import Claims, id_day, partition_day, partition_name
from devtrail.consumers.aggregates.reduce import LATENCY_BOUNDS, latency_bin, reduce_rows
from devtrail.consumers.clean import EVENT_COLUMNS, CleanRow, MalformedRowError
from devtrail.schemas.ids import uuid7_from

AT = datetime(2026, 11, 26, 13, 45, tzinfo=UTC)


def row(event_type: str = "llm.called", payload: Any = None, **columns: Any) -> CleanRow:
    values: dict[str, Any] = dict.fromkeys(EVENT_COLUMNS)
    values |= {
        "event_id": str(uuid7_from(int(AT.timestamp() * 1000), len(columns) + hash(str(payload)) % 1000)),
        "occurred_at": AT,
        "event_type": event_type,
        "schema_version": "1.3",
        "source": "svc",
        "payload": orjson.dumps(payload if payload is not None else {}).decode(),
    }
    values |= columns
    return CleanRow(*(values[name] for name in EVENT_COLUMNS))


def llm(**payload: Any) -> dict[str, Any]:
    return {"provider": "p", "model": "m", "input_tokens": 10, "output_tokens": 2, **payload}


def test_latency_bounds_are_those_the_migration_stores() -> None:
    path = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0008_aggregates.py"
    spec = importlib.util.spec_from_file_location("migration_0008", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.LATENCY_BOUNDS == LATENCY_BOUNDS


def test_latency_bins_are_at_most_five_percent_wide_and_cover_zero_to_a_day() -> None:
    assert latency_bin(0) == 0 and latency_bin(1) == 0
    assert latency_bin(LATENCY_BOUNDS[0]) == 1
    assert LATENCY_BOUNDS[-1] >= 86_400_000
    assert latency_bin(10**12) == len(LATENCY_BOUNDS)  # the open last bin
    for lower, upper in itertools.pairwise(LATENCY_BOUNDS):
        assert upper > lower
        assert upper <= max(lower * 1.05 + 1, lower + 1)
    for ms in (0, 1, 7, 99, 100, 101, 12_345, 3_600_000):
        b = latency_bin(ms)
        assert (LATENCY_BOUNDS[b - 1] if b else 0) <= ms < LATENCY_BOUNDS[b]


def test_id_day_reads_the_uuidv7_time_and_refuses_other_ids() -> None:
    assert id_day(str(uuid7_from(int(AT.timestamp() * 1000), 5))) == date(2026, 11, 26)
    assert id_day(str(uuid.uuid4())) is None
    assert id_day("not-a-uuid") is None
    assert id_day("zzzzzzzz-zzzz-7zzz-8zzz-zzzzzzzzzzzz") is None


def test_partition_names_round_trip() -> None:
    assert partition_day(partition_name(date(2026, 2, 3))) == date(2026, 2, 3)
    for other in ("claims_late", "claims_2026013", "claims_20261399", "events_2026_11"):
        assert partition_day(other) is None


def test_the_claim_window_is_dedup_days_back_and_two_ahead() -> None:
    assert Claims(7).window(date(2026, 11, 26)) == (date(2026, 11, 19), date(2026, 11, 28))
    with pytest.raises(ValueError, match="at least 1"):
        Claims(0)


def test_a_batch_reduces_to_sums_per_bucket_and_key() -> None:
    rows = [
        row(payload=llm(cost_usd=0.1, latency_ms=100, cached_tokens=3), project_id="P", agent_id="A", task_id="T"),
        row(payload=llm(cost_usd=0.2, latency_ms=100), project_id="P", agent_id="A", session_id="S"),
        row("tool.called", {"tool_name": "x", "success": False}, agent_id="A", session_id="S"),
        row("tool.called", {"tool_name": "x"}, agent_id="A"),
        row("agent.error", {"error_type": "t", "message": "m"}, agent_id="A"),
        row("task.completed", {}, occurred_at=AT - timedelta(days=3)),
    ]
    out = reduce_rows(rows)
    hour = AT.replace(minute=0)
    assert out.activity_hourly[(hour, "P", "A", "llm.called", "svc")] == [2, 0]
    assert out.activity_hourly[(hour, "", "A", "tool.called", "svc")] == [2, 1]
    assert out.activity_hourly[(hour, "", "A", "agent.error", "svc")] == [1, 1]
    assert out.activity_daily[(date(2026, 11, 23), "", "", "task.completed", "svc")] == [1, 0]
    usage = out.usage_daily[(date(2026, 11, 26), "P", "A", "p", "m")]
    assert (usage.calls, usage.input_tokens, usage.cached_tokens, usage.cost_usd) == (2, 20, 3, Decimal("0.3"))
    assert out.latency_hourly == {(hour, "P", "A", "p", "m", latency_bin(100)): 2}
    assert out.session_days == {(date(2026, 11, 26), "P", "A", "S"), (date(2026, 11, 26), "", "A", "S")}
    assert list(out.cost_daily) == [(date(2026, 11, 26), "T", "", "P", "")]  # only calls stored with a task
    for sql, columns in out.statements():
        keys = list(zip(*columns[:4], strict=True))
        assert keys == sorted(keys), sql  # rows in key order: parallel writers cannot deadlock


def test_costs_sum_exactly_as_decimals_of_their_json_text() -> None:
    rows = [row(payload=llm(cost_usd=0.1)) for _ in range(3)]
    assert reduce_rows(rows).usage_hourly[(AT.replace(minute=0), "", "", "p", "m")].cost_usd == Decimal("0.3")


@pytest.mark.parametrize(
    "payload",
    [
        llm(cost_usd="1.5"),
        llm(cost_usd=-1),
        llm(input_tokens=-1),
        llm(input_tokens=1.5),
        llm(output_tokens=True),
        llm(latency_ms="9"),
        {"model": "m", "input_tokens": 1, "output_tokens": 1},
        {"provider": "", "model": "m", "input_tokens": 1, "output_tokens": 1},
        [1, 2],
    ],
)
def test_an_llm_row_the_processor_would_not_write_is_malformed(payload: Any) -> None:
    with pytest.raises(MalformedRowError):
        reduce_rows([row(payload=payload)])


def test_a_payload_that_is_not_json_is_malformed() -> None:
    bad = row()._replace(payload="{not json")
    with pytest.raises(MalformedRowError):
        reduce_rows([bad])
