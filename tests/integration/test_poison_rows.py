"""Events PostgreSQL refuses are dead-lettered one by one; the rest of the batch is written.

NUL characters (which jsonb refuses) are stopped earlier, by validation; the rows that reach
the database refused here come from a broken writer of the clean topic.
"""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import orjson
import pytest

from devtrail.consumers.clean import OCCURRED_AT, encode_rows, event_to_row
from devtrail.producers import EventProducer
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.factories import task_created
from tests.integration.pipeline import counts, read_topic, wait_for

pytestmark = pytest.mark.integration


def original(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON object a dead-letter record kept."""
    decoded: dict[str, Any] = orjson.loads(base64.b64decode(record["original_base64"]))
    return decoded


async def test_refused_rows_are_dead_lettered_and_the_batch_goes_on(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    nul = orjson.loads(task_created(task_id="nul").model_dump_json())
    nul["payload"]["title"] = "NUL \u0000 inside"  # jsonb refuses it
    good = [task_created(task_id=f"good-{i}") for i in range(10)]
    bad_date = event_to_row(task_created(task_id="bad-date"))
    bad_date[OCCURRED_AT] = "yesterday"  # only a broken writer of the clean topic could do this
    async with Stack(stack_settings) as stack, EventProducer(stack.settings) as producer:
        await producer.emit_many(good[:5])
        await producer.send_raw(stack.settings.topics.input_topic(good[0].family), orjson.dumps(nul), b"nul")
        await producer.emit_many(good[5:])
        await producer.send_raw(stack.settings.topics.clean, encode_rows([orjson.dumps(bad_date)]), b"bad-date")

        async def done() -> bool:
            return (await counts(db))[0] >= 10 and (await counts(db))[2] >= 10

        await wait_for(done, 60, "the good events stored")
        records = await read_topic(stack.settings, stack.settings.topics.dead_letters, expected=3)
        assert all(w.restarts == 0 for w in stack.workers), "a worker crashed"
    assert await counts(db) == (10, 10, 10)
    kinds = sorted((r["error_kind"], original(r)["task_id"]) for r in records)
    assert kinds == [("malformed", "bad-date"), ("malformed", "bad-date"), ("validation", "nul")]
    by_stage = sorted(r["error"].split(":")[0] for r in records if r["error_kind"] == "malformed")
    assert by_stage == ["sink", "writers"]  # each consumer of the clean topic says what it could not read
    sink_record = next(r for r in records if r["error"].startswith("sink"))
    assert "Invalid isoformat string: 'yesterday'" in sink_record["error"]
    assert sink_record["source_topic"] == stack.settings.topics.clean
    nul_record = next(r for r in records if r["error_kind"] == "validation")
    assert "NUL" in nul_record["error"]
