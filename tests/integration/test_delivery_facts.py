"""The kept delivery facts (``projections.production_deployments``) equal the view that computes
them, after every batch, whatever order the deployment, pull request and commit events come in.

``devtrail.consumers.projections.delivery`` recomputes after each batch only the deployments the
batch's events can change; these tests catch a deployment it forgot, by comparing every kept row
with ``projections.production_deployments_live`` (``MISMATCHES``) after each batch.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from devtrail.consumers.checkpoint import WriterHost
from devtrail.consumers.clean import CLEAN_ROWS, CleanRow
from devtrail.consumers.projections import PROJECTIONS
from devtrail.consumers.projections.delivery import MISMATCHES, recompute_all
from devtrail.producers.stories import Stories
from devtrail.schemas.events import (
    AuthorKind,
    CommitPushed,
    CommitPushedPayload,
    DeploymentCompleted,
    DeploymentCompletedPayload,
    DeploymentStarted,
    DeploymentStartedPayload,
    PullRequestMerged,
    PullRequestMergedPayload,
    PullRequestOpened,
    PullRequestOpenedPayload,
)
from tests.integration.pipeline import clean

pytestmark = pytest.mark.integration

PROJECTION_TABLES = tuple(table.name for projection in PROJECTIONS for table in projection().tables)


def host() -> WriterHost[CleanRow]:
    return WriterHost("writers", CLEAN_ROWS, [p() for p in PROJECTIONS])


async def forget_everything(db: asyncpg.Connection) -> None:
    for table in PROJECTION_TABLES:
        await db.execute(f"DELETE FROM {table}")


async def apply_checking(db: asyncpg.Connection, rows: list[CleanRow], sizes: list[int]) -> int:
    """Apply ``rows`` in batches of ``sizes`` (cycled); after each, the kept facts equal the view.
    Returns the kept rows at the end."""
    writers, start, turn = host(), 0, 0
    while start < len(rows):
        batch = rows[start : start + sizes[turn % len(sizes)]]
        async with db.transaction():
            applied = await writers.apply(db, batch, writers.prepare(batch) if turn % 2 else None)
        assert applied.refusals == []
        differ = await db.fetchval(MISMATCHES)
        assert differ == 0, f"after batch {turn} ({sorted({r.event_type for r in batch})}): {differ} rows differ"
        start, turn = start + len(batch), turn + 1
    return int(await db.fetchval("SELECT count(*) FROM projections.production_deployments"))


T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
REPO = "acme/shop"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def pull_request(number: int, head: str, kind: AuthorKind) -> PullRequestOpenedPayload:
    return PullRequestOpenedPayload(
        repository=REPO, number=number, branch=f"b{number}", title=f"PR {number}", head_sha=head,
        author="dev", author_kind=kind,
    )  # fmt: skip


def entangled() -> list[Any]:
    """Deployments reached only through a commit's pull request, through a pull request's head
    and merge commits, by number, a pull request whose head commit moves off a deployment's, and
    commits whose pull request is told late."""
    head_1, merge_1, head_2, moved = "a1b2c3d4e5", "f0e1d2c3b4", "0123456789", "9876543210"
    shared: dict[str, Any] = {"source": "ci", "project_id": "P1"}
    deploy = [
        # D1 deploys PR 1's merge commit (no number): found through the PR's merge_sha
        DeploymentStarted(
            occurred_at=at(30),
            **shared,
            payload=DeploymentStartedPayload(deployment_id="D1", environment="production", commit_sha=merge_1),
        ),
        DeploymentCompleted(
            occurred_at=at(40),
            **shared,
            payload=DeploymentCompletedPayload(deployment_id="D1", environment="production", commit_sha=merge_1),
        ),
        # D2 names PR 2 by number
        DeploymentStarted(
            occurred_at=at(31),
            **shared,
            payload=DeploymentStartedPayload(
                deployment_id="D2", environment="prod", commit_sha=head_2, pr_number=2, repository=REPO
            ),
        ),
        DeploymentCompleted(
            occurred_at=at(41),
            **shared,
            payload=DeploymentCompletedPayload(deployment_id="D2", environment="prod", commit_sha=head_2),
        ),
        # D3 deploys PR 3's first head commit, which then moves on
        DeploymentStarted(
            occurred_at=at(32),
            **shared,
            payload=DeploymentStartedPayload(deployment_id="D3", environment="production", commit_sha="5555555555"),
        ),
        DeploymentCompleted(
            occurred_at=at(42),
            **shared,
            payload=DeploymentCompletedPayload(deployment_id="D3", environment="production", commit_sha="5555555555"),
        ),
        # D4 deploys a commit that says late which pull request it belongs to
        DeploymentStarted(
            occurred_at=at(33),
            **shared,
            payload=DeploymentStartedPayload(deployment_id="D4", environment="production", commit_sha="7777777777"),
        ),
        DeploymentCompleted(
            occurred_at=at(43),
            **shared,
            payload=DeploymentCompletedPayload(deployment_id="D4", environment="production", commit_sha="7777777777"),
        ),
    ]
    code = [
        PullRequestOpened(occurred_at=at(1), source="gh", payload=pull_request(1, head_1, AuthorKind.AGENT)),
        PullRequestMerged(occurred_at=at(20), source="gh", payload=PullRequestMergedPayload(
            **pull_request(1, head_1, AuthorKind.AGENT).model_dump(), merge_sha=merge_1)),
        CommitPushed(occurred_at=at(2), source="gh", payload=CommitPushedPayload(
            sha=head_1, repository=REPO, branch="b1", authored_at=at(0), author="dev",
            author_kind=AuthorKind.PERSON)),
        PullRequestOpened(occurred_at=at(3), source="gh", payload=pull_request(2, head_2, AuthorKind.PERSON)),
        CommitPushed(occurred_at=at(4), source="gh", payload=CommitPushedPayload(
            sha=head_2, repository=REPO, branch="b2", authored_at=at(-30), author="bot",
            author_kind=AuthorKind.AGENT, pr_number=2)),
        PullRequestOpened(occurred_at=at(5), source="gh", payload=pull_request(3, "5555555555", AuthorKind.PERSON)),
        PullRequestOpened(occurred_at=at(25), source="gh", payload=pull_request(3, moved, AuthorKind.PERSON)),
        PullRequestOpened(occurred_at=at(6), source="gh", payload=pull_request(4, "4444444444", AuthorKind.PERSON)),
        CommitPushed(occurred_at=at(7), source="gh", payload=CommitPushedPayload(
            sha="7777777777", repository=REPO, branch="b4", authored_at=at(-60), author="bot",
            author_kind=AuthorKind.AGENT)),
        CommitPushed(occurred_at=at(50), source="gh", payload=CommitPushedPayload(
            sha="7777777777", repository=REPO, branch="b4", authored_at=at(-60), author="bot",
            author_kind=AuthorKind.AGENT, pr_number=4)),
    ]  # fmt: skip
    return deploy + code


async def test_facts_equal_the_view_after_every_event_in_any_order(db: asyncpg.Connection) -> None:
    rows = clean(entangled())
    for seed in range(12):
        await forget_everything(db)
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        assert await apply_checking(db, shuffled, [1]) == 4
    kinds = dict(await db.fetch("SELECT deployment_id, author_kind FROM analytics.production_deployments"))
    # D1: PR 1 by an agent, its commit by a person; D2: PR 2 by a person, its commit by an agent;
    # D3: PR 3's head moved on: no pull request; D4: its commit names PR 4 (a person's) at last
    assert kinds == {"D1": "both", "D2": "both", "D3": "unknown", "D4": "both"}


async def test_facts_equal_the_view_after_every_batch_of_shuffled_stories(db: asyncpg.Connection) -> None:
    rows = clean(Stories("facts", seed=11, session_calls=(1, 2)).events(6000))
    random.Random(3).shuffle(rows)
    kept = await apply_checking(db, rows, [1, 50, 400, 7, 1500])
    assert kept > 20  # the stories deployed to production: the comparison compared something
    await apply_checking(db, rows, [2000])  # replayed: nothing changes
    assert await db.fetchval("SELECT count(*) FROM projections.production_deployments") == kept


async def test_recompute_all_gives_the_same_rows(db: asyncpg.Connection) -> None:
    rows = clean(Stories("facts", seed=12, session_calls=(1, 2)).events(3000))
    await apply_checking(db, rows, [500])
    before = await db.fetch("SELECT * FROM projections.production_deployments ORDER BY deployment_id")
    async with db.transaction():
        await recompute_all(db)
    assert await db.fetch("SELECT * FROM projections.production_deployments ORDER BY deployment_id") == before
    assert before
