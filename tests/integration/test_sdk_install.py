"""The light SDK, as a service installs it: the wheel built from this checkout, installed with
pip into a clean virtual environment (its dependencies from the package index), brings only
what emitting needs, installs one importable name, and its producer publishes an event that
the pipeline stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import venv
import zipfile
from pathlib import Path

import asyncpg
import pytest

from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.integration.pipeline import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

#: What installing ``devtrail`` (no extra) may bring: the SDK's own dependencies and theirs.
SDK_CLOSURE = {
    "devtrail",
    "aiokafka",
    "async-timeout",
    "cramjam",
    "packaging",
    "typing-extensions",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "pydantic-settings",
    "python-dotenv",
    "orjson",
    "pip",
    "setuptools",
}
#: The pipeline's dependencies, which a service that only emits must not get.
PIPELINE = {
    "faust-streaming",
    "mode-streaming",
    "asyncpg",
    "alembic",
    "sqlalchemy",
    "prometheus-client",
    "aiohttp",
    "rich",
}

EMIT = """
import asyncio, sys
from devtrail.producers import EventProducer, ProducerSettings
from devtrail.schemas import TaskCompleted, TaskCompletedPayload

async def main() -> None:
    async with EventProducer(ProducerSettings()) as producer:
        await producer.emit(
            TaskCompleted(source="sdk-venv", task_id=sys.argv[1], payload=TaskCompletedPayload(duration_ms=7))
        )

asyncio.run(main())
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"faust", "mode", "asyncpg", "alembic", "sqlalchemy",
               "prometheus_client", "aiohttp", "rich"})
assert not heavy, heavy
print("emitted")
"""


def _run(
    *command: str | Path, env: dict[str, str] | None = None, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=600, env=env, check=False, cwd=cwd
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{command} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtual environment with the wheel of this checkout installed, no extra."""
    base = tmp_path_factory.mktemp("sdk")
    wheels = base / "wheels"
    build = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, ROOT)
    assert "multiple top-level packages" not in build.stdout + build.stderr
    (wheel,) = wheels.glob("devtrail-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"devtrail"}, tops
    venv.create(base / "venv", with_pip=True, clear=True)
    python = base / "venv" / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    return python


def test_the_sdk_brings_only_what_emitting_needs(sdk_python: Path) -> None:
    listed = _run(sdk_python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check").stdout
    installed = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed)}
    assert "devtrail" in installed
    assert not installed & PIPELINE, installed & PIPELINE
    assert installed <= SDK_CLOSURE, installed - SDK_CLOSURE
    site = Path(_run(sdk_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    record = next(site.glob("devtrail-*.dist-info")) / "RECORD"
    tops = {line.split("/")[0] for line in record.read_text().splitlines() if "/" in line}
    assert {top for top in tops if not top.endswith(".dist-info") and top != ".."} == {"devtrail"}, tops
    elsewhere = sdk_python.parents[2]  # not the checkout, whose folders would be importable from there
    for name in ("schemas", "producers", "consumers", "migrations", "bench"):
        done = _run(sdk_python, "-c", f"import {name}", check=False, cwd=elsewhere)
        assert "ModuleNotFoundError" in done.stderr, f"{name} is importable"


def test_the_command_without_the_pipeline_says_what_to_install(sdk_python: Path) -> None:
    done = _run(sdk_python.parent / "devtrail", "up", check=False)
    assert done.returncode != 0
    assert "pip install 'devtrail[pipeline]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


async def test_the_sdk_alone_publishes_an_event_the_pipeline_stores(
    sdk_python: Path, stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    task = f"T-sdk-{uuid.uuid4().hex[:8]}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS": stack_settings.kafka_bootstrap_servers,
        "DEVTRAIL_TOPIC_PREFIX": stack_settings.topic_prefix,
    }
    async with Stack(stack_settings):
        done = _run(sdk_python, "-c", EMIT, task, env=env, cwd=sdk_python.parents[2])
        assert done.stdout.strip() == "emitted"

        async def stored() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM events WHERE task_id = $1", task))

        await wait_for(stored, 60, f"the event of {task} stored")
    row = await db.fetchrow("SELECT event_type, source FROM events WHERE task_id = $1", task)
    assert (row["event_type"], row["source"]) == ("task.completed", "sdk-venv")
