"""What the operator sees: consumer lag, restarts, the last commit, health and probes, with
real workers, broker and PostgreSQL (crashed on purpose in one test)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from devtrail.embedded import free_port
from devtrail.http import serve
from devtrail.producers import EventProducer, Workload
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.integration.pipeline import counts, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@contextlib.asynccontextmanager
async def served(stack: Stack) -> AsyncIterator[str]:
    """Serve the stack's pages on a free port; yield their base URL."""
    runner = await serve(stack, 0)
    try:
        yield base_url(runner)
    finally:
        await runner.cleanup()


def base_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def samples(base: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` on ``/metrics``, keyed by their sorted labels."""
    _, text = await get(base + "/metrics")
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def lag_of(base: str, group: str) -> dict[tuple[str, str], float]:
    """``(topic, partition) -> lag`` of ``group``."""
    lags = await samples(base, "devtrail_consumer_lag")
    return {(dict(k)["topic"], dict(k)["partition"]): v for k, v in lags.items() if dict(k)["group"] == group}


async def health(base: str) -> tuple[int, dict[str, Any]]:
    status, body = await get(base + "/healthz")
    return status, orjson.loads(body)


@pytest.fixture
def settings(stack_settings: StackSettings) -> StackSettings:
    return stack_settings.model_copy(update={"processor_workers": 1, "lag_check_interval_s": 0.5})


async def test_metrics_listen_on_loopback_by_default(settings: StackSettings) -> None:
    assert "metrics_host" not in settings.model_fields_set
    async with Stack(settings, roles=()) as stack, served(stack) as base:
        assert base.startswith("http://127.0.0.1:")
        assert (await get(base + "/metrics"))[0] == 200
        status, report = await health(base)
        assert (status, report["status"], report["workers"]) == (200, "ok", {})


async def test_healthz_turns_unhealthy_when_a_worker_keeps_exiting(settings: StackSettings) -> None:
    settings = settings.model_copy(update={"health_restart_limit": 2, "health_restart_window_s": 120})
    # Valid for the supervisor (model_copy does not validate), refused by the worker's own
    # settings: it exits at once, every time.
    refused = settings.model_copy(update={"batch_max_events": 0})
    async with Stack(settings, roles=()) as stack, served(stack) as base:
        await stack.start_workers(("writers",), refused)

        async def unhealthy() -> bool:
            return (await health(base))[0] == 503

        await wait_for(unhealthy, 60, "/healthz to report the crash loop")
        _, report = await health(base)
        worker = report["workers"]["writers-1"]
        assert report["status"] == "unhealthy"
        assert worker["status"] == "crash_loop"
        assert worker["recent_exits"] >= 2
        assert "exited" in worker["reason"] and "(last exit code 1)" in worker["reason"]
        assert (await get(base + "/livez"))[0] == 503
        assert (await get(base + "/readyz"))[0] == 503
        restarts = await samples(base, "devtrail_worker_restarts_total")
        assert restarts[(("worker", "writers-1"),)] >= 2


async def test_lag_appears_for_a_stopped_consumer_and_drains_to_zero(
    settings: StackSettings, db: asyncpg.Connection
) -> None:
    events = list(Workload("lag", seed=7).events(2000))
    s = settings
    async with Stack(s, roles=("processor",)) as stack, served(stack) as base:
        async with EventProducer(stack.settings) as producer:
            await producer.emit_many(events)

        async def sink_behind() -> bool:
            return sum((await lag_of(base, s.sink_group)).values()) > 0

        await wait_for(sink_behind, 90, "lag of the (not yet running) sink's group")
        assert set(await lag_of(base, s.writers_group)) == {(s.topics.clean, str(p)) for p in range(s.partitions)}
        assert {topic for topic, _ in await lag_of(base, s.processor_group)} == set(s.topics.input_topics)

        await stack.start_workers(("sink", "writers"))

        async def drained() -> bool:
            if (await counts(db))[0] < len(events) or (await counts(db))[2] < len(events):
                return False
            lags = [await lag_of(base, group) for group in (s.sink_group, s.writers_group, s.processor_group)]
            return all(lag and sum(lag.values()) == 0 for lag in lags)

        await wait_for(drained, 120, "every event stored and every group's lag at 0")
        last_commit = await samples(base, "devtrail_last_commit_timestamp_seconds")
        assert time.time() - last_commit[(("stage", "sink"),)] < 120
        assert time.time() - last_commit[(("stage", "writers"),)] < 120
        status, report = await health(base)
        assert (status, report["status"]) == (200, "ok"), report


async def test_a_worker_pod_serves_its_probes_and_its_groups_lag(settings: StackSettings) -> None:
    """``devtrail run sink`` with a metrics port, as in Kubernetes: ``/livez``, ``/readyz``
    and ``/metrics`` with its group's lag, on 127.0.0.1 unless told otherwise."""
    port = free_port()
    async with Stack(settings, roles=()) as stack:
        env = {**os.environ, **stack.settings.worker_environment(), "DEVTRAIL_METRICS_PORT": str(port)}
        env.pop("DEVTRAIL_METRICS_HOST", None)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devtrail", "run", "sink", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:

            async def lag_exported() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    return len(await lag_of(base, settings.sink_group)) == settings.partitions
                return False

            await wait_for(lag_exported, 60, "the worker's /metrics with its group's lag")
            assert await get(base + "/livez") == (200, '{"live":true,"reasons":[]}')
            assert await get(base + "/readyz") == (200, '{"ready":true,"reasons":[]}')
        finally:
            worker.terminate()
            assert await asyncio.wait_for(worker.wait(), 30) == 0


async def test_database_down_is_degraded_not_unhealthy(kafka_bootstrap: str) -> None:
    """PostgreSQL crashed: ``/healthz`` says degraded (HTTP 200) and which stages wait,
    ``/readyz`` fails, ``/livez`` does not; all ok again once it is back."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    data_dir = Path(tempfile.mkdtemp(prefix="dt-obs-", dir="/tmp"))  # short: the PostgreSQL socket lives there
    settings = StackSettings(
        kafka_bootstrap_servers=kafka_bootstrap,  # the database is the stack's own, embedded
        topic_prefix=prefix,
        processor_group=f"{prefix}-processor",
        sink_group=f"{prefix}-sink",
        writers_group=f"{prefix}-writers",
        rules_group=f"{prefix}-rules",
        dead_letter_group=f"{prefix}-dead-letters",
        data_dir=data_dir,
        metrics_port=0,
        processor_workers=1,
        lag_check_interval_s=0.5,
        db_retry_max_backoff_s=1.0,
    )
    try:
        await _crash_and_restore_the_database(settings)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _crash_and_restore_the_database(settings: StackSettings) -> None:
    workload = Workload("db-down", seed=9)
    async with Stack(settings) as stack, served(stack) as base, EventProducer(stack.settings) as producer:
        await producer.emit_many(list(workload.events(300)))
        await wait_for(lambda: _stored(stack, 300), 90, "the first events stored")
        await asyncio.to_thread(stack.postgres.crash)
        await producer.emit_many(list(workload.events(300)))

        async def sink_waits() -> bool:
            return "sink" in (await health(base))[1]["waiting_for_database"]

        await wait_for(sink_waits, 60, "/healthz to name the sink as waiting for the database")
        status, report = await health(base)
        assert (status, report["status"], report["healthy"]) == (200, "degraded", True), report
        assert report["workers"]["sink-1"]["status"] == "waiting_for_database"
        assert "sink-1: stage sink waits for the database" in report["reasons"]
        assert (await get(base + "/livez"))[0] == 200
        assert (await get(base + "/readyz"))[0] == 503
        assert (await samples(base, "devtrail_database_available"))[(("stage", "sink"),)] == 0

        await stack.postgres.start()

        async def ok_again() -> bool:
            return (await health(base))[1]["status"] == "ok"

        await wait_for(ok_again, 90, "/healthz ok once the database is back")
        await wait_for(lambda: _stored(stack, 600), 90, "every event stored after the outage")
        assert (await get(base + "/readyz"))[0] == 200


async def _stored(stack: Stack, expected: int) -> bool:
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events")) >= expected
    finally:
        await conn.close()
