"""The CLI as a user runs it, on the embedded stack it starts itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import psutil
import pytest

pytestmark = pytest.mark.e2e


def devtrail(*args: str, data_dir: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env_free = {"PATH": "/usr/bin:/bin", "HOME": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "devtrail", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_free,
        check=False,
    )


def test_demo_reports_exactly_once_as_json(tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = Path("/tmp") / tmp_path_factory.mktemp("e2e").name  # short: the PostgreSQL socket lives there
    data_dir.mkdir(exist_ok=True)
    result = devtrail(
        "demo", "--events", "4000", "--duplicate-rate", "0.1", "--invalid", "6", "--json", data_dir=data_dir
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    report = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert report["stored"] == report["unique"] == report["aggregated"] == 4000
    assert report["duplicates_sent"] == 400
    assert report["produced"] == 4400
    assert report["dead_lettered"] == 6
    assert report["events_per_second"] > 0
    assert "every unique event stored once" in result.stdout
    assert "draining" in result.stderr or "drained" in result.stderr


def test_bad_duplicate_rate_is_refused_with_a_reason(tmp_path: Path) -> None:
    result = devtrail("demo", "--duplicate-rate", "2", data_dir=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "--duplicate-rate must be between 0 and 1" in result.stderr


def test_unreachable_database_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtrail", "migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/x"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DEVTRAIL_DATABASE_WAIT_S": "1"},
    )
    assert result.returncode == 2
    assert "PostgreSQL is not reachable" in result.stderr


def test_up_serves_health_and_metrics_and_stops_cleanly_on_sigterm(tmp_path_factory: pytest.TempPathFactory) -> None:
    import signal
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data_dir = Path("/tmp") / tmp_path_factory.mktemp("up").name
    data_dir.mkdir(exist_ok=True)
    with subprocess.Popen(
        [sys.executable, "-m", "devtrail", "up", "--data-dir", str(data_dir), "--metrics-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(data_dir)},
    ) as up:
        try:
            children = _check_running_stack(up, port)
            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=60) == 0
            assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()


def _check_running_stack(up: subprocess.Popen[str], port: int) -> list[psutil.Process]:
    """Check banner, health and metrics of a running ``devtrail up``; return its child processes."""
    import time

    assert up.stdout is not None
    banner = [up.stdout.readline() for _ in range(4)]
    assert banner[0].startswith("devtrail is up"), banner
    children = psutil.Process(up.pid).children(recursive=True)
    assert len(children) >= 4  # broker, PostgreSQL, the workers
    deadline = time.monotonic() + 30
    while True:
        try:
            health = orjson.loads(_get(f"http://127.0.0.1:{port}/healthz"))
            break
        except OSError:
            assert time.monotonic() < deadline, "no healthy /healthz"
            time.sleep(0.5)
    assert health["healthy"] is True
    assert {"processor-1", "sink-1", "aggregator-1"} <= set(health["workers"])
    bootstrap = banner[0].split("Kafka: ")[1].split()[0]
    asyncio.run(_emit_tasks(bootstrap, 25))
    stored = 'devtrail_events_out_total{stage="sink"} 25.0'
    while stored not in (metrics := _get(f"http://127.0.0.1:{port}/metrics")):
        assert time.monotonic() < deadline + 60, metrics[-2000:]
        time.sleep(0.5)
    return children


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url) as response:
        return str(response.read().decode())


async def _emit_tasks(bootstrap: str, count: int) -> None:
    from producers import EventProducer, ProducerSettings
    from tests.factories import task_created

    async with EventProducer(ProducerSettings(kafka_bootstrap_servers=bootstrap)) as producer:
        await producer.emit_many([task_created(task_id=f"up-{i}") for i in range(count)])
