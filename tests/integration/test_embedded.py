"""The embedded PostgreSQL: started with its tuning, and the tuning applied only once."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from devtrail.embedded import TUNING, EmbeddedPostgres

pytestmark = pytest.mark.integration


async def test_embedded_postgres_runs_with_its_tuning_and_restarts_for_it_only_once(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", database="tuned")
    url = await server.start()
    try:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT name, source, pending_restart FROM pg_settings WHERE name = ANY($1::text[])", list(TUNING)
            )
            applied = {r["name"]: (r["source"], r["pending_restart"]) for r in rows}
            assert applied == dict.fromkeys(TUNING, ("configuration file", False))
            shared_buffers = await conn.fetchval("SELECT pg_size_bytes(current_setting('shared_buffers'))")
            assert shared_buffers == await conn.fetchval("SELECT pg_size_bytes($1)", TUNING["shared_buffers"])
        finally:
            await conn.close()
        assert await server.tune() is False  # already in effect: no second restart
    finally:
        server.stop()
