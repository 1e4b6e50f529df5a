"""The README's code runs as written against ``devtrail up``, with nothing exported.

``devtrail up`` is started from a fresh directory, as a new user would (no ``DEVTRAIL_*``
variable, the default data directory). Every Python block of the README is extracted and
run as a script; then ``devtrail timeline`` and ``devtrail dlq list``, run from the same
directory with nothing set, find the running stack and the event the README sent.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from devtrail.embedded import port_is_free

README = Path(__file__).resolve().parents[2] / "README.md"
ENV = {"PATH": "/usr/bin:/bin"}  # HOME is set per test: nothing of the developer's leaks in


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh directory with a short path (PostgreSQL's socket lives under it)."""
    path = Path(tempfile.mkdtemp(prefix="dt-rd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def devtrail(workdir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtrail", *args],
        cwd=workdir, env={**ENV, "HOME": str(workdir)}, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def read_until_up(up: subprocess.Popen[str]) -> str:
    """The line ``devtrail up`` prints once it is up (it must not exit or say much before)."""
    assert up.stdout is not None
    seen: list[str] = []
    while not (seen and seen[-1].startswith("devtrail is up")):
        assert len(seen) < 60 and up.poll() is None, "".join(seen)
        seen.append(up.stdout.readline())
    return seen[-1]


def wait_for_the_readme_event(workdir: Path) -> None:
    """Until ``devtrail timeline`` shows the README snippet's ``task.completed`` (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        shown = devtrail(workdir, "timeline", "task", "T-42", "--json")
        assert shown.returncode == 0, shown.stderr[-2000:]
        if any(e.get("event_type") == "task.completed" for e in orjson.loads(shown.stdout)):
            return
        assert time.monotonic() < deadline, f"the README's event was not stored: {shown.stdout[-2000:]}"
        time.sleep(1)


def test_the_readme_has_python_to_run() -> None:
    blocks = python_blocks(README.read_text())
    assert blocks, "no ```python block in the README"
    assert any("EventProducer(ProducerSettings())" in block for block in blocks)


#: Spends $3 on LLM calls for a task, then completes it: the README's rule must flag it.
EXPENSIVE_TASK = """
import asyncio
from devtrail.producers import EventProducer, ProducerSettings
from devtrail.schemas.events import LlmCalled, LlmCalledPayload, TaskCompleted, TaskCompletedPayload

async def main() -> None:
    call = LlmCalledPayload(provider="anthropic", model="m", input_tokens=1000, output_tokens=50, cost_usd=1.0)
    async with EventProducer(ProducerSettings()) as producer:
        await producer.emit_many([LlmCalled(source="e2e", task_id="T-rule", payload=call) for _ in range(3)])
        await producer.emit(TaskCompleted(source="e2e", task_id="T-rule", payload=TaskCompletedPayload()))

asyncio.run(main())
"""


def rule_module(markdown: str) -> tuple[str, str]:
    """The README's rule module: (module name, source), from the block that starts ``# NAME.py``."""
    for block in python_blocks(markdown):
        first = block.splitlines()[0]
        if first.startswith("# ") and ".py" in first and "@rule(" in block:
            return first[2:].split(".py")[0], block
    raise AssertionError("no ```python block of the README starts with `# <module>.py` and defines a @rule")


def test_the_readme_runs_as_written_against_devtrail_up(workdir: Path) -> None:
    if not port_is_free(9092):
        pytest.skip("127.0.0.1:9092 is taken (a devtrail up of yours?): this test starts its own there")
    module, source = rule_module(README.read_text())
    (workdir / f"{module}.py").write_text(source)  # as the README says: DEVTRAIL_RULES=<module>, from its directory
    with subprocess.Popen(
        [sys.executable, "-m", "devtrail", "up", "--metrics-port", "0"],
        cwd=workdir, env={**ENV, "HOME": str(workdir), "DEVTRAIL_RULES": module}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    ) as up:  # fmt: skip
        try:
            assert "Kafka: 127.0.0.1:9092" in read_until_up(up)
            assert (workdir / ".devtrail" / "up.json").exists()

            for number, block in enumerate(python_blocks(README.read_text())):
                script = workdir / f"readme_{number}.py"
                script.write_text(block)
                ran = subprocess.run(
                    [sys.executable, str(script)],
                    cwd=workdir, env={**ENV, "HOME": str(workdir)}, capture_output=True, text=True, timeout=60,
                    check=False,
                )  # fmt: skip
                assert ran.returncode == 0, f"README block {number} failed:\n{block}\n{ran.stderr[-3000:]}"
                assert "Unclosed" not in ran.stderr, ran.stderr[-3000:]

            wait_for_the_readme_event(workdir)
            listed = devtrail(workdir, "dlq", "list")
            assert listed.returncode == 0, listed.stderr[-2000:]
            url = devtrail(workdir, "db", "url")
            recorded = orjson.loads((workdir / ".devtrail" / "up.json").read_bytes())
            assert url.returncode == 0 and url.stdout.strip() == recorded["database_url"]
            counted = devtrail(workdir, "psql", "-At", "-c", "SELECT count(*) FROM events WHERE task_id = 'T-42'")
            assert counted.returncode == 0 and counted.stdout.strip() == "1", counted.stderr[-2000:]

            (workdir / "expensive.py").write_text(EXPENSIVE_TASK)
            ran = subprocess.run(
                [sys.executable, "expensive.py"], cwd=workdir, env={**ENV, "HOME": str(workdir)},
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert ran.returncode == 0, ran.stderr[-3000:]
            flagged = "SELECT payload->>'summary' FROM events WHERE event_type = 'alert.raised' " \
                "AND payload->>'rule' = 'expensive_task' AND task_id = 'T-rule'"  # fmt: skip
            deadline = time.monotonic() + 90
            while True:
                alerted = devtrail(workdir, "psql", "-At", "-c", flagged)
                if alerted.stdout.strip():
                    break
                assert time.monotonic() < deadline, f"the README's rule raised no alert: {alerted.stderr[-2000:]}"
                time.sleep(1)
            assert alerted.stdout.strip() == "task T-rule cost $3.00 in 3 LLM calls"

            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=60) == 0
            assert not (workdir / ".devtrail" / "up.json").exists()
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
    # nothing runs now: the data directory's PostgreSQL is started alone to read what was stored
    stopped = devtrail(workdir, "timeline", "task", "T-42", "--json")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert any(e.get("event_type") == "task.completed" for e in orjson.loads(stopped.stdout))


def test_the_readme_snippet_finds_an_up_on_another_port(workdir: Path) -> None:
    """``devtrail up`` on a port of the user's choosing: the snippet, run from the same directory with
    nothing exported, finds it through ``.devtrail/up.json``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with subprocess.Popen(
        [sys.executable, "-m", "devtrail", "up", "--metrics-port", "0"],
        cwd=workdir, env={**ENV, "HOME": str(workdir), "DEVTRAIL_EMBEDDED_KAFKA_PORT": str(port)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as up:  # fmt: skip
        try:
            assert f"Kafka: 127.0.0.1:{port}" in read_until_up(up)
            block = python_blocks(README.read_text())[0]
            (workdir / "readme_0.py").write_text(block)
            ran = subprocess.run(
                [sys.executable, "readme_0.py"], cwd=workdir, env={**ENV, "HOME": str(workdir)},
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert ran.returncode == 0, f"the README's first block failed:\n{ran.stderr[-3000:]}"
            wait_for_the_readme_event(workdir)
            up.send_signal(signal.SIGTERM)
            assert up.wait(timeout=60) == 0
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()


def test_devtrail_up_says_what_to_do_when_its_port_is_taken(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = subprocess.run(
            [sys.executable, "-m", "devtrail", "up", "--metrics-port", "0"],
            cwd=workdir, env={**ENV, "HOME": str(workdir), "DEVTRAIL_EMBEDDED_KAFKA_PORT": str(port)},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert ran.returncode != 0
    assert f"port {port} on 127.0.0.1 is taken" in ran.stderr
    assert "DEVTRAIL_EMBEDDED_KAFKA_PORT" in ran.stderr


def test_psql_opens_the_database_alone_and_db_url_says_when_there_is_none(workdir: Path) -> None:
    nothing = devtrail(workdir, "db", "url")
    assert nothing.returncode != 0 and "start `devtrail up`" in nothing.stderr
    counted = devtrail(workdir, "psql", "-At", "-c", "SELECT count(*) FROM events", timeout=120)
    assert counted.returncode == 0, counted.stderr[-2000:]
    assert counted.stdout.strip() == "0"  # migrated, empty: no broker, no workers were started
    data = str(workdir / ".devtrail" / "postgres")
    left = subprocess.run(["pgrep", "-f", data], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", "the embedded PostgreSQL was left running"
