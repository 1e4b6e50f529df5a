"""A batch of clean rows reduced to the additions it makes to each aggregate table (Python only).

Every aggregate here is a sum (or a set), so a batch adds to rows whatever the order of the
events; ``Additions.statements`` turns the sums into one upsert per table, rows in key order
(two writer processes never wait on each other's rows in opposite orders).

A missing reference is ``''`` in the tables (keys compare with ``=``); the ``analytics``
views show it as NULL. Buckets are UTC hours and days of ``occurred_at``: a late event lands
in its own bucket.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson

from devtrail.consumers.clean import CleanRow, MalformedRowError


def _latency_bounds() -> tuple[int, ...]:
    bounds: list[int] = []
    value = 1.0
    while value < 86_400_000:  # one day
        value *= 1.05
        bound = int(value) + 1
        if not bounds or bound > bounds[-1]:
            bounds.append(bound)
    return tuple(bounds)


#: Upper bounds (ms, exclusive) of the latency bins, as migration 0008 stores them in
#: ``aggregates.latency_bins``: bin ``i`` holds ``bounds[i-1] <= ms < bounds[i]``, about 5 % wide.
LATENCY_BOUNDS = _latency_bounds()

#: Event types that are errors by their type; ``tool.called`` is one when ``success`` is false.
ERROR_TYPES = frozenset({"agent.error", "task.failed", "deployment.failed"})
LLM_CALLED, TOOL_CALLED = "llm.called", "tool.called"


def latency_bin(ms: int) -> int:
    """The latency bin of ``ms`` milliseconds (``LATENCY_BOUNDS``)."""
    return bisect.bisect_right(LATENCY_BOUNDS, ms)


def _hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Usage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)

    def add(self, call: LlmCall) -> None:
        self.calls += 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        self.cached_tokens += call.cached_tokens
        self.cost_usd += call.cost_usd

    def columns(self) -> tuple[int, int, int, int, Decimal]:
        return self.calls, self.input_tokens, self.output_tokens, self.cached_tokens, self.cost_usd


@dataclass(frozen=True)
class LlmCall:
    """The fields of an ``llm.called`` payload the aggregates read."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: Decimal
    latency_ms: int | None


def _payload(row: CleanRow) -> dict[str, Any]:
    try:
        payload = orjson.loads(row.payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedRowError(f"clean row {row.event_id}: payload is not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise MalformedRowError(f"clean row {row.event_id}: payload is not an object")
    return payload


def _count(payload: dict[str, Any], name: str, row: CleanRow, default: int | None = None) -> int:
    value = payload.get(name, default)
    if type(value) is not int or value < 0:
        raise MalformedRowError(f"clean row {row.event_id}: {name} is not a non-negative integer: {value!r}")
    return value


def llm_call(row: CleanRow) -> LlmCall:
    """The aggregated fields of an ``llm.called`` row.

    Raises:
        MalformedRowError: the payload does not hold them (a writer of the clean topic other
            than the processor).
    """
    payload = _payload(row)
    provider, model = payload.get("provider"), payload.get("model")
    if not isinstance(provider, str) or not isinstance(model, str) or not provider or not model:
        raise MalformedRowError(f"clean row {row.event_id}: llm.called without provider and model")
    cost = payload.get("cost_usd", 0.0)
    if type(cost) not in (int, float) or not cost >= 0 or cost == float("inf"):
        raise MalformedRowError(f"clean row {row.event_id}: cost_usd is not a finite non-negative number")
    latency = payload.get("latency_ms")
    return LlmCall(
        provider,
        model,
        _count(payload, "input_tokens", row),
        _count(payload, "output_tokens", row),
        _count(payload, "cached_tokens", row, 0),
        # The text JSON holds (orjson writes the shortest repr, which PostgreSQL's jsonb reads
        # back as the same numeric): sums agree exactly with a GROUP BY over ``events``.
        Decimal(repr(cost)) if type(cost) is float else Decimal(cost),
        None if latency is None else _count(payload, "latency_ms", row),
    )


def is_error(row: CleanRow) -> bool:
    """Whether the event reports a failure (``ERROR_TYPES``, or a ``tool.called`` with ``success`` false)."""
    if row.event_type in ERROR_TYPES:
        return True
    if row.event_type == TOOL_CALLED:
        return _payload(row).get("success", True) is False
    return False


@dataclass
class Additions:
    """What a batch adds to each aggregate table."""

    activity_hourly: dict[tuple[datetime, str, str, str, str], list[int]] = field(default_factory=dict)
    activity_daily: dict[tuple[date, str, str, str, str], list[int]] = field(default_factory=dict)
    usage_hourly: dict[tuple[datetime, str, str, str, str], Usage] = field(default_factory=dict)
    usage_daily: dict[tuple[date, str, str, str, str], Usage] = field(default_factory=dict)
    latency_hourly: dict[tuple[datetime, str, str, str, str, int], int] = field(default_factory=dict)
    latency_daily: dict[tuple[date, str, str, str, str, int], int] = field(default_factory=dict)
    session_days: set[tuple[date, str, str, str]] = field(default_factory=set)
    cost_daily: dict[tuple[date, str, str, str, str], Usage] = field(default_factory=dict)
    events: int = 0

    def statements(self) -> Iterator[tuple[str, list[Any]]]:
        """One upsert per table with rows, as (SQL, [column arrays]), rows in key order."""
        activity: list[tuple[str, Mapping[Any, list[int]]]] = [
            ("activity_hourly", self.activity_hourly),
            ("activity_daily", self.activity_daily),
        ]
        for table, sums in activity:
            if sums:
                keys = sorted(sums)
                counts = [sums[k] for k in keys]
                yield (
                    _ACTIVITY.format(table=table, bucket=_bucket_type(table)),
                    [*_key_columns(keys, 5), [c[0] for c in counts], [c[1] for c in counts]],
                )
        usage: list[tuple[str, Mapping[Any, Usage]]] = [
            ("llm_usage_hourly", self.usage_hourly),
            ("llm_usage_daily", self.usage_daily),
        ]
        for table, used in usage:
            if used:
                keys = sorted(used)
                yield (
                    _USAGE.format(table=table, bucket=_bucket_type(table)),
                    [*_key_columns(keys, 5), *_usage_columns([used[k] for k in keys])],
                )
        latency: list[tuple[str, Mapping[Any, int]]] = [
            ("llm_latency_hourly", self.latency_hourly),
            ("llm_latency_daily", self.latency_daily),
        ]
        for table, bins in latency:
            if bins:
                keys = sorted(bins)
                yield (
                    _LATENCY.format(table=table, bucket=_bucket_type(table)),
                    [*_key_columns(keys, 6), [bins[k] for k in keys]],
                )
        if self.session_days:
            yield _SESSIONS, _key_columns(sorted(self.session_days), 4)
        if self.cost_daily:
            keys = sorted(self.cost_daily)
            yield _COST, [*_key_columns(keys, 5), *_usage_columns([self.cost_daily[k] for k in keys])]


def _bucket_type(table: str) -> str:
    return "timestamptz" if table.endswith("hourly") else "date"


def _key_columns(keys: Sequence[Any], width: int) -> list[list[Any]]:
    return [[k[i] for k in keys] for i in range(width)]


def _usage_columns(usages: Sequence[Usage]) -> list[list[Any]]:
    columns = [u.columns() for u in usages]
    return [[c[i] for c in columns] for i in range(5)]


def reduce_rows(rows: Sequence[CleanRow]) -> Additions:
    """The additions of ``rows`` (claimed: each counts once).

    Raises:
        MalformedRowError: an ``llm.called`` or ``tool.called`` row whose payload does not hold
            what the processor writes.
    """
    out = Additions(events=len(rows))
    activity_hourly, activity_daily = out.activity_hourly, out.activity_daily
    for row in rows:
        hour = _hour(row.occurred_at)
        day = hour.date()
        project, agent = row.project_id or "", row.agent_id or ""
        error = 1 if is_error(row) else 0
        key = (hour, project, agent, row.event_type, row.source)
        found = activity_hourly.get(key)
        if found is None:
            activity_hourly[key] = [1, error]
        else:
            found[0] += 1
            found[1] += error
        day_key = (day, project, agent, row.event_type, row.source)
        found = activity_daily.get(day_key)
        if found is None:
            activity_daily[day_key] = [1, error]
        else:
            found[0] += 1
            found[1] += error
        if row.session_id is not None:
            out.session_days.add((day, project, agent, row.session_id))
        if row.event_type == LLM_CALLED:
            call = llm_call(row)
            model_key = (project, agent, call.provider, call.model)
            out.usage_hourly.setdefault((hour, *model_key), Usage()).add(call)
            out.usage_daily.setdefault((day, *model_key), Usage()).add(call)
            if call.latency_ms is not None:
                b = latency_bin(call.latency_ms)
                out.latency_hourly[(hour, *model_key, b)] = out.latency_hourly.get((hour, *model_key, b), 0) + 1
                out.latency_daily[(day, *model_key, b)] = out.latency_daily.get((day, *model_key, b), 0) + 1
            if row.task_id is not None:
                cost_key = (day, row.task_id, row.requirement_id or "", project, row.session_id or "")
                out.cost_daily.setdefault(cost_key, Usage()).add(call)
    return out


_ACTIVITY = """
INSERT INTO aggregates.{table} AS a (bucket, project_id, agent_id, event_type, source, events, errors)
SELECT * FROM unnest($1::{bucket}[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
ON CONFLICT (bucket, project_id, agent_id, event_type, source)
DO UPDATE SET events = a.events + EXCLUDED.events, errors = a.errors + EXCLUDED.errors
"""
_USAGE = """
INSERT INTO aggregates.{table} AS u
    (bucket, project_id, agent_id, provider, model, calls, input_tokens, output_tokens, cached_tokens, cost_usd)
SELECT * FROM unnest($1::{bucket}[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::numeric[])
ON CONFLICT (bucket, project_id, agent_id, provider, model)
DO UPDATE SET calls = u.calls + EXCLUDED.calls, input_tokens = u.input_tokens + EXCLUDED.input_tokens,
              output_tokens = u.output_tokens + EXCLUDED.output_tokens,
              cached_tokens = u.cached_tokens + EXCLUDED.cached_tokens, cost_usd = u.cost_usd + EXCLUDED.cost_usd
"""
_LATENCY = """
INSERT INTO aggregates.{table} AS l (bucket, project_id, agent_id, provider, model, bin, calls)
SELECT * FROM unnest($1::{bucket}[], $2::text[], $3::text[], $4::text[], $5::text[], $6::smallint[], $7::bigint[])
ON CONFLICT (bucket, project_id, agent_id, provider, model, bin) DO UPDATE SET calls = l.calls + EXCLUDED.calls
"""
_SESSIONS = """
INSERT INTO aggregates.session_days (bucket, project_id, agent_id, session_id)
SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[])
ON CONFLICT DO NOTHING
"""
_COST = """
INSERT INTO aggregates.llm_cost_daily AS c
    (bucket, task_id, requirement_id, project_id, session_id,
     calls, input_tokens, output_tokens, cached_tokens, cost_usd)
SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::numeric[])
ON CONFLICT (bucket, task_id, requirement_id, project_id, session_id)
DO UPDATE SET calls = c.calls + EXCLUDED.calls, input_tokens = c.input_tokens + EXCLUDED.input_tokens,
              output_tokens = c.output_tokens + EXCLUDED.output_tokens,
              cached_tokens = c.cached_tokens + EXCLUDED.cached_tokens, cost_usd = c.cost_usd + EXCLUDED.cost_usd
"""
