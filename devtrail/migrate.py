"""``devtrail migrate``: wait for PostgreSQL, then run alembic to the wanted revision."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
from alembic import command
from alembic.config import Config

from devtrail.errors import SetupError
from devtrail.migrations import MIGRATIONS_DIR

log = logging.getLogger(__name__)


def alembic_config(database_url: str) -> Config:
    """An alembic configuration for ``database_url`` (an asyncpg/libpq DSN)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    url = database_url.replace("postgresql://", "postgresql+asyncpg://", 1).replace(
        "postgres://", "postgresql+asyncpg://", 1
    )
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def wait_for_database(database_url: str, timeout_s: float = 30.0) -> None:
    """Return once PostgreSQL accepts a connection.

    Raises:
        SetupError: it did not within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = await asyncpg.connect(database_url, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise SetupError(
                    f"PostgreSQL is not reachable at DEVTRAIL_DATABASE_URL ({exc}); start it or fix the URL"
                ) from exc
            await asyncio.sleep(0.5)
        else:
            await conn.close()
            return


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the schema up to ``revision`` (blocking; run it in a thread from async code)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Migrate the schema down to ``revision`` (``base`` removes everything)."""
    command.downgrade(alembic_config(database_url), revision)
