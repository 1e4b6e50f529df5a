"""Correlation in the running pipeline: a link found on one partition enriches events on
another, through the links topic, and the stored row says how each reference was matched."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from devtrail.producers import EventProducer
from devtrail.schemas.events import SessionStarted, SessionStartedPayload, TaskCreated, TaskCreatedPayload
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.factories import llm_called
from tests.integration.pipeline import wait_for

pytestmark = pytest.mark.integration


async def test_a_session_link_enriches_llm_calls_on_other_partitions(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    sessions = [f"S-{i}" for i in range(12)]  # keyed by session: spread over the partitions
    async with (
        Stack(stack_settings.model_copy(update={"processor_workers": 2})) as stack,
        EventProducer(stack.settings) as p,
    ):
        await p.emit(TaskCreated(source="t", task_id="T-1", requirement_id="R-1", project_id="web",
                                 payload=TaskCreatedPayload(title="Cart")))  # fmt: skip
        await p.emit_many([SessionStarted(source="t", session_id=s, task_id="T-1", agent_id="claude",
                                          payload=SessionStartedPayload()) for s in sessions])  # fmt: skip

        async def linked() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM events")) >= 13

        await wait_for(linked, 60, "the task and its sessions stored")
        await asyncio.sleep(2)  # the links reach every processor through the links topic
        await p.emit_many([llm_called(session_id=s) for s in sessions])

        async def calls() -> bool:
            return int(await db.fetchval("SELECT count(*) FROM events WHERE event_type = 'llm.called'")) >= 12

        await wait_for(calls, 60, "the LLM calls stored")
    rows = await db.fetch("SELECT * FROM events WHERE event_type = 'llm.called'")
    assert {(r["task_id"], r["requirement_id"], r["project_id"], r["agent_id"]) for r in rows} == {
        ("T-1", "R-1", "web", "claude")
    }
    for row in rows:
        assert orjson.loads(row["attribution"]) == {
            "task_id": "session", "requirement_id": "session", "project_id": "session", "agent_id": "session"
        }  # fmt: skip
    partitions = await db.fetch("SELECT DISTINCT session_id FROM events WHERE event_type = 'llm.called'")
    assert len(partitions) == 12
    task = await db.fetchrow("SELECT * FROM events WHERE event_type = 'task.created'")
    assert task["attribution"] is None  # an event that named everything is stored as sent
