"""Projections and the analytics views against a real PostgreSQL: one story, any arrival order."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from devtrail.consumers.checkpoint import WriterHost
from devtrail.consumers.clean import CLEAN_ROWS, CleanRow
from devtrail.consumers.projections import PROJECTIONS, DeliveryFactsProjection
from devtrail.consumers.projections.errors import SinkBehindError
from devtrail.consumers.projections.rebuild import RebuildOptions, rebuild, rebuild_projections
from devtrail.consumers.sink import EventSink
from devtrail.schemas.events import (
    AgentRegistered,
    AgentRegisteredPayload,
    AgentUnregistered,
    CommitPushed,
    CommitPushedPayload,
    DeploymentBuildResult,
    DeploymentBuildResultPayload,
    DeploymentCompleted,
    DeploymentCompletedPayload,
    DeploymentFailed,
    DeploymentFailedPayload,
    DeploymentStarted,
    DeploymentStartedPayload,
    DeploymentTestResult,
    DeploymentTestResultPayload,
    IncidentOpened,
    IncidentOpenedPayload,
    IncidentResolved,
    IncidentResolvedPayload,
    LinearIssueLink,
    LinkCreated,
    LlmCalled,
    LlmCalledPayload,
    PullRequestMerged,
    PullRequestMergedPayload,
    PullRequestOpened,
    PullRequestOpenedPayload,
    RequirementCompleted,
    RequirementComplexityScored,
    RequirementComplexityScoredPayload,
    RequirementCreated,
    RequirementCreatedPayload,
    SessionEnded,
    SessionEndedPayload,
    SessionStarted,
    SessionStartedPayload,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskCreatedPayload,
    TaskDependencyAdded,
    TaskDependencyAddedPayload,
    TaskFailed,
    TaskFailedPayload,
    TaskStarted,
    TaskStatusChanged,
    TaskStatusChangedPayload,
)
from devtrail.schemas.ids import uuid7
from tests.integration.pipeline import clean, wait_for

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
HEAD, MERGE = "abc1234def", "def5678abc"
PROJECTION_TABLES = (
    "tasks",
    "task_dependencies",
    "requirements",
    "sessions",
    "agents",
    "pull_requests",
    "commits",
    "deployments",
    "incidents",
    "correlations",
)
VIEWS = (
    "tasks",
    "task_dependencies",
    "task_tree",
    "requirements",
    "requirement_dependencies",
    "sessions",
    "agents",
    "pull_requests",
    "task_pull_requests",
    "commits",
    "deployments",
    "incidents",
    "correlations",
    "event_attribution",
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def env(minutes: float, **refs: Any) -> dict[str, Any]:
    return {"source": "story", "occurred_at": at(minutes), "project_id": "P1", **refs}


def task(task_id: str, minutes: float, requirement: str = "R1", parent: str | None = None) -> TaskCreated:
    payload = TaskCreatedPayload(title=f"do {task_id}", parent_task_id=parent, priority=2)
    return TaskCreated(**env(minutes, task_id=task_id, requirement_id=requirement, agent_id="A1"), payload=payload)


def llm(session: str, minutes: float, tokens: int = 100) -> LlmCalled:
    payload = LlmCalledPayload(provider="anthropic", model="m", input_tokens=tokens, output_tokens=7, cost_usd=0.01)
    return LlmCalled(source="story", occurred_at=at(minutes), session_id=session, payload=payload)


def depends(task_id: str, on: str, minutes: float, blocking: bool = True) -> TaskDependencyAdded:
    payload = TaskDependencyAddedPayload(depends_on_task_id=on, blocking=blocking)
    return TaskDependencyAdded(**env(minutes, task_id=task_id), payload=payload)


def pr_payload(**extra: Any) -> dict[str, Any]:
    return {
        "repository": "acme/web",
        "number": 7,
        "branch": "feature/ENG-42-login",
        "base_branch": "main",
        "title": "Login form",
        "head_sha": HEAD,
        "author": "A1",
        "author_kind": "agent",
        **extra,
    }


def story() -> list[Any]:
    """A requirement with tasks and sub-tasks, a dependency cycle, sessions, a Linear issue, a
    pull request naming it, its commits, a failed then a succeeding deployment, an incident."""
    r1, r2 = {"requirement_id": "R1"}, {"requirement_id": "R2"}
    return [
        AgentRegistered(
            **env(0, agent_id="A1"),
            payload=AgentRegisteredPayload(name="coder", runtime="claude-code", capabilities=("code", "review")),
        ),
        AgentRegistered(**env(0.5, agent_id="A2"), payload=AgentRegisteredPayload(name="old")),
        AgentUnregistered(**env(1, agent_id="A2")),
        RequirementCreated(**env(1, **r1), payload=RequirementCreatedPayload(title="Login", priority=4)),
        RequirementCreated(**env(1.5, **r2), payload=RequirementCreatedPayload(title="Audit")),
        RequirementComplexityScored(
            **env(2, **r1), payload=RequirementComplexityScoredPayload(score=3, method="llm", estimated_hours=4.0)
        ),
        RequirementComplexityScored(
            **env(3, **r1), payload=RequirementComplexityScoredPayload(score=5, method="poker", estimated_hours=8.5)
        ),
        task("T1", 4),
        task("T1a", 5, parent="T1"),
        task("T1b", 6, parent="T1"),
        task("T1a1", 7, parent="T1a"),
        task("T3", 8, requirement="R2"),
        depends("T1", "T1a", 9, blocking=False),
        depends("T1a", "T1b", 9.1),
        depends("T1b", "T3", 9.2),
        depends("T3", "T1b", 9.3),  # the cycle T1b <-> T3
        depends("T1a1", "T3", 9.4),
        TaskStarted(**env(10, task_id="T1", requirement_id="R1", agent_id="A1")),
        SessionStarted(
            **env(10.5, session_id="S2", task_id="T1", requirement_id="R1", agent_id="A1"),
            payload=SessionStartedPayload(client="cli", model="m", title="T1 work"),
        ),
        llm("S2", 11),
        llm("S2", 12),
        TaskCompleted(**env(13, task_id="T1", requirement_id="R1")),
        SessionEnded(**env(13.5, session_id="S2"), payload=SessionEndedPayload(message_count=4)),
        TaskStarted(**env(14, task_id="T1a", requirement_id="R1", agent_id="A1")),
        SessionStarted(
            **env(14.5, session_id="S1", task_id="T1a", agent_id="A1"), payload=SessionStartedPayload(client="cli")
        ),
        llm("S1", 15),
        llm("S1", 16),
        llm("S1", 17),
        TaskFailed(**env(18, task_id="T1a"), payload=TaskFailedPayload(error="tests red", retriable=True)),
        TaskStarted(**env(19, task_id="T1a", agent_id="A1")),
        LinkCreated(**env(19.5, task_id="T1a"), payload=LinearIssueLink(external_id="ENG-42")),
        PullRequestOpened(**env(20), payload=PullRequestOpenedPayload(**pr_payload())),
        CommitPushed(
            **env(20.5),
            payload=CommitPushedPayload(
                sha=HEAD,
                repository="acme/web",
                branch="feature/ENG-42-login",
                authored_at=at(20),
                author="A1",
                author_kind="agent",
                pr_number=7,
                message="login",
            ),
        ),
        PullRequestMerged(**env(21), payload=PullRequestMergedPayload(**pr_payload(merge_sha=MERGE))),
        CommitPushed(
            **env(21.5),
            payload=CommitPushedPayload(
                sha=MERGE, repository="acme/web", branch="main", authored_at=at(21), author="bob", author_kind="person"
            ),
        ),
        TaskCompleted(**env(22, task_id="T1a")),
        TaskStarted(**env(23, task_id="T1b")),
        TaskStatusChanged(
            **env(24, task_id="T1b"), payload=TaskStatusChangedPayload(from_status="in_progress", to_status="blocked")
        ),
        TaskCancelled(**env(25, task_id="T1a1")),
        TaskStarted(**env(26, task_id="T3")),
        DeploymentStarted(**env(30), payload=_deploy_started("D1")),
        DeploymentBuildResult(**env(31), payload=DeploymentBuildResultPayload(**_step("D1"))),
        DeploymentTestResult(
            **env(32),
            payload=DeploymentTestResultPayload(**_step("D1", "failure"), tests_total=10, tests_failed=2),
        ),
        DeploymentFailed(
            **env(33),
            payload=DeploymentFailedPayload(
                deployment_id="D1", environment="production", error="tests failed", stage="test", commit_sha=MERGE
            ),
        ),
        DeploymentStarted(**env(40), payload=_deploy_started("D2")),
        DeploymentBuildResult(**env(41), payload=DeploymentBuildResultPayload(**_step("D2"))),
        DeploymentTestResult(
            **env(42), payload=DeploymentTestResultPayload(**_step("D2"), tests_total=10, tests_passed=10)
        ),
        DeploymentCompleted(
            **env(43),
            payload=DeploymentCompletedPayload(deployment_id="D2", environment="production", commit_sha=MERGE),
        ),
        IncidentOpened(
            **env(50),
            payload=IncidentOpenedPayload(
                incident_id="INC-1", title="login 500", severity="error", environment="production", deployment_id="D2"
            ),
        ),
        IncidentResolved(
            **env(55),
            payload=IncidentResolvedPayload(
                incident_id="INC-1", severity="critical", resolution="rolled back", fixed_by_deployment_id="D3"
            ),
        ),
        RequirementCompleted(**env(60, **r1)),
    ]


def _deploy_started(deployment_id: str) -> DeploymentStartedPayload:
    return DeploymentStartedPayload(
        deployment_id=deployment_id, environment="production", commit_sha=MERGE, branch="main", repository="acme/web"
    )


def _step(deployment_id: str, outcome: str = "success") -> dict[str, Any]:
    return {"deployment_id": deployment_id, "outcome": outcome, "commit_sha": MERGE}


def writers() -> list[Any]:
    return [projection() for projection in PROJECTIONS]


async def apply(db: asyncpg.Connection, rows: list[CleanRow], batch_sizes: list[int] | None = None) -> None:
    """Apply ``rows`` as the writer host does, one transaction per batch."""
    host = WriterHost("writers", CLEAN_ROWS, writers())
    sizes = iter(batch_sizes or [len(rows)])
    start = 0
    while start < len(rows):
        stop = start + next(sizes, len(rows))
        async with db.transaction():
            applied = await host.apply(db, rows[start:stop])
        assert applied.refusals == []
        start = stop


async def store(db: asyncpg.Connection, rows: list[CleanRow]) -> None:
    async with db.transaction():
        await EventSink().write(db, rows)


async def reset(db: asyncpg.Connection) -> None:
    for table in PROJECTION_TABLES:
        await db.execute(f"DELETE FROM projections.{table}")


def _canonical(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


async def snapshot(db: asyncpg.Connection, views: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table and (``views``) every analytics view, rows sorted."""
    shot: dict[str, list[tuple[Any, ...]]] = {}
    for schema, names in (("projections", PROJECTION_TABLES), ("analytics", VIEWS if views else ())):
        for name in names:
            rows = await db.fetch(f"SELECT * FROM {schema}.{name}")
            shot[f"{schema}.{name}"] = sorted((tuple(_canonical(v) for v in r.values()) for r in rows), key=repr)
    return shot


async def by_key(db: asyncpg.Connection, view: str, key: str) -> dict[Any, dict[str, Any]]:
    return {r[key]: dict(r) for r in await db.fetch(f"SELECT * FROM analytics.{view}")}


async def test_the_story_gives_the_same_tables_in_any_order_and_batching(db: asyncpg.Connection) -> None:
    rows = clean(story())
    await store(db, rows)
    rng = random.Random(7)

    await apply(db, rows)
    await apply(db, rows)
    in_order = await snapshot(db)
    await check_story(db)

    await reset(db)
    shuffled = rows + rng.sample(rows, 20)
    rng.shuffle(shuffled)
    await apply(db, shuffled)
    await apply(db, shuffled)
    assert await snapshot(db) == in_order

    await reset(db)
    for _ in range(2):
        batched = rows[:]
        rng.shuffle(batched)
        await apply(db, batched, [rng.randint(1, 9) for _ in batched])
    assert await snapshot(db) == in_order


async def check_story(db: asyncpg.Connection) -> None:
    """The hand-written expectations of the story."""
    tasks = await by_key(db, "tasks", "task_id")
    assert {t: (v["status"], v["attempts"]) for t, v in tasks.items()} == {
        "T1": ("completed", 1),
        "T1a": ("completed", 2),
        "T1b": ("blocked", 1),
        "T1a1": ("cancelled", 0),
        "T3": ("in_progress", 1),
    }
    t1a = tasks["T1a"]
    assert (t1a["started_at"], t1a["failed_at"], t1a["completed_at"]) == (at(14), at(18), at(22))
    assert t1a["duration"] == timedelta(minutes=8)
    assert (t1a["linear_issue"], t1a["pull_request"]) == ("ENG-42", "acme/web#7")
    assert (t1a["parent_task_id"], t1a["requirement_id"], t1a["project_id"]) == ("T1", "R1", "P1")
    assert tasks["T1"]["linear_issue"] is None and tasks["T1"]["pull_request"] is None
    assert tasks["T1"]["duration"] == timedelta(minutes=3)

    deps = {(r["task_id"], r["depends_on_task_id"]): r["in_cycle"] for r in await q(db, "task_dependencies")}
    assert deps == {
        ("T1", "T1a"): False,
        ("T1a", "T1b"): False,
        ("T1b", "T3"): True,
        ("T3", "T1b"): True,
        ("T1a1", "T3"): False,
    }
    tree = {r["task_id"]: (r["depth"], r["path"], r["root_task_id"]) for r in await q(db, "task_tree")}
    assert tree == {
        "T1": (0, ["T1"], "T1"),
        "T1a": (1, ["T1", "T1a"], "T1"),
        "T1b": (1, ["T1", "T1b"], "T1"),
        "T1a1": (2, ["T1", "T1a", "T1a1"], "T1"),
        "T3": (0, ["T3"], "T3"),
    }

    requirements = await by_key(db, "requirements", "requirement_id")
    r1 = requirements["R1"]
    assert (r1["status"], r1["complexity"], r1["estimated_hours"], r1["complexity_method"]) == (
        "completed",
        5,
        8.5,
        "poker",
    )
    assert (r1["tasks_total"], r1["tasks_completed"], r1["tasks_cancelled"]) == (4, 2, 1)
    assert (requirements["R2"]["status"], requirements["R2"]["tasks_total"]) == ("open", 1)
    requirement_deps = {
        (r["requirement_id"], r["depends_on_requirement_id"]): (
            r["task_dependencies"],
            r["task_dependencies_in_cycle"],
            r["in_cycle"],
        )
        for r in await q(db, "requirement_dependencies")
    }
    assert requirement_deps == {("R1", "R2"): (1, 1, False), ("R2", "R1"): (0, 1, False)}

    sessions = await by_key(db, "sessions", "session_id")
    assert (sessions["S1"]["task_id"], sessions["S1"]["agent_id"], sessions["S1"]["requirement_id"]) == (
        "T1a",
        "A1",
        None,
    )
    assert (sessions["S2"]["duration"], sessions["S2"]["end_reason"], sessions["S2"]["task_ids"]) == (
        timedelta(minutes=3),
        "completed",
        ["T1"],
    )

    agents = await by_key(db, "agents", "agent_id")
    assert (agents["A1"]["registered"], agents["A1"]["capabilities"], agents["A1"]["last_seen"]) == (
        True,
        ["code", "review"],
        at(19),
    )
    assert (agents["A2"]["registered"], agents["A2"]["unregistered_at"]) == (False, at(1))

    pr = (await by_key(db, "pull_requests", "pull_request"))["acme/web#7"]
    assert (pr["status"], pr["merge_sha"], pr["linear_issues"], pr["task_ids"]) == (
        "merged",
        MERGE,
        ["ENG-42"],
        ["T1a"],
    )
    assert pr["time_to_merge"] == timedelta(minutes=1)
    commits = await by_key(db, "commits", "sha")
    assert (commits[HEAD]["pull_request"], commits[MERGE]["pull_request"]) == ("acme/web#7", "acme/web#7")

    deployments = await by_key(db, "deployments", "deployment_id")
    d1, d2 = deployments["D1"], deployments["D2"]
    assert (d1["status"], d1["tests_outcome"], d1["tests_failed"], d1["error"]) == (
        "failed",
        "failure",
        2,
        "tests failed",
    )
    assert (d2["status"], d2["pull_request"], d2["pull_request_matched_by"], d2["task_ids"]) == (
        "succeeded",
        "acme/web#7",
        "commit",
        ["T1a"],
    )
    incident = (await by_key(db, "incidents", "incident_id"))["INC-1"]
    assert (incident["status"], incident["severity"], incident["deployment_id"], incident["task_ids"]) == (
        "resolved",
        "critical",
        "D2",
        ["T1a"],
    )
    assert incident["time_to_resolve"] == timedelta(minutes=5)

    links = {
        (r["entity_kind"], r["entity_id"], r["linked_kind"], r["linked_id"]): r["matched_by"]
        for r in await q(db, "correlations")
    }
    assert links[("pull_request", "acme/web#7", "linear_issue", "ENG-42")] == "branch"
    assert links[("task", "T1a", "linear_issue", "ENG-42")] == "explicit"
    assert links[("task", "T1a", "task", "T1")] == "parent"
    assert links[("pull_request", "acme/web#7", "commit", MERGE)] == "commit"
    assert links[("commit", HEAD, "pull_request", "acme/web#7")] == "explicit"
    assert links[("deployment", "D2", "commit", MERGE)] == "commit"
    assert links[("incident", "INC-1", "deployment", "D2")] == "explicit"
    assert links[("session", "S1", "task", "T1a")] == "explicit"

    attribution = await q(db, "event_attribution", "WHERE event_type = 'llm.called'")
    assert sorted((r["session_id"], r["task_id"], r["matched_by"], r["project_id"]) for r in attribution) == [
        ("S1", "T1a", "session", "P1"),
        ("S1", "T1a", "session", "P1"),
        ("S1", "T1a", "session", "P1"),
        ("S2", "T1", "session", "P1"),
        ("S2", "T1", "session", "P1"),
    ]
    assert {(r["requirement_id"], r["requirement_matched_by"]) for r in attribution} == {("R1", "task")}
    assert await db.fetchval("SELECT count(*) FROM analytics.event_attribution") == len(story())


async def q(db: asyncpg.Connection, view: str, where: str = "") -> list[asyncpg.Record]:
    return list(await db.fetch(f"SELECT * FROM analytics.{view} {where}"))


async def test_completed_before_started_gives_the_final_state(db: asyncpg.Connection) -> None:
    created, started, completed = clean(
        [
            task("T9", 1),
            TaskStarted(**env(2, task_id="T9")),
            TaskCompleted(**env(3, task_id="T9")),
        ]
    )
    await apply(db, [completed])
    await apply(db, [started])
    await apply(db, [created])
    row = (await by_key(db, "tasks", "task_id"))["T9"]
    assert (row["status"], row["attempts"], row["started_at"], row["completed_at"]) == ("completed", 1, at(2), at(3))
    assert (row["title"], row["created_at"], row["duration"]) == ("do T9", at(1), timedelta(minutes=1))


async def test_a_task_done_at_the_instant_it_started_stays_done_in_postgresql(db: asyncpg.Connection) -> None:
    """The SQL merge orders status events of one instant by the lifecycle too: applied in
    separate batches, the start (whose event id is the greatest) does not undo the completion."""
    ids = sorted(str(uuid7()) for _ in range(3))
    refs = {"source": "t", "task_id": "T8", "project_id": "P", "occurred_at": at(1)}
    created, completed, started = clean(
        [
            task("T8", 1).model_copy(update={"event_id": ids[0]}),
            TaskCompleted(**refs, event_id=ids[1]),
            TaskStarted(**refs, event_id=ids[2]),
        ]
    )
    for row in (completed, created, started):
        await apply(db, [row])
    done = (await by_key(db, "tasks", "task_id"))["T8"]
    assert (done["status"], done["started_at"], done["completed_at"]) == ("completed", at(1), at(1))


async def test_a_late_link_attributes_the_events_before_it(db: asyncpg.Connection) -> None:
    calls = clean([llm("S7", 1), llm("S7", 2), llm("S7", 3)])
    link = clean([SessionStarted(**env(0.5, session_id="S7", task_id="T7"))])
    await store(db, calls)
    await apply(db, calls)
    before = await q(db, "event_attribution", "WHERE session_id = 'S7' AND event_type = 'llm.called'")
    assert {(r["task_id"], r["matched_by"]) for r in before} == {(None, None)}
    await store(db, link)
    await apply(db, link)
    after = await q(db, "event_attribution", "WHERE session_id = 'S7' AND event_type = 'llm.called'")
    assert sorted((r["task_id"], r["matched_by"]) for r in after) == [("T7", "session")] * 3


async def test_a_session_with_two_tasks_attributes_each_event_once(db: asyncpg.Connection) -> None:
    events = [
        SessionStarted(**env(0, session_id="S8", task_id="TA")),
        llm("S8", 1),
        TaskStarted(**env(2, task_id="TB", session_id="S8")),
        llm("S8", 3),
        llm("S8", -1),  # before any link: the session's first task
    ]
    rows = clean(events)
    await store(db, rows)
    await apply(db, rows)
    got = await q(db, "event_attribution", "WHERE event_type = 'llm.called' ORDER BY occurred_at")
    assert [r["task_id"] for r in got] == ["TA", "TA", "TB"]


async def test_cycles_of_parents_and_dependencies_never_loop_a_query(db: asyncpg.Connection) -> None:
    events = [
        task("X", 1, requirement="RC", parent="Y"),
        task("Y", 2, requirement="RC", parent="X"),
        task("Z", 3, requirement="RC", parent="Y"),
        task("W", 4, requirement="RC", parent="W"),
        depends("X", "Y", 5),
        depends("Y", "Z", 6),
        depends("Z", "X", 7),
    ]
    await apply(db, clean(events))
    await db.execute("SET statement_timeout = '10s'")
    tree = {r["task_id"]: (r["depth"], r["path"], r["in_cycle"]) for r in await q(db, "task_tree")}
    assert tree == {
        "X": (0, ["X"], True),
        "Y": (1, ["X", "Y"], True),
        "Z": (2, ["X", "Y", "Z"], False),
        "W": (0, ["W"], True),
    }
    assert {r["in_cycle"] for r in await q(db, "task_dependencies")} == {True}
    assert await db.fetchval("SELECT count(*) FROM analytics.requirement_dependencies") == 0


async def test_missing_references_are_null_never_empty(db: asyncpg.Connection) -> None:
    rows = clean(story())
    await store(db, rows)
    await apply(db, rows)
    for schema, names in (("projections", PROJECTION_TABLES), ("analytics", VIEWS)):
        for name in names:
            columns = await db.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = $1 AND table_name = $2 AND data_type = 'text'",
                schema,
                name,
            )
            for column in columns:
                empty = await db.fetchval(f"SELECT count(*) FROM {schema}.{name} WHERE {column[0]} = ''")
                assert empty == 0, f"{schema}.{name}.{column[0]}"


def options(**overrides: Any) -> RebuildOptions:
    settings: dict[str, Any] = {
        "sink_group": "sink",
        "writers_group": "writers",
        "clean_topic": "clean",
        "batch_events": 7,
        "wait_timeout_s": 10.0,
        "poll_s": 0.05,
    }
    return RebuildOptions(**(settings | overrides))


async def set_offset(db: asyncpg.Connection, group: str, partition: int, offset: int) -> None:
    await db.execute(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, 'clean', $2, $3)"
        " ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        group,
        partition,
        offset,
    )


async def test_rebuild_equals_incremental_application(db: asyncpg.Connection, database_url: str) -> None:
    rows = clean(story())
    await store(db, rows)
    await apply(db, rows)
    incremental = await snapshot(db)
    await db.execute("UPDATE projections.tasks SET status = 'garbage'")  # drift the rebuild must repair
    await set_offset(db, "writers", 0, 40)
    await set_offset(db, "sink", 0, 40)
    report = await rebuild_projections(db, options())
    assert report.events == len(rows) and report.refused == {}
    assert await snapshot(db) == incremental
    # as `devtrail projections rebuild` runs it: committed, then the tables vacuumed and analyzed
    await db.execute("UPDATE projections.tasks SET status = 'garbage'")
    report = await rebuild(database_url, options())
    assert await snapshot(db) == incremental
    assert report.vacuum_s is not None and "vacuumed and analyzed" in report.lines()[-1]
    vacuumed = await db.fetchval(
        "SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL FROM pg_stat_user_tables"
        " WHERE schemaname = 'projections' AND relname = 'production_deployments'"
    )
    assert vacuumed


async def test_rebuild_waits_for_the_sink_and_loses_nothing_applied_meanwhile(
    db: asyncpg.Connection, database_url: str
) -> None:
    """The writers applied everything; the sink stored only part of it when the rebuild starts.
    The rebuild waits until the sink has stored what the writers applied, then replays it; a
    writer batch arriving during the rebuild waits for it and changes nothing after."""
    rows = clean(story())
    stored, late = rows[:30], rows[30:]
    await store(db, stored)
    await apply(db, rows)
    expected = await snapshot(db, views=False)  # the views read events too, not all stored yet
    await set_offset(db, "writers", 0, 2)
    await set_offset(db, "sink", 0, 1)

    writer, sink = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        rebuilding = asyncio.create_task(rebuild_projections(db, options()))
        await wait_for(lambda: holds_lock(sink, "projections.correlations"), 10, "the rebuild's locks")
        await asyncio.sleep(0.2)
        assert not rebuilding.done()  # waiting for the sink
        writer_batch = asyncio.create_task(apply(writer, late))  # waits for the lock
        await asyncio.sleep(0.2)
        assert not writer_batch.done()
        async with sink.transaction():  # the sink catches up: the rest stored, offsets moved
            await EventSink().write(sink, late)
            await set_offset(sink, "sink", 0, 2)
        report = await asyncio.wait_for(rebuilding, 30)
        await asyncio.wait_for(writer_batch, 30)
    finally:
        await writer.close()
        await sink.close()
    assert report.events == len(rows)
    assert await snapshot(db, views=False) == expected


async def holds_lock(conn: asyncpg.Connection, table: str) -> bool:
    granted = await conn.fetchval(
        "SELECT bool_or(granted) FROM pg_locks WHERE relation = $1::regclass AND mode = 'ExclusiveLock'", table
    )
    return bool(granted)


async def test_rebuild_gives_up_when_the_sink_stays_behind(db: asyncpg.Connection) -> None:
    rows = clean(story())
    await apply(db, rows)
    before = await snapshot(db)
    await set_offset(db, "writers", 3, 10)
    with pytest.raises(SinkBehindError) as caught:
        await rebuild_projections(db, options(wait_timeout_s=0.2))
    assert caught.value.behind == {3: (None, 10)}
    assert await snapshot(db) == before


async def test_every_table_has_the_columns_its_writer_merges(db: asyncpg.Connection) -> None:
    for writer in writers():
        if isinstance(writer, DeliveryFactsProjection):
            continue  # merges nothing: its rows come from a view (tests/integration/test_delivery_facts.py)
        for table in writer.tables:
            schema, name = table.name.split(".")
            stored = await db.fetch(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
                " WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                table.name,
            )
            spec = [(c.name, await db.fetchval("SELECT $1::regtype::text", c.sql_type)) for c in table.columns]
            assert [tuple(r) for r in stored] == spec, (schema, name)
