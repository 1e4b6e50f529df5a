"""Dead letters land in the dead_letters table; `dlq list` shows them; `dlq replay` sends fixed ones back."""

from __future__ import annotations

import io

import asyncpg
import orjson
import pytest

from devtrail.dlq import list_dead_letters, replay_dead_letters
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from producers import EventProducer
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
