"""Compare what the pipeline made of stories (the ``analytics`` views) with the stories' truth.

Used by ``devtrail demo --stories`` and by the tests that publish stories under faults. Every
check reads the public views, as an analyst would, never the internal tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from devtrail.consumers.rules.builtin import rolls_up
from devtrail.producers.story_truth import RequirementStatus, StoryTruth
from devtrail.schemas.task_events import TaskStatus

_DEPLOYMENT_STATUS = {"completed": "succeeded", "failed": "failed"}


@dataclass
class StoryCheck:
    """What was compared and what differed (``problems`` empty: the views match the truth)."""

    checked: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def compare(self, what: str, key: str, got: Any, expected: Any) -> None:
        self.checked[what] = self.checked.get(what, 0) + 1
        if got != expected:
            self.problems.append(f"{what} {key}: {got!r}, expected {expected!r}")


async def _rows(conn: asyncpg.Connection, view: str, key: str, ids: Iterable[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(f"SELECT * FROM analytics.{view} WHERE {key} = ANY($1::text[])", list(ids))  # noqa: S608
    return {row[key]: row for row in rows}


async def check_stories(conn: asyncpg.Connection, truth: StoryTruth, rollup: bool = False) -> StoryCheck:
    """Compare the views with ``truth``: tasks, requirements, attribution of every LLM and
    tool call, pull requests and how they were matched, deployments, incidents, cycles.

    ``rollup``: the rules worker ran the built-in ``requirement_rollup`` and its derived events
    have been applied. A story completes a requirement only when all its tasks completed; the
    rule also completes one whose tasks are all completed or cancelled, at least one completed.
    """
    check = StoryCheck()
    await _check_tasks(conn, truth, check)
    await _check_requirements(conn, truth, check, rollup)
    await _check_sessions(conn, truth, check)
    await _check_attribution(conn, truth, check)
    await _check_pull_requests(conn, truth, check)
    await _check_deployments_and_incidents(conn, truth, check)
    await _check_cycles(conn, truth, check)
    return check


async def _check_tasks(conn: asyncpg.Connection, truth: StoryTruth, check: StoryCheck) -> None:
    rows = await _rows(conn, "tasks", "task_id", truth.tasks)
    for task_id, task in truth.tasks.items():
        row = rows.get(task_id)
        if row is None:
            check.compare("task", task_id, None, "a row")
            continue
        got = (row["status"], row["requirement_id"], row["project_id"], row["parent_task_id"], row["attempts"])
        expected = (task.status.value, task.requirement_id, task.project_id, task.parent_task_id, task.attempts)
        check.compare("task", task_id, got, expected)
        times = (row["created_at"], row["started_at"], row["completed_at"], row["failed_at"], row["cancelled_at"])
        check.compare(
            "task times",
            task_id,
            times,
            (task.created_at, task.started_at, task.completed_at, task.failed_at, task.cancelled_at),
        )
        check.compare("task links", task_id, (row["linear_issue"], row["pull_request"]),
                      (task.linear_key, task.pull_request))  # fmt: skip


async def _check_requirements(conn: asyncpg.Connection, truth: StoryTruth, check: StoryCheck, rollup: bool) -> None:
    rows = await _rows(conn, "requirements", "requirement_id", truth.requirements)
    statuses: dict[str, list[TaskStatus]] = {}
    for task in truth.tasks.values():
        statuses.setdefault(task.requirement_id, []).append(task.status)
    for requirement_id, requirement in truth.requirements.items():
        row = rows.get(requirement_id)
        got = (row["status"], row["complexity"], row["tasks_total"], row["tasks_completed"]) if row else None
        status = requirement.status
        if rollup and rolls_up(statuses.get(requirement_id, [])):
            status = RequirementStatus.COMPLETED
        expected = (status.value, requirement.complexity, requirement.tasks_total, requirement.tasks_completed)
        check.compare("requirement", requirement_id, got, expected)


async def _check_sessions(conn: asyncpg.Connection, truth: StoryTruth, check: StoryCheck) -> None:
    rows = await _rows(conn, "sessions", "session_id", truth.sessions)
    links = await conn.fetch(
        "SELECT entity_id, linked_id, matched_by FROM analytics.correlations"
        " WHERE entity_kind = 'session' AND linked_kind = 'task' AND entity_id = ANY($1::text[])",
        list(truth.sessions),
    )
    linked = {(r["entity_id"], r["linked_id"]): r["matched_by"] for r in links}
    for session_id, session in truth.sessions.items():
        row = rows.get(session_id)
        got = (row["task_id"], row["agent_id"], row["started_at"], row["ended_at"]) if row else None
        check.compare("session", session_id, got, (session.task_id, session.agent_id, session.started_at,
                                                   session.ended_at))  # fmt: skip
        check.compare("session link", session_id, linked.get((session_id, session.task_id)), "explicit")


async def _check_attribution(conn: asyncpg.Connection, truth: StoryTruth, check: StoryCheck) -> None:
    calls = {**truth.llm_calls, **truth.tool_calls}
    rows = await conn.fetch(
        "SELECT event_id::text AS event_id, task_id, requirement_id, project_id FROM analytics.event_attribution"
        " WHERE event_id = ANY($1::uuid[])",
        list(calls),
    )
    found = {row["event_id"]: row for row in rows}
    for event_id, call in calls.items():
        row = found.get(event_id)
        got = (row["task_id"], row["requirement_id"], row["project_id"]) if row else None
        check.compare("call attribution", event_id, got, (call.task_id, call.requirement_id, call.project_id))


async def _check_pull_requests(conn: asyncpg.Connection, truth: StoryTruth, check: StoryCheck) -> None:
    rows = await _rows(conn, "pull_requests", "pull_request", truth.pull_requests)
    links = await conn.fetch(
        "SELECT entity_id, linked_id, matched_by FROM analytics.correlations"
        " WHERE entity_kind = 'pull_request' AND linked_kind = 'linear_issue' AND entity_id = ANY($1::text[])",
        list(truth.pull_requests),
    )
    matched = {(r["entity_id"], r["linked_id"]): r["matched_by"] for r in links}
    for pr_id, pr in truth.pull_requests.items():
        row = rows.get(pr_id)
        got = (row["status"], row["task_ids"], row["linear_issues"]) if row else None
        check.compare("pull request", pr_id, got, (pr.status.value, [pr.task_id], [pr.linear_key]))
        check.compare("pull request matched_by", pr_id, matched.get((pr_id, pr.linear_key)), pr.matched_by)


async def _check_deployments_and_incidents(conn: asyncpg.Connection, truth: StoryTruth, check: StoryCheck) -> None:
    rows = await _rows(conn, "deployments", "deployment_id", truth.deployments)
    for deployment_id, deployment in truth.deployments.items():
        row = rows.get(deployment_id)
        got = (row["status"], row["pull_request"], row["task_ids"]) if row else None
        expected = (_DEPLOYMENT_STATUS[deployment.status.value], deployment.pull_request, [deployment.task_id])
        check.compare("deployment", deployment_id, got, expected)
    incidents = await _rows(conn, "incidents", "incident_id", truth.incidents)
    for incident_id, incident in truth.incidents.items():
        found = incidents.get(incident_id)
        fields = ("status", "deployment_id", "fixed_by_deployment_id", "task_ids")
        check.compare(
            "incident",
            incident_id,
            tuple(found[f] for f in fields) if found else None,
            ("resolved", incident.deployment_id, incident.fixed_by_deployment_id, [incident.task_id]),
        )


async def _check_cycles(conn: asyncpg.Connection, truth: StoryTruth, check: StoryCheck) -> None:
    in_cycle = {
        (r["task_id"], r["depends_on_task_id"])
        for r in await conn.fetch(
            "SELECT task_id, depends_on_task_id FROM analytics.task_dependencies"
            " WHERE in_cycle AND task_id = ANY($1::text[])",
            list(truth.tasks),
        )
    }
    expected = {(cycle[i], cycle[(i + 1) % len(cycle)]) for cycle in truth.cycles for i in range(len(cycle))}
    check.compare("dependencies in a cycle", "all", sorted(in_cycle), sorted(expected))
