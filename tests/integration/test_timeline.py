"""``devtrail timeline``: the events of an entity and of what is linked to it, with how."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import orjson
import pytest

from devtrail.timeline import _COMMIT_ALIASES, DEPLOYMENT, PULL_REQUEST, SESSION, TASK, linked_entities, timeline
from tests.integration.pipeline import clean
from tests.integration.test_projections import apply, store, story

pytestmark = pytest.mark.integration


async def stored_story(db: asyncpg.Connection) -> None:
    rows = clean(story())
    await store(db, rows)
    await apply(db, rows)


async def test_a_tasks_timeline_holds_its_subtasks_sessions_pull_request_and_deployments(
    db: asyncpg.Connection,
) -> None:
    await stored_story(db)
    events = await timeline(db, TASK, "T1a")
    assert events == sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    kinds = [e.event_type for e in events]
    tasks = {e.references.get("task_id") for e in events}
    assert {"T1a", "T1a1"} <= tasks and not tasks & {"T1", "T1b", "T3"}  # sub-tasks, not parent nor siblings
    llm = [e for e in events if e.event_type == "llm.called"]
    assert len(llm) == 3 and all("session S1" in e.linked_by for e in llm)  # S2's calls belong to T1
    assert {"pr.opened", "pr.merged", "commit.pushed", "deployment.failed", "deployment.completed"} <= set(kinds)
    assert {"incident.opened", "incident.resolved"} <= set(kinds)
    pr = next(e for e in events if e.event_type == "pr.opened")
    assert pr.linked_by.startswith("task T1a -> linear_issue ENG-42 (explicit) -> pull_request acme/web#7")
    incident = next(e for e in events if e.event_type == "incident.opened")
    assert incident.linked_by.endswith("-> incident INC-1 (explicit)")


async def test_a_deployments_timeline_reaches_back_to_its_tasks(db: asyncpg.Connection) -> None:
    await stored_story(db)
    found = {(e.kind, e.id) for e in await linked_entities(db, DEPLOYMENT, "D2")}
    assert {(PULL_REQUEST, "acme/web#7"), (TASK, "T1a"), ("incident", "INC-1")} <= found
    assert (TASK, "T1") not in found


async def test_a_sessions_timeline_and_an_unknown_id(db: asyncpg.Connection) -> None:
    await stored_story(db)
    events = await timeline(db, SESSION, "S2")
    assert {e.references.get("session_id") for e in events if e.event_type == "llm.called"} == {"S2"}
    assert "task.completed" in {e.event_type for e in events}  # its task's events
    assert await timeline(db, TASK, "no-such-task") == []


async def test_the_cli_prints_the_timeline_as_json(db: asyncpg.Connection, database_url: str) -> None:
    await stored_story(db)
    env = {**os.environ, "DEVTRAIL_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "devtrail", "timeline", "pr", "acme/web#7", "--json"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    events = orjson.loads(done.stdout)
    assert {e["event_type"] for e in events} >= {"pr.opened", "pr.merged", "task.started", "deployment.completed"}
    text = await asyncio.to_thread(subprocess.run, command[:-1], env=env, capture_output=True, text=True, check=False)
    assert text.returncode == 0 and "via pull_request acme/web#7" in text.stdout


async def test_only_commit_links_are_in_the_commit_prefix_indexes_and_abbreviated_shas_use_them(
    db: asyncpg.Connection,
) -> None:
    """Migration 0018: every link used to pay for two prefix indexes only commits need."""
    await db.execute(
        """
        INSERT INTO projections.correlations
        SELECT kind, kind || '-' || g, 'task', 'T-' || g, 'explicit', now(), gen_random_uuid()
        FROM generate_series(1, 3000) AS g, unnest(ARRAY['session', 'requirement', 'commit']) AS kind
        """
    )
    full = "0123456789abcdef0123456789abcdef01234567"
    await db.execute(
        "INSERT INTO projections.correlations VALUES ('pull_request', 'o/r#1', 'commit', $1, 'commit', now(),"
        " gen_random_uuid()), ('commit', $1, 'pull_request', 'o/r#1', 'explicit', now(), gen_random_uuid())",
        full,
    )
    await db.execute("VACUUM ANALYZE projections.correlations")
    indexed = {
        r["relname"]: r["reltuples"]
        for r in await db.fetch(
            "SELECT relname, reltuples FROM pg_class"
            " WHERE relname IN ('correlations_commit_entity7', 'correlations_commit_linked7', 'correlations_entity7')"
        )
    }
    assert indexed == {"correlations_commit_entity7": 3001, "correlations_commit_linked7": 1}, indexed
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + _COMMIT_ALIASES, [full[:9]]))
        assert "correlations_commit_entity7" in plan, plan
    aliases = await db.fetch(_COMMIT_ALIASES, [full[:9]])
    assert {(r["sha"], r["alias"]) for r in aliases} == {(full[:9], full)}
