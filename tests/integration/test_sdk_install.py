"""The light SDK, as a service installs it: the wheel built from this checkout, installed with
pip into a clean virtual environment (its dependencies from the package index), brings only
what emitting needs, installs one importable name, and its producer publishes an event that
the pipeline stores."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
import venv
import zipfile
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from devtrail.migrate import alembic_config
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
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, as `pip wheel` builds it for a service."""
    wheels = tmp_path_factory.mktemp("wheels")
    source = tmp_path_factory.mktemp("source")  # a copy: the build writes build/ where it runs
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("devtrail", "schemas", "producers", "consumers", "migrations", "bench"):
        shutil.copytree(
            ROOT / folder, source / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "results")
        )
    build = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, source)
    assert "multiple top-level packages" not in build.stdout + build.stderr
    (built,) = wheels.glob("devtrail-*.whl")
    with zipfile.ZipFile(built) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"devtrail"}, tops
    return built


def _venv_with(base: Path, requirement: str) -> Path:
    venv.create(base / "venv", with_pip=True, clear=True)
    python = base / "venv" / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement)
    return python


@pytest.fixture(scope="module")
def sdk_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtual environment with the wheel of this checkout installed, no extra."""
    return _venv_with(tmp_path_factory.mktemp("sdk"), str(wheel))


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
    sdk_modules = _run(sdk_python, "-c", IMPORT_SDK, cwd=elsewhere).stdout.split()
    assert {"devtrail.producers.producer", "devtrail.producers.sync", "devtrail.schemas.events"} <= set(sdk_modules)
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


async def test_the_pipeline_wheel_has_every_module_and_migrates_a_database(
    wheel: Path, tmp_path: Path, postgres_admin_url: str
) -> None:
    """The ``pipeline`` extra from the same wheel: every module imports from the installed
    files (not the checkout) and ``devtrail migrate`` finds its revisions there."""
    python = await asyncio.to_thread(_venv_with, tmp_path, f"{wheel}[pipeline]")
    modules = (await asyncio.to_thread(_run, python, "-c", IMPORT_ALL, cwd=tmp_path)).stdout.split()
    assert "devtrail.consumers.rules.engine" in modules
    assert "devtrail.consumers.aggregates.verify" in modules
    assert "devtrail.migrations.versions" in modules
    database = f"t_wheel_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_admin_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        base, _, query = postgres_admin_url.partition("?")
        url = f"{base.rsplit('/', 1)[0]}/{database}" + (f"?{query}" if query else "")
        await asyncio.to_thread(_run, python.parent / "devtrail", "migrate", "--database-url", url, cwd=tmp_path)
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT version_num FROM alembic_version") == _head()
            assert await conn.fetchval("SELECT to_regclass('aggregates.claims') IS NOT NULL")
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await admin.close()


def _head() -> str | None:
    """The newest revision of the checkout's migrations."""
    return ScriptDirectory.from_config(alembic_config("postgresql://unused/")).get_current_head()


#: Imports every module of the SDK (``devtrail.producers``, ``devtrail.schemas``): none may need the pipeline.
IMPORT_SDK = """
import importlib, pkgutil, devtrail.producers, devtrail.schemas
for package in (devtrail.producers, devtrail.schemas):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
        print(module.name)
"""

#: Imports every module of the installed package.
IMPORT_ALL = """
import importlib, pkgutil, devtrail
assert "site-packages" in devtrail.__file__, devtrail.__file__
for module in pkgutil.walk_packages(devtrail.__path__, "devtrail."):
    if module.name.startswith("devtrail.bench.") or module.name in ("devtrail.__main__", "devtrail.migrations.env"):
        continue  # optional tools; a script that runs; alembic's, run only by alembic
    importlib.import_module(module.name)
    print(module.name)
"""
