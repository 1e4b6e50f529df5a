"""A downstream consumer in another language (kafkajs, Node.js) reads the clean topic.

devtrail's workers publish the clean topic with ``DEVTRAIL_KAFKA_SHARED_COMPRESSION_TYPE``
(snappy by default), which kafkajs reads with its pure-JavaScript codec, as
docs/consumers.md shows; zstd, the SDK's default for the input topics, it cannot read. The
reader (``tests/integration/node/clean_reader.js``) decodes every bundle the way the doc
says and must see every event exactly as PostgreSQL stored it.
"""

from __future__ import annotations

import asyncio
import json
import os

import asyncpg
import pytest

from devtrail.producers import EventProducer
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.factories import llm_called, task_created
from tests.integration.nodejs import NODE_DIR, kafkajs_modules
from tests.integration.pipeline import counts, wait_for

pytestmark = pytest.mark.integration


async def read_clean_with_kafkajs(bootstrap: str, topic: str, expected: int) -> dict[str, object]:
    modules = await asyncio.to_thread(kafkajs_modules)
    env = {**os.environ, "NODE_PATH": str(modules), "KAFKAJS_NO_PARTITIONER_WARNING": "1"}
    process = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "clean_reader.js"), bootstrap, topic, str(expected), "60000",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-2000:]
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_kafkajs_reads_every_event_of_the_clean_topic_as_stored(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    assert stack_settings.kafka_shared_compression_type == "snappy"  # the default under test
    events = [task_created(task_id=f"T-{i}") for i in range(40)] + [llm_called(session_id=f"S-{i}") for i in range(40)]
    async with Stack(stack_settings) as stack, EventProducer(stack.settings) as producer:
        await producer.emit_many(events)

        async def stored() -> bool:
            return (await counts(db))[0] >= len(events)

        await wait_for(stored, 60, "the events stored")
        result = await read_clean_with_kafkajs(
            stack.settings.kafka_bootstrap_servers, stack.settings.topics.clean, len(events)
        )
    rows = result["rows"]
    assert isinstance(rows, list)
    by_id = {row["event_id"]: row for row in rows}
    assert len(rows) == len(by_id) == len(events)
    stored_rows = await db.fetch("SELECT event_id::text, event_type, task_id, payload FROM events")
    assert {r["event_id"] for r in stored_rows} == set(by_id)
    for record in stored_rows:
        row = by_id[record["event_id"]]
        assert (row["event_type"], row["task_id"]) == (record["event_type"], record["task_id"])
        assert row["payload"] == json.loads(record["payload"])
