"""Shared fixtures: real Kafka and PostgreSQL for the session, fresh names per test."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from devtrail import migrate
from devtrail.settings import StackSettings
from tests.services import kafka_service, postgres_service


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    # Short path: a PostgreSQL socket path must stay under ~100 characters.
    with tempfile.TemporaryDirectory(prefix="dt-", dir="/tmp") as path:
        yield Path(path)


@pytest.fixture(scope="session")
async def kafka_bootstrap(session_dir: Path) -> AsyncIterator[str]:
    async with kafka_service(session_dir) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
async def postgres_admin_url(session_dir: Path) -> AsyncIterator[str]:
    async with postgres_service(session_dir) as url:
        yield url


def _with_database(url: str, database: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@pytest.fixture
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A freshly created and migrated database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(postgres_admin_url, name)
    await asyncio.to_thread(migrate.upgrade, url)
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def stack_settings(kafka_bootstrap: str, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> StackSettings:
    """Settings for a stack on the session's services, with topics and groups of its own."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return StackSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        topic_prefix=prefix,
        processor_group=f"{prefix}-processor",
        sink_group=f"{prefix}-sink",
        writers_group=f"{prefix}-writers",
        dead_letter_group=f"{prefix}-dead-letters",
        rules_group=f"{prefix}-rules",
        # The rules worker runs, without the built-in rules: the events they derive would be
        # rows the counting tests do not expect. tests/integration/test_rules.py turns them on.
        rules_builtin="none",
        data_dir=tmp_path_factory.mktemp("stack"),
        metrics_port=0,
    )
