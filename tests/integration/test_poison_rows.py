"""Events PostgreSQL refuses are dead-lettered one by one; the rest of the batch is written."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from consumers.clean import OCCURRED_AT, encode_rows, event_to_row
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from producers import EventProducer
from tests.factories import task_created
from tests.integration.pipeline import counts, read_topic, wait_for

pytestmark = pytest.mark.integration


async def test_refused_rows_are_dead_lettered_and_the_batch_goes_on(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    nul = task_created(task_id="nul", payload={"title": "NUL \u0000 inside"})  # jsonb refuses \\u0000
    good = [task_created(task_id=f"good-{i}") for i in range(10)]
    bad_date = event_to_row(task_created(task_id="bad-date"))
    bad_date[OCCURRED_AT] = "yesterday"  # only a broken writer of the clean topic could do this
    async with Stack(stack_settings) as stack, EventProducer(stack.settings) as producer:
        await producer.emit_many([*good[:5], nul, *good[5:]])
        await producer.send_raw(stack.settings.topics.clean, encode_rows([orjson.dumps(bad_date)]), b"bad-date")

        async def done() -> bool:
            return (await counts(db))[0] >= 10 and (await counts(db))[2] >= 11

        await wait_for(done, 60, "the good events stored")
        records = await read_topic(stack.settings, stack.settings.topics.dead_letters, expected=3)
        assert all(w.restarts == 0 for w in stack.workers), "a worker crashed"
    assert await counts(db) == (10, 10, 11)  # the aggregator does not store payloads: it counts the NUL event
    reasons = sorted((r["error"].split(":")[0], orjson.loads(r["original"])["task_id"]) for r in records)
    assert reasons == [("aggregator", "bad-date"), ("sink", "bad-date"), ("sink", "nul")]
    nul_record = next(r for r in records if orjson.loads(r["original"])["task_id"] == "nul")
    assert nul_record["error_kind"] == "database"
    assert "SQLSTATE 22" in nul_record["error"]
    assert nul_record["source_topic"] == stack.settings.topics.clean
