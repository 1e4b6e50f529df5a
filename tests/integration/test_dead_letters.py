"""Invalid input reaches the dead-letter topic with its reason; the worker carries on."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from devtrail.producers import EventProducer
from devtrail.schemas.codec import encode_event
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.factories import llm_called, task_created
from tests.integration.pipeline import counts, read_topic, wait_for

pytestmark = pytest.mark.integration


async def test_invalid_events_are_dead_lettered_and_valid_ones_still_flow(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    negative = orjson.loads(encode_event(llm_called()))
    negative["payload"]["input_tokens"] = -7
    good_in_bundle = task_created(task_id="in-bundle")
    bad_inputs = {
        b"definitely not json": ("decode", None),
        b'{"event_type": "no.such.type", "source": "x"}': ("validation", "no.such.type"),
        b'{"event_type": "task.started", "source": "x", "occurred_at": "2026-01-01T10:00:00"}': (
            "validation",
            "timezone",
        ),
        orjson.dumps([orjson.loads(encode_event(good_in_bundle)), negative]): ("validation", "input_tokens"),
    }
    async with Stack(stack_settings) as stack, EventProducer(stack.settings) as producer:
        topic = stack.settings.topics.input_topic(good_in_bundle.family)
        for value in bad_inputs:
            await producer.send_raw(topic, value, key=b"T")
        later = [task_created(task_id=f"after-{i}") for i in range(20)]
        await producer.emit_many(later)

        async def stored() -> bool:
            return (await counts(db))[0] >= 21

        await wait_for(stored, 60, "valid events sent after the bad ones")
        records = await read_topic(stack.settings, stack.settings.topics.dead_letters, expected=4)
        assert all(w.restarts == 0 for w in stack.workers), "a worker crashed"
    assert len(records) == 4
    by_original = {r["original_base64"]: r for r in records}
    import base64

    for value, (kind, reason) in bad_inputs.items():
        key = base64.b64encode(value if kind == "decode" or b"in-bundle" not in value else orjson.dumps(negative))
        record = by_original[key.decode()]
        assert record["error_kind"] == kind
        assert record["source_topic"] == topic
        assert isinstance(record["source_offset"], int)
        if reason:
            assert reason in record["error"]
    bundle_record = by_original[base64.b64encode(orjson.dumps(negative)).decode()]
    assert bundle_record["event_index"] == 1
    assert ["llm.called", "payload", "input_tokens"] in [e["loc"] for e in bundle_record["errors"]]
    assert await db.fetchval("SELECT count(*) FROM events WHERE task_id = 'in-bundle'") == 1
    assert await counts(db) == (21, 21, 21)
