"""A development story through the running pipeline, shuffled, with duplicates, while a
processor and the writers are SIGKILLed: every projection, link and attribution exact."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from devtrail.producers import EventProducer
from devtrail.producers.stories import Stories, shuffled_with_duplicates
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.integration.pipeline import assert_story_matches, wait_until_applied

pytestmark = [pytest.mark.integration, pytest.mark.heavy]


async def test_a_shuffled_story_survives_kills_and_every_view_matches_its_truth(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    stories = Stories("kill", seed=3)
    events = stories.events(3000)
    truth = stories.truth
    sent = shuffled_with_duplicates(events, seed=3, duplicate_rate=0.1)
    chunks = [sent[i : i + 250] for i in range(0, len(sent), 250)]
    settings = stack_settings.model_copy(update={"processor_workers": 2, "batch_max_wait_ms": 100})
    async with Stack(settings) as stack, EventProducer(stack.settings) as producer:
        workers = {w.name: w for w in stack.workers}
        kills = {3: "processor-1", 6: "writers-1", 9: "processor-2", 11: "writers-1"}
        for number, chunk in enumerate(chunks):
            await producer.emit_many(chunk)
            if number in kills:
                workers[kills[number]].kill()
            await asyncio.sleep(0.3)

        await wait_until_applied(db, len(events))
        assert all(workers[name].restarts >= 1 for name in set(kills.values()))
    await assert_story_matches(db, truth, len(events), least_tasks=100)
