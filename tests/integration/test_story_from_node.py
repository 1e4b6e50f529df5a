"""A development story published as plain JSON by a Node.js service (kafkajs), one event per
message and without keys, shuffled, with duplicates, while every kind of worker is SIGKILLed:
the ``analytics`` views still match the story's truth.

Without a key, kafkajs spreads a task's or a session's events over every partition, so they
reach different processors and writer batches in any order: the links that explain an event
often arrive after it, on another partition.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from devtrail.producers.stories import Stories, shuffled_with_duplicates
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.integration.nodejs import kafkajs_modules, kafkajs_send
from tests.integration.pipeline import assert_story_matches, wait_until_applied

pytestmark = [pytest.mark.integration, pytest.mark.heavy]


async def send_with_kafkajs(modules: Path, bootstrap: str, records: list[dict[str, Any]], path: Path) -> None:
    await asyncio.to_thread(path.write_text, json.dumps(records))
    assert (await kafkajs_send(modules, bootstrap, path))["sent"] == len(records)


async def test_a_keyless_plain_json_story_from_node_survives_kills_and_matches_its_truth(
    stack_settings: StackSettings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    modules = await asyncio.to_thread(kafkajs_modules)
    stories = Stories("node", seed=11)
    events = stories.events(1500)
    truth = stories.truth
    sent = shuffled_with_duplicates(events, seed=11, duplicate_rate=0.1)
    prefix = stack_settings.topic_prefix
    records = [
        {
            "topic": f"{prefix}.{event.family.value}",
            "key": None,  # kafkajs picks the partition: a task's events land anywhere
            "value_base64": base64.b64encode(event.model_dump_json(exclude_none=True).encode()).decode(),
        }
        for event in sent
    ]
    chunks = [records[i : i + 300] for i in range(0, len(records), 300)]
    settings = stack_settings.model_copy(update={"processor_workers": 2, "batch_max_wait_ms": 100})
    async with Stack(settings) as stack:
        workers = {w.name: w for w in stack.workers}
        kills = {0: "processor-1", 1: "writers-1", 2: "sink-1", 3: "processor-2", 4: "writers-1"}
        for number, chunk in enumerate(chunks):
            path = tmp_path / f"records-{number}.json"
            await send_with_kafkajs(modules, stack.settings.kafka_bootstrap_servers, chunk, path)
            if number in kills:
                workers[kills[number]].kill()
            await asyncio.sleep(0.5)

        await wait_until_applied(db, len(events))
        assert all(workers[name].restarts >= 1 for name in set(kills.values()))
    assert int(await db.fetchval("SELECT sum(count) FROM event_counts_hourly")) == len(events)
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0
    await assert_story_matches(db, truth, len(events), least_tasks=50)
