"""A battery of bad input sent to the input topics: each is stored exactly or dead-lettered
with a reason; no worker crashes and nothing sent alongside is lost."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from devtrail.settings import StackSettings
from devtrail.stack import Stack
from producers import EventProducer
from schemas.events import AgentAction, AgentActionPayload
from tests.factories import llm_called, task_created
from tests.integration.pipeline import counts, wait_for

pytestmark = pytest.mark.integration


def good(**changes: object) -> dict[str, object]:
    event: dict[str, object] = orjson.loads(task_created().model_dump_json())
    return event | changes


def nested_detail(levels: int) -> bytes:
    """An agent.action whose free-form ``detail`` nests ``levels`` objects deep (orjson cannot dump that)."""
    event = orjson.loads(
        AgentAction(source="tests", agent_id="A", payload=AgentActionPayload(action="dig")).model_dump_json()
    )
    head = orjson.dumps(event).decode().replace('"detail":{}', '"detail":' + '{"d":' * levels + '"x"' + "}" * levels)
    return head.encode()


STORED = "stored"
LONE_SURROGATE = b'{"event_type":"task.created","source":"\\ud800","payload":{"title":"x"}}'
SQL_SOURCE = "x'); DELETE FROM events;--"
# (name, message bytes, acceptable outcomes: an error kind, or "stored" when it must be stored exactly)
BAD_INPUTS: list[tuple[str, bytes, set[str]]] = [
    ("malformed JSON", b'{"event_type": "task.created", ', {"decode"}),
    ("not an object", b'"just a string"', {"decode"}),
    ("wrong types", orjson.dumps(good(payload={"title": 42})), {"validation"}),
    ("missing envelope field", orjson.dumps({k: v for k, v in good().items() if k != "source"}), {"validation"}),
    ("NUL in a string", orjson.dumps(good(source="a\u0000b")), {"validation"}),
    (
        "lone surrogate",
        b'{"event_type":"task.created","source":"\\ud800","payload":{"title":"x"}}',
        {"decode", "validation"},
    ),
    ("nesting 1,000 deep", nested_detail(1000), {STORED, "validation", "decode", "unencodable"}),
    ("naive timestamp", orjson.dumps(good(occurred_at="2026-01-01T10:00:00")), {"validation"}),
    ("year 9999", orjson.dumps(good(occurred_at="9999-01-01T00:00:00Z")), {"validation"}),
    (
        "negative tokens",
        orjson.dumps(
            orjson.loads(llm_called().model_dump_json())
            | {"payload": {"provider": "p", "model": "m", "input_tokens": -1, "output_tokens": 1}}
        ),
        {"validation"},
    ),
    ("unknown type", orjson.dumps(good(event_type="task.exploded")), {"validation"}),
    ("oversized payload", orjson.dumps(good(payload={"title": "t", "description": "x" * 9_000})), {"too_large"}),
    (
        "SQL-looking strings",
        orjson.dumps(good(task_id="T'; DROP TABLE events; --", source="x'); DELETE FROM events;--")),
        {STORED},
    ),
]


async def test_every_bad_input_is_stored_exactly_or_dead_lettered_with_a_reason(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    settings = stack_settings.model_copy(update={"max_event_bytes": 8192})
    before = [task_created(task_id=f"before-{i}") for i in range(20)]
    after = [task_created(task_id=f"after-{i}") for i in range(20)]
    async with Stack(settings) as stack, EventProducer(stack.settings) as producer:
        await producer.emit_many(before)
        topic = stack.settings.topics.input_topic(before[0].family)
        for name, value, _ in BAD_INPUTS:
            await producer.send_raw(topic, value, name.encode())
        await producer.emit_many(after)
        expected_rows = 40 + sum(1 for _, _, ok in BAD_INPUTS if ok == {STORED})

        async def settled() -> bool:
            stored = (await counts(db))[0]
            dead = await db.fetchval("SELECT count(*) FROM dead_letters")
            return stored + dead >= 40 + len(BAD_INPUTS)

        await wait_for(settled, 90, "every input stored or dead-lettered")
        assert all(w.restarts == 0 for w in stack.workers), {w.name: w.restarts for w in stack.workers}
    dead = {bytes(r["original"]): r for r in await db.fetch("SELECT * FROM dead_letters")}
    stored_ids = {r["event_id"] for r in await db.fetch("SELECT event_id::text FROM events")}
    for name, value, acceptable in BAD_INPUTS:
        if value in dead:
            record = dead[value]
            assert record["error_kind"] in acceptable, (name, record["error"])
            assert record["error"], name
        else:
            assert STORED in acceptable, f"{name}: neither stored nor dead-lettered"
            assert orjson.loads(value)["event_id"] in stored_ids, name
    assert {str(e.event_id) for e in before + after} <= stored_ids
    assert (await counts(db))[0] >= expected_rows
    row = await db.fetchrow("SELECT task_id, source FROM events WHERE task_id LIKE 'T''%'")
    assert row is not None and row["task_id"] == "T'; DROP TABLE events; --"
    assert row["source"] == "x'); DELETE FROM events;--"
