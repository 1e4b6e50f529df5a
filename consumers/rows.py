"""Clean-topic events (decoded JSON) to database rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

EVENT_COLUMNS = (
    "event_id",
    "occurred_at",
    "event_type",
    "schema_version",
    "source",
    "project_id",
    "agent_id",
    "session_id",
    "task_id",
    "requirement_id",
    "correlation_id",
    "causation_id",
    "payload",
)

Row = tuple[Any, ...]


def unique_by_event_id(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first copy of each ``event_id`` in a batch, in order."""
    seen: dict[str, dict[str, Any]] = {}
    for event in events:
        seen.setdefault(event["event_id"], event)
    return list(seen.values())


def event_row(event: dict[str, Any]) -> Row:
    """One ``events`` row, in ``EVENT_COLUMNS`` order, ready for binary COPY."""
    get = event.get
    return (
        event["event_id"],
        datetime.fromisoformat(event["occurred_at"]),
        event["event_type"],
        event["schema_version"],
        event["source"],
        get("project_id"),
        get("agent_id"),
        get("session_id"),
        get("task_id"),
        get("requirement_id"),
        get("correlation_id"),
        get("causation_id"),
        orjson.dumps(event.get("payload", {})).decode(),
    )
