"""A battery of bad input sent to the input topics: each is stored exactly or dead-lettered
with a reason; no worker crashes and nothing sent alongside is lost."""

from __future__ import annotations

import hashlib

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from devtrail.producers import EventProducer
from devtrail.schemas.envelope import Family
from devtrail.schemas.events import AgentAction, AgentActionPayload
from devtrail.settings import StackSettings
from devtrail.stack import Stack
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
            dead = int(await db.fetchval("SELECT count(*) FROM dead_letters"))
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


UUID = "01a2171e-1164-7bff-94a7-b0e4dd5213"  # + two hex digits


def raw_event(n: int, **changes: object) -> dict[str, object]:
    """A task.created as a producer in another language sends it (no Python classes)."""
    event: dict[str, object] = {
        "event_id": f"{UUID}{n:02x}",
        "event_type": "task.created",
        "source": "raw-client",
        "occurred_at": "2026-05-01T10:00:00Z",
        "task_id": f"raw-{n}",
        "payload": {"title": "t"},
    }
    return {k: v for k, v in (event | changes).items() if v is not ...}


def detail(n: int, text: str) -> bytes:
    event = raw_event(n, event_type="agent.action", agent_id="raw-agent", payload={"action": "a", "detail": {}})
    return orjson.dumps(event).replace(b'"detail":{}', b'"detail":' + text.encode())


# (name, message bytes, the error kind its dead letter has, text its reason holds)
NASTIEST: list[tuple[str, bytes, str, str]] = [
    (
        "60,000 unknown fields",
        orjson.dumps(raw_event(1, **{f"f{i}": 0 for i in range(60_000)})),
        "validation",
        "unknown field",
    ),
    ("NUL in the event id", orjson.dumps(raw_event(2, event_id=f"{UUID}0\x00")), "validation", "NUL character"),
    ("NUL in the event type", orjson.dumps(raw_event(3, event_type="task.created\x00")), "validation", "NUL character"),
    ("NUL in an unknown key", orjson.dumps(raw_event(4, **{"k\x00": 1})), "validation", "NUL character"),
    ("no event_id", orjson.dumps(raw_event(5, event_id=...)), "validation", "event_id: required on the wire"),
    ("no occurred_at", orjson.dumps(raw_event(6, occurred_at=...)), "validation", "occurred_at: required on the wire"),
    (
        "two event_id keys",
        b'{"event_id":"%s07",' % UUID.encode() + orjson.dumps(raw_event(7))[1:],
        "validation",
        "duplicate key 'event_id'",
    ),
    ("NaN in detail", detail(8, '{"n": NaN}'), "validation", "NaN is not valid JSON"),
    ("1e400 in detail", detail(9, '{"n": 1e400}'), "validation", "out of range"),
    (
        "true for an integer",
        orjson.dumps(raw_event(10, payload={"title": "t", "priority": True})),
        "validation",
        "got a boolean",
    ),
    (
        "id with a trailing space",
        orjson.dumps(raw_event(11, task_id="raw-11 ")),
        "validation",
        "whitespace at either end",
    ),
    (
        "Latin-1",
        orjson.dumps(raw_event(12)).replace(b"raw-client", b"r\xe9w-client"),
        "decode",
        "not valid UTF-8 at byte",
    ),
    ("byte order mark", b"\xef\xbb\xbf" + orjson.dumps(raw_event(13)), "decode", "byte order mark"),
    ("lone surrogate", orjson.dumps(raw_event(14)).replace(b"raw-client", b"\\ud800"), "validation", "lone surrogate"),
    ("64 KB event type", orjson.dumps(raw_event(15, event_type="x" * 65_536)), "validation", "(65,536 characters)"),
    ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "decode", "nested too deeply"),
    ("empty", b"", "decode", "empty message value"),
    ("leap second", orjson.dumps(raw_event(16, occurred_at="2026-12-31T23:59:60Z")), "validation", "leap seconds"),
]
# Not dead-letter records at all, written straight to the dead-letter topic by someone.
FOREIGN_RECORDS = [
    b"\x00\xff not a record",
    orjson.dumps({"error_kind": "x\x00", "error": "\x00", "event_id": "a\x00", "errors": [{"loc": ["\x00"]}]}),
    b'{"error_kind": "validation", "original_base64": "not base64!", "source_partition": 99999999999}',
]


async def test_the_nastiest_input_from_a_raw_client_never_stalls_a_partition_or_a_worker(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    bundle = b"[%s,%s,%s]" % (
        orjson.dumps(raw_event(30)),
        orjson.dumps(raw_event(31)).replace(b'"source":"raw-client"', b'"source":"a","source":"b"'),
        orjson.dumps(raw_event(32)),
    )
    good_before = [raw_event(40 + i) for i in range(10)]
    good_after = [raw_event(60 + i) for i in range(10)]
    async with Stack(stack_settings) as stack:
        topics = stack.settings.topics
        kafka = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap_servers, max_request_size=8 << 20)
        await kafka.start()
        try:
            for record in FOREIGN_RECORDS:
                await kafka.send_and_wait(topics.dead_letters, record)
            topic = topics.input_topic(Family.TASK)
            for value in [orjson.dumps(e) for e in good_before] + [v for _, v, _, _ in NASTIEST] + [bundle]:
                await kafka.send_and_wait(topic, value, partition=0)  # one partition: nothing may stall it
            for value in [orjson.dumps(e) for e in good_after]:
                await kafka.send_and_wait(topic, value, partition=0)
        finally:
            await kafka.stop()

        async def settled() -> bool:
            stored = (await counts(db))[0]
            dead = int(await db.fetchval("SELECT count(*) FROM dead_letters"))
            return stored >= 22 and dead >= len(NASTIEST) + 1 + len(FOREIGN_RECORDS)

        await wait_for(settled, 120, "every input stored or dead-lettered")
        assert all(w.restarts == 0 for w in stack.workers), {w.name: w.restarts for w in stack.workers}
    stored_ids = {r["event_id"] for r in await db.fetch("SELECT event_id::text FROM events")}
    expected_ids = {e["event_id"] for e in good_before + good_after} | {f"{UUID}{30:02x}", f"{UUID}{32:02x}"}
    assert stored_ids == expected_ids
    rows = await db.fetch("SELECT * FROM dead_letters WHERE source_topic = $1 ORDER BY source_offset", topic)
    by_digest = {r["original_sha256"]: r for r in rows if r["event_index"] is None}
    for name, value, kind, reason in NASTIEST:
        row = by_digest[hashlib.sha256(value).hexdigest()]
        assert (row["error_kind"], row["original_size"]) == (kind, len(value)), name
        assert reason in row["error"] and len(row["error"]) <= 2000, (name, row["error"])
        assert len(orjson.loads(row["errors"])) <= 20 and row["errors_total"] >= len(orjson.loads(row["errors"]))
        assert bytes(row["original"]) == value[: 64 * 1024], name
    many = by_digest[hashlib.sha256(NASTIEST[0][1]).hexdigest()]
    assert (many["errors_total"], many["original_truncated"], many["event_id"]) == (60_000, True, f"{UUID}01")
    nul_id = by_digest[hashlib.sha256(NASTIEST[1][1]).hexdigest()]
    assert nul_id["event_id"] == f"{UUID}0\\u0000"  # escaped in text; the bytes are in original
    nul_type = by_digest[hashlib.sha256(NASTIEST[2][1]).hexdigest()]
    assert nul_type["event_type"] == "task.created\\u0000"
    [member] = [r for r in rows if r["event_index"] is not None]
    assert (member["event_index"], member["event_id"]) == (1, f"{UUID}{31:02x}")
    assert b'"source":"a","source":"b"' in bytes(member["original"])
    foreign = await db.fetch(
        "SELECT * FROM dead_letters WHERE topic = $1 AND source_topic <> $2", topics.dead_letters, topic
    )
    assert {r["error_kind"] for r in foreign} == {"unreadable_record", "x\\u0000", "validation"}
    assert {bytes(r["original"]) for r in foreign if r["error_kind"] == "unreadable_record"} == {FOREIGN_RECORDS[0]}
