"""Correlation context: events emitted inside it get its ids filled in.

::

    with correlation(correlation_id="run-42", session_id="S-7", agent_id="planner"):
        await producer.emit(TaskStarted(source="planner", task_id="T-1"))  # carries all three

    with caused_by(parent_event):  # causation_id = parent's event_id, correlation inherited
        await producer.emit(...)

Fields the event sets itself are never overwritten. Contexts nest; the inner one wins
for the fields it sets. Built on ``contextvars``, so each asyncio task and thread sees
its own context.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from devtrail.schemas.envelope import Envelope

FIELDS = ("correlation_id", "causation_id", "session_id", "agent_id", "project_id", "task_id", "requirement_id")

_current: ContextVar[dict[str, Any]] = ContextVar("devtrail_correlation", default={})  # noqa: B039 - never mutated


@contextlib.contextmanager
def correlation(**ids: Any) -> Iterator[dict[str, Any]]:
    """Set envelope ids for the events emitted inside the block.

    Args:
        ids: any of ``correlation_id``, ``causation_id``, ``session_id``, ``agent_id``,
            ``project_id``, ``task_id``, ``requirement_id``.

    Raises:
        TypeError: an unknown field name.
    """
    unknown = set(ids) - set(FIELDS)
    if unknown:
        raise TypeError(f"not envelope ids: {sorted(unknown)}; use {FIELDS}")
    merged = {**_current.get(), **{k: v for k, v in ids.items() if v is not None}}
    token = _current.set(merged)
    try:
        yield merged
    finally:
        _current.reset(token)


def caused_by(event: Envelope) -> contextlib.AbstractContextManager[dict[str, Any]]:
    """Events emitted inside are caused by ``event``: its id, correlation and session carry over."""
    return correlation(
        causation_id=event.event_id,
        correlation_id=event.correlation_id,
        session_id=event.session_id,
        agent_id=event.agent_id,
        project_id=event.project_id,
    )


def current_ids() -> dict[str, Any]:
    """The ids the current context would fill in."""
    return dict(_current.get())


def apply_context(event: Envelope) -> Envelope:
    """The event with the context's ids in the fields it left empty (the same object if none)."""
    ids = _current.get()
    if not ids:
        return event
    missing = {name: value for name, value in ids.items() if getattr(event, name) is None}
    if not missing:
        return event
    if "causation_id" in missing and not isinstance(missing["causation_id"], uuid.UUID):
        missing["causation_id"] = uuid.UUID(str(missing["causation_id"]))
    return event.model_copy(update=missing)
