"""Health judgements and the probe pages, without services."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter

from devtrail.consumers import metrics
from devtrail.http import LoopWatch, WorkerProbe, serve_probes, stack_health
from devtrail.settings import StackSettings
from devtrail.stack import WorkerProcess


class FakeWorker(WorkerProcess):
    """A worker whose process state is set by the test instead of a child process."""

    def __init__(self, name: str, role: str, alive: bool = True, exit_ages_s: tuple[float, ...] = ()) -> None:
        super().__init__(role, name, {}, Path("/dev/null"))
        self._is_alive = alive
        self.exits.extend((time.time() - age, 1) for age in sorted(exit_ages_s, reverse=True))
        self.restarts = len(exit_ages_s)

    @property
    def alive(self) -> bool:
        return self._is_alive


def judge(*workers: WorkerProcess, waiting: set[str] | None = None, lag_errors: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return stack_health(list(workers), waiting or set(), lag_errors or {}, restart_limit=3, restart_window_s=300)


def test_running_workers_are_ok() -> None:
    report, status = judge(FakeWorker("sink-1", "sink"), FakeWorker("processor-1", "processor"))
    assert status == "ok"
    assert report["healthy"] is True
    assert report["reasons"] == []
    assert report["workers"]["sink-1"]["status"] == "ok"


def test_a_worker_that_keeps_exiting_makes_the_stack_unhealthy() -> None:
    report, status = judge(
        FakeWorker("sink-1", "sink", exit_ages_s=(5, 20, 60)), FakeWorker("processor-1", "processor")
    )
    assert status == "unhealthy"
    assert report["healthy"] is False
    assert report["workers"]["sink-1"]["status"] == "crash_loop"
    assert report["reasons"] == ["sink-1: exited 3 times in the last 300s (last exit code 1)"]


def test_exits_older_than_the_window_are_forgiven() -> None:
    report, status = judge(FakeWorker("sink-1", "sink", exit_ages_s=(400, 500, 600, 10)))
    assert status == "ok"
    assert report["workers"]["sink-1"]["recent_exits"] == 1
    assert report["workers"]["sink-1"]["restarts"] == 4


def test_a_worker_between_two_restarts_is_degraded_not_unhealthy() -> None:
    report, status = judge(FakeWorker("writers-1", "writers", alive=False, exit_ages_s=(1,)))
    assert status == "degraded"
    assert report["healthy"] is True
    assert report["workers"]["writers-1"]["status"] == "restarting"


def test_a_stage_waiting_for_the_database_is_degraded_and_named() -> None:
    report, status = judge(
        FakeWorker("dead-letters-1", "dead-letters"), FakeWorker("processor-1", "processor"), waiting={"dead_letters"}
    )
    assert status == "degraded"
    assert report["waiting_for_database"] == ["dead_letters"]
    assert report["workers"]["dead-letters-1"]["status"] == "waiting_for_database"
    assert report["workers"]["processor-1"]["status"] == "ok"
    assert report["reasons"] == ["dead-letters-1: stage dead_letters waits for the database"]


def test_a_group_whose_lag_cannot_be_measured_is_degraded() -> None:
    report, status = judge(FakeWorker("sink-1", "sink"), lag_errors={"devtrail-sink": "OSError: refused"})
    assert status == "degraded"
    assert report["reasons"] == ["consumer lag of devtrail-sink not measured: OSError: refused"]


def test_metrics_listen_on_loopback_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVTRAIL_METRICS_HOST", raising=False)
    assert StackSettings().metrics_host == "127.0.0.1"
    monkeypatch.setenv("DEVTRAIL_METRICS_HOST", "0.0.0.0")
    assert StackSettings().metrics_host == "0.0.0.0"


def test_loop_watch_reports_a_blocked_loop_and_forgets_a_stopped_one() -> None:
    watch = LoopWatch(beat_s=0.05)
    loop = asyncio.new_event_loop()
    watch.watch(loop)
    blocking, release = threading.Event(), threading.Event()

    async def block_then_return() -> None:
        await asyncio.sleep(0.3)  # beats meanwhile
        blocking.set()
        release.wait(10)  # a blocking call on the loop: no callback runs

    thread = threading.Thread(target=loop.run_until_complete, args=(block_then_return(),))
    thread.start()
    try:
        assert watch.stalled(0.5) == []
        assert blocking.wait(10)
        time.sleep(1.0)
        (stalled_s,) = watch.stalled(0.5)
        assert stalled_s >= 0.9
    finally:
        release.set()
        thread.join(10)
    assert watch.stalled(0.5) == []  # not running any more: not judged
    loop.close()


def test_loops_created_after_watch_new_loops_are_watched() -> None:
    watch = LoopWatch()
    policy = asyncio.get_event_loop_policy()
    try:
        watch.watch_new_loops()
        loop = asyncio.new_event_loop()
    finally:
        asyncio.set_event_loop_policy(policy)
    try:
        assert loop._scheduled  # the first beat is scheduled on it
    finally:
        loop.close()


@pytest.fixture
def pages() -> Iterator[str]:
    registry = CollectorRegistry()
    Counter("devtrail_probe_test_total", "A counter of this test", registry=registry).inc(3)
    server = serve_probes("127.0.0.1", 0, registry, WorkerProbe(LoopWatch()))
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_worker_pages_serve_metrics_and_probes(pages: str) -> None:
    status, body = get(pages + "/metrics")
    assert status == 200
    assert b"devtrail_probe_test_total 3.0" in body
    assert get(pages + "/livez") == (200, b'{"live":true,"reasons":[]}')
    assert get(pages + "/readyz") == (200, b'{"ready":true,"reasons":[]}')
    assert get(pages + "/nothing")[0] == 404


def test_a_worker_waiting_for_the_database_is_live_but_not_ready(pages: str) -> None:
    metrics.DB_AVAILABLE.labels("probe_test").set(0)
    try:
        assert get(pages + "/livez")[0] == 200
        status, body = get(pages + "/readyz")
        assert status == 503
        assert orjson.loads(body) == {"ready": False, "reasons": ["stage probe_test waits for the database"]}
        metrics.DB_AVAILABLE.labels("probe_test").set(1)
        assert get(pages + "/readyz")[0] == 200
    finally:
        metrics.DB_AVAILABLE.remove("probe_test")
