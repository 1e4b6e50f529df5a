"""``projections.deployments`` from the ``deployment.*`` events.

Status: started, succeeded (``deployment.completed``) or failed, from the latest of those
events by key. The environment and the commit are the latest ones any of its events gave;
branch, pull request, repository and who triggered it come from ``deployment.started``; the
build and test outcomes from the latest ``deployment.build_result`` / ``deployment.test_result``;
the project from the latest of its events that named one.
"""

from __future__ import annotations

from collections.abc import Sequence

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections.batch import Dispatch, Handler
from devtrail.consumers.projections.merge import Column, EventKey, Latest, Patch, Reduction, Table, text
from devtrail.consumers.projections.writer import ProjectionWriter
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import (
    DeploymentBuildResult,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentStarted,
    DeploymentTestResult,
)

STARTED_STATUS, SUCCEEDED, FAILED_STATUS = "started", "succeeded", "failed"

BIGINT = "bigint"
STARTED = Latest(
    "started",
    (text("branch"), Column("pr_number", "integer"), text("repository"), text("triggered_by")),
)
ENVIRONMENT = Latest("environment", (text("environment"),))
COMMIT = Latest("commit", (text("commit_sha"),))
STATUS = Latest("status", (text("status"),))
COMPLETED = Latest("completed", (text("url"),))
FAILED = Latest("failed", (text("error"), text("failed_stage"), Column("retriable", "boolean")))
BUILD = Latest(
    "build", (text("build_outcome"), text("build_error"), Column("build_duration_ms", BIGINT), text("build_log_url"))
)
PROJECT = Latest("project_ref", (text("project_id"),))
TESTS = Latest(
    "tests",
    (
        text("tests_outcome"),
        Column("tests_total", BIGINT),
        Column("tests_passed", BIGINT),
        Column("tests_failed", BIGINT),
        Column("tests_skipped", BIGINT),
        Column("tests_duration_ms", BIGINT),
        text("tests_report_url"),
    ),
)

DEPLOYMENTS = Table(
    "projections.deployments",
    key=(text("deployment_id"),),
    rules=(STARTED, ENVIRONMENT, COMMIT, STATUS, COMPLETED, FAILED, BUILD, TESTS, PROJECT),
)


def _add(
    out: Reduction, event: Envelope, deployment_id: str, key: EventKey, commit_sha: str | None, patch: Patch
) -> None:
    if commit_sha is not None:
        patch |= COMMIT.set(key, commit_sha)
    if event.project_id is not None:
        patch |= PROJECT.set(key, event.project_id)
    out.add((deployment_id,), patch)


def deployment_started(event: DeploymentStarted, key: EventKey, out: Reduction) -> None:
    p = event.payload
    patch = STARTED.set(key, p.branch, p.pr_number, p.repository, p.triggered_by)
    patch |= ENVIRONMENT.set(key, p.environment) | STATUS.set(key, STARTED_STATUS)
    _add(out, event, p.deployment_id, key, p.commit_sha, patch)


def deployment_completed(event: DeploymentCompleted, key: EventKey, out: Reduction) -> None:
    p = event.payload
    patch = COMPLETED.set(key, p.url) | ENVIRONMENT.set(key, p.environment) | STATUS.set(key, SUCCEEDED)
    _add(out, event, p.deployment_id, key, p.commit_sha, patch)


def deployment_failed(event: DeploymentFailed, key: EventKey, out: Reduction) -> None:
    p = event.payload
    stage = p.stage.value if p.stage is not None else None
    patch = FAILED.set(key, p.error, stage, p.retriable) | ENVIRONMENT.set(key, p.environment)
    _add(out, event, p.deployment_id, key, p.commit_sha, patch | STATUS.set(key, FAILED_STATUS))


def deployment_build_result(event: DeploymentBuildResult, key: EventKey, out: Reduction) -> None:
    p = event.payload
    patch = BUILD.set(key, p.outcome.value, p.error, p.duration_ms, p.log_url)
    _add(out, event, p.deployment_id, key, p.commit_sha, patch)


def deployment_test_result(event: DeploymentTestResult, key: EventKey, out: Reduction) -> None:
    p = event.payload
    counts = (p.tests_total, p.tests_passed, p.tests_failed, p.tests_skipped)
    patch = TESTS.set(key, p.outcome.value, *counts, p.duration_ms, p.report_url)
    _add(out, event, p.deployment_id, key, p.commit_sha, patch)


HANDLERS: dict[type[Envelope], Handler[Reduction]] = {
    DeploymentStarted: deployment_started,
    DeploymentBuildResult: deployment_build_result,
    DeploymentTestResult: deployment_test_result,
    DeploymentCompleted: deployment_completed,
    DeploymentFailed: deployment_failed,
}
DISPATCH = Dispatch(HANDLERS)


def reduce_deployments(rows: Sequence[CleanRow]) -> Reduction:
    """The batch reduced to one patch per deployment."""
    out = Reduction(DEPLOYMENTS)
    DISPATCH.apply(rows, out)
    return out


class DeploymentsProjection(ProjectionWriter):
    """``Writer`` of ``projections.deployments``."""

    name = "projection_deployments"
    tables = (DEPLOYMENTS,)

    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        return [reduce_deployments(rows)]
