from __future__ import annotations

import asyncio

import pytest

from devtrail.producers.context import apply_context, caused_by, correlation, current_ids
from tests.factories import task_created


def test_context_fills_only_the_fields_an_event_left_empty() -> None:
    with correlation(correlation_id="run-1", session_id="S", agent_id="ctx-agent"):
        event = apply_context(task_created(agent_id="own-agent"))
    assert (event.correlation_id, event.session_id, event.agent_id) == ("run-1", "S", "own-agent")
    assert apply_context(task_created()).correlation_id is None  # outside: untouched


def test_contexts_nest_and_unwind() -> None:
    with correlation(correlation_id="outer", session_id="S1"):
        with correlation(session_id="S2"):
            assert current_ids() == {"correlation_id": "outer", "session_id": "S2"}
        assert current_ids() == {"correlation_id": "outer", "session_id": "S1"}
    assert current_ids() == {}


def test_caused_by_links_to_the_parent() -> None:
    parent = task_created(correlation_id="C", session_id="S")
    with caused_by(parent):
        child = apply_context(task_created(task_id="T-2"))
    assert child.causation_id == parent.event_id
    assert (child.correlation_id, child.session_id) == ("C", "S")


def test_unknown_ids_are_refused() -> None:
    with pytest.raises(TypeError, match="not envelope ids"), correlation(tenant="x"):
        pass


async def test_each_task_sees_its_own_context() -> None:
    async def emit_in(name: str) -> str | None:
        with correlation(correlation_id=name):
            await asyncio.sleep(0)
            return apply_context(task_created()).correlation_id

    assert await asyncio.gather(emit_in("a"), emit_in("b")) == ["a", "b"]
