"""The consumer's one database connection, and the retry policy around it.

A write either commits within ``db_write_timeout_s`` or is abandoned; an error worth
retrying (``devtrail.consumers.errors.judge``) closes the connection, and ``wait_until_back`` tries
again with backoff until PostgreSQL accepts a connection. The caller decides what to read
again (the consumer seeks to the offsets the database holds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from devtrail.consumers import metrics
from devtrail.consumers.errors import is_retriable_db_error
from devtrail.consumers.settings import CheckpointSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseLink:
    """A connection that is opened on demand and replaced after a retriable failure.

    Args:
        settings: the database URL, commit mode, timeouts and backoff.
        stage: the consumer's name in metrics and logs.
    """

    def __init__(self, settings: CheckpointSettings, stage: str) -> None:
        self._settings = settings
        self._stage = stage
        self._conn: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        """The open connection, opened if there is none."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._settings.database_url)
            if not self._settings.db_synchronous_commit:
                # Safe: offsets commit with the rows (see CheckpointSettings.db_synchronous_commit).
                await self._conn.execute("SET synchronous_commit TO off")
        return self._conn

    async def within_timeout(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on the connection; it must finish within ``db_write_timeout_s``.

        Raises:
            TimeoutError: it did not (a lock held that long, or a connection that died
                without asyncpg noticing: a COPY waiting for the socket to drain when the
                server crashed). Both are retriable.
        """
        conn = await self.connection()
        timeout = self._settings.db_write_timeout_s
        try:
            return await asyncio.wait_for(work(conn), timeout)
        except TimeoutError:
            raise TimeoutError(f"the batch did not commit within {timeout:.0f}s") from None

    def reset(self) -> None:
        """Drop the connection at once (whatever state it is in)."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def wait_until_back(self, cause: BaseException) -> None:
        """After ``cause``, wait with backoff until the database accepts a connection again.

        Raises:
            Exception: a failure to connect that is not worth retrying (bad credentials).
        """
        metrics.DB_RETRIES.labels(self._stage).inc()
        metrics.DB_AVAILABLE.labels(self._stage).set(0)
        log.warning(
            "%s: database write failed (%s); resuming from the stored offsets once it is back", self._stage, cause
        )
        self.reset()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.connection()
            except Exception as exc:
                if not is_retriable_db_error(exc):
                    raise
                backoff = min(self._settings.db_retry_max_backoff_s, 0.1 * 2**attempt)
                log.warning(
                    "%s: database unavailable (%s); attempt %d, next in %.1fs", self._stage, exc, attempt, backoff
                )
                await asyncio.sleep(backoff)
            else:
                metrics.DB_AVAILABLE.labels(self._stage).set(1)
                log.warning("%s: database back after %d attempts", self._stage, attempt)
                return

    async def retrying(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` (a read), waiting for the database as long as it is away."""
        while True:
            try:
                return await work(await self.connection())
            except Exception as exc:
                if not is_retriable_db_error(exc):
                    raise
                await self.wait_until_back(exc)

    async def close(self) -> None:
        """Close the connection, if open."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
