"""Dead letters land in the dead_letters table; `dlq list` shows them; `dlq replay` sends fixed ones back."""

from __future__ import annotations

import io

import asyncpg
import orjson
import pytest

from devtrail.consumers.deadletter import DeadLetter
from devtrail.consumers.deadletter_store import DeadLetterStore, record_row
from devtrail.dlq import discard_dead_letters, list_dead_letters, replay_dead_letters, show_dead_letter
from devtrail.producers import EventProducer
from devtrail.schemas.errors import EventValidationError
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.factories import llm_called
from tests.integration.pipeline import counts, wait_for

pytestmark = pytest.mark.integration


async def test_dead_letters_are_stored_listed_and_replayed_once_fixed(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    negative = orjson.loads(llm_called().model_dump_json())
    negative["payload"]["input_tokens"] = -5
    unknown = {"event_type": "no.such.type", "source": "tests"}
    async with Stack(stack_settings) as stack, EventProducer(stack.settings) as producer:
        topic = stack.settings.topics.input_topic(llm_called().family)
        await producer.send_raw(topic, orjson.dumps(negative), b"S-1")
        await producer.send_raw(topic, orjson.dumps(unknown), b"x")
        await producer.send_raw(topic, b"\xff\xfe not json", b"x")

        async def stored() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM dead_letters") >= 3)

        await wait_for(stored, 60, "three dead letters in the table")
        rows = {r["event_type"] or r["error_kind"]: r for r in await db.fetch("SELECT * FROM dead_letters")}
        assert rows["llm.called"]["error_kind"] == "validation"
        assert rows["llm.called"]["event_id"] == negative["event_id"]
        assert "input_tokens" in rows["llm.called"]["error"]
        assert bytes(rows["decode"]["original"]) == b"\xff\xfe not json"

        listing = io.StringIO()
        assert await list_dead_letters(stack.settings, None, False, 10, listing) == 3
        assert "no.such.type" in listing.getvalue() and "input_tokens" in listing.getvalue()

        fixed = negative | {"payload": negative["payload"] | {"input_tokens": 5}}
        fixes = {rows["llm.called"]["id"]: fixed}
        report = await replay_dead_letters(stack.settings, None, "validation", 10, fixes)
        assert report.replayed == [rows["llm.called"]["id"]]
        assert list(report.still_invalid) == [rows["no.such.type"]["id"]]

        async def replayed_event_stored() -> bool:
            return (await counts(db))[0] == 1

        await wait_for(replayed_event_stored, 60, "the replayed event stored")
        again = await replay_dead_letters(stack.settings, None, "validation", 10, fixes)
        assert again.replayed == []  # already replayed: not selected again
    assert await db.fetchval("SELECT event_id::text FROM events") == negative["event_id"]
    assert await db.fetchval("SELECT replay_count FROM dead_letters WHERE id = $1", rows["llm.called"]["id"]) == 1


async def test_the_store_writes_every_record_postgresql_would_refuse_and_never_stops(db: asyncpg.Connection) -> None:
    """Straight into the table, no broker: records whose text PostgreSQL refuses are stored
    escaped, a row it refuses all the same is stored in plain form, and nothing raises."""
    store = DeadLetterStore()
    nul = DeadLetter("validation", "bad \x00 reason", "devtrail.task", 0, 1, b'{"event_id":"a\\u0000"}', None)
    nul_record = orjson.loads(nul.to_json()) | {
        "event_id": "a\x00",
        "event_type": "t\x00",
        "errors": [{"loc": ["\x00"]}],
    }
    values = [orjson.dumps(nul_record), b"\x00\xff not a record", b'{"error_kind": 1, "source_offset": 1.5}']
    rows = [record_row("devtrail.dead-letters", 0, offset, value) for offset, value in enumerate(values)]
    async with db.transaction():
        assert await store.write(db, rows) == 3
    stored = {r["offset"]: r for r in await db.fetch("SELECT * FROM dead_letters")}
    assert (stored[0]["event_id"], stored[0]["event_type"]) == ("a\\u0000", "t\\u0000")
    assert stored[0]["error"] == "bad \\u0000 reason" and bytes(stored[0]["original"]) == nul.original
    assert orjson.loads(stored[0]["errors"])[0]["loc"] == ["\\u0000"]
    assert stored[1]["error_kind"] == "unreadable_record" and bytes(stored[1]["original"]) == values[1]
    assert (stored[2]["error_kind"], stored[2]["source_offset"]) == ("1", -1)

    refused = record_row("devtrail.dead-letters", 0, 9, orjson.dumps(nul_record))
    refused[4] = "raw NUL \x00 and a lone \ud800"  # as if escaping had missed something
    async with db.transaction():
        assert await store.write(db, [refused]) == 1
    plain = await db.fetchrow('SELECT * FROM dead_letters WHERE "offset" = 9')
    assert plain["error"].startswith("raw NUL \\x00 and a lone \\ud800 [stored in plain form: PostgreSQL refused")
    assert bytes(plain["original"]) == nul.original


async def test_a_dead_letter_is_shown_whole_and_a_discarded_one_is_kept_out_of_lists_and_replays(
    db: asyncpg.Connection, stack_settings: StackSettings
) -> None:
    event = orjson.loads(llm_called().model_dump_json())
    event["payload"]["input_tokens"] = -5
    records = [
        DeadLetter.for_error(
            EventValidationError("llm.called: input_tokens must be >= 0", [{"loc": ["payload", "input_tokens"],
                                 "msg": "must be >= 0", "type": "greater_than_equal"}]),
            "devtrail.llm", 2, 40, orjson.dumps(event), 3, event,
        ),
        DeadLetter("decode", "not JSON", "devtrail.task", 1, 7, b"\xff\xfe binary \x00 junk", None),
    ]  # fmt: skip
    rows = [record_row("devtrail.dead-letters", 0, i, r.to_json()) for i, r in enumerate(records)]
    async with db.transaction():
        assert await DeadLetterStore().write(db, rows) == 2
    ids = {r["error_kind"]: r["id"] for r in await db.fetch("SELECT id, error_kind FROM dead_letters")}
    settings = stack_settings

    listing = io.StringIO()
    assert await list_dead_letters(settings, None, False, 10, listing) == 2
    assert "devtrail.llm:2@40#3" in listing.getvalue() and event["event_id"] in listing.getvalue()

    shown = io.StringIO()
    assert await show_dead_letter(settings, ids["validation"], shown)
    text = shown.getvalue()
    assert "source:           devtrail.llm:2@40#3" in text and f"event_id:         {event['event_id']}" in text
    assert "payload.input_tokens: must be >= 0" in text
    assert '"input_tokens": -5' in text  # the original, indented JSON
    binary = io.StringIO()
    assert await show_dead_letter(settings, ids["decode"], binary)
    assert "(not UTF-8: hex)" in binary.getvalue() and "ff fe 20 62 69 6e" in binary.getvalue()
    assert not await show_dead_letter(settings, 10**9, io.StringIO())

    assert await discard_dead_letters(settings, [ids["validation"], 10**9], "a test producer, gone") == [
        ids["validation"]
    ]
    assert await discard_dead_letters(settings, [ids["validation"]], "again") == []  # the first reason stays
    listing = io.StringIO()
    assert await list_dead_letters(settings, None, False, 10, listing) == 1
    everything = io.StringIO()
    assert await list_dead_letters(settings, None, True, 10, everything) == 2
    assert "(discarded: a test producer, gone)" in everything.getvalue()
    fixed = event | {"payload": event["payload"] | {"input_tokens": 5}}
    report = await replay_dead_letters(settings, [ids["validation"]], None, 10, {ids["validation"]: fixed}, True)
    assert report.replayed == []  # discarded: never replayed
