"""A commit named by an abbreviated SHA in one event and in full in another is one commit."""

from __future__ import annotations

import asyncpg
import pytest

from devtrail.schemas.events import (
    CommitPushed,
    CommitPushedPayload,
    DeploymentCompleted,
    DeploymentCompletedPayload,
    DeploymentStarted,
    DeploymentStartedPayload,
    IncidentOpened,
    IncidentOpenedPayload,
    LinearIssueLink,
    LinkCreated,
    PullRequestMerged,
    PullRequestMergedPayload,
    TaskCreated,
    TaskCreatedPayload,
)
from devtrail.timeline import TASK, timeline
from tests.integration.pipeline import clean
from tests.integration.test_projections import apply, at, env, pr_payload, store

pytestmark = pytest.mark.integration

FULL_MERGE = "0123456789abcdef0123456789abcdef01234567"
FULL_HEAD = "fedcba9876543210fedcba9876543210fedcba98"


async def test_deployments_incidents_and_commits_join_by_an_abbreviated_sha(db: asyncpg.Connection) -> None:
    events = [
        TaskCreated(**env(0, task_id="T1", requirement_id="R1"), payload=TaskCreatedPayload(title="Login")),
        LinkCreated(**env(1, task_id="T1"), payload=LinearIssueLink(external_id="ENG-42")),
        PullRequestMerged(
            **env(2), payload=PullRequestMergedPayload(**pr_payload(head_sha=FULL_HEAD, merge_sha=FULL_MERGE))
        ),
        CommitPushed(
            **env(2.5),
            payload=CommitPushedPayload(
                sha=FULL_HEAD[:9],
                repository="acme/web",
                branch="feature/ENG-42-login",
                authored_at=at(2),
                author="A1",
                author_kind="agent",
            ),
        ),
        DeploymentStarted(
            **env(3),
            payload=DeploymentStartedPayload(deployment_id="D1", environment="production", commit_sha=FULL_MERGE[:7]),
        ),
        DeploymentCompleted(
            **env(4),
            payload=DeploymentCompletedPayload(deployment_id="D1", environment="production", commit_sha=FULL_MERGE[:7]),
        ),
        DeploymentStarted(
            **env(5),
            payload=DeploymentStartedPayload(
                deployment_id="D2",
                environment="production",
                commit_sha="0123456f",  # shares 7 digits only
            ),
        ),
        IncidentOpened(
            **env(6),
            payload=IncidentOpenedPayload(
                incident_id="INC-1", title="500s", severity="error", commit_sha=FULL_MERGE[:12]
            ),
        ),
    ]
    await apply(db, clean(events))
    deployments = {r["deployment_id"]: r for r in await db.fetch("SELECT * FROM analytics.deployments")}
    assert (deployments["D1"]["pull_request"], deployments["D1"]["task_ids"]) == ("acme/web#7", ["T1"])
    assert deployments["D2"]["pull_request"] is None  # a prefix of neither
    incident = await db.fetchrow("SELECT * FROM analytics.incidents WHERE incident_id = 'INC-1'")
    assert (incident["pull_request"], incident["task_ids"]) == ("acme/web#7", ["T1"])  # no deployment named
    commit = await db.fetchrow("SELECT * FROM analytics.commits WHERE sha = $1", FULL_HEAD[:9])
    assert commit["pull_request"] == "acme/web#7"
    await store(db, clean(events))
    deployed = [e for e in await timeline(db, TASK, "T1") if e.event_type.startswith("deployment.")]
    assert {e.payload["deployment_id"] for e in deployed} == {"D1"}  # not D2: another commit
    assert all(f"-> commit {FULL_MERGE} (commit) -> deployment D1" in e.linked_by for e in deployed)
