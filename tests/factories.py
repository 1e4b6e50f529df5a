"""Valid events for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from devtrail.schemas.events import LlmCalled, LlmCalledPayload, TaskCreated, TaskCreatedPayload


def task_created(task_id: str = "T-1", **overrides: Any) -> TaskCreated:
    fields: dict[str, Any] = {
        "source": "tests",
        "project_id": "P",
        "agent_id": "A",
        "task_id": task_id,
        "payload": TaskCreatedPayload(title="t"),
    }
    fields.update(overrides)
    return TaskCreated(**fields)


def llm_called(tokens_in: int = 10, **overrides: Any) -> LlmCalled:
    fields: dict[str, Any] = {
        "source": "tests",
        "session_id": "S-1",
        "occurred_at": datetime.now(UTC) - timedelta(minutes=1),
        "payload": LlmCalledPayload(provider="anthropic", model="m", input_tokens=tokens_in, output_tokens=5),
    }
    fields.update(overrides)
    return LlmCalled(**fields)
