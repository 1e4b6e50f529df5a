"""Deployments: started, build result, test result, completed, failed.

Every deployment event names its ``deployment_id``; branch, pull request and commit say
what is being deployed, ``environment`` where.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from devtrail.schemas.envelope import EntityId, Envelope, Family, Payload, Text
from devtrail.schemas.fields import (
    BranchName,
    CommitSha,
    DeploymentId,
    DurationMs,
    EnvironmentName,
    NonNegativeInt,
    PullRequestNumber,
    RepositoryName,
    StrictBool,
    WebUrl,
)

_DEPLOYMENT_ID = "The deployment, as the deploying system names it."
_COMMIT = "The commit: 7 to 40 hexadecimal characters."
_ENVIRONMENT = "Where: a lower-case slug such as production, staging, preview-123."


class StepOutcome(enum.StrEnum):
    """How a build or a test run ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class DeploymentStage(enum.StrEnum):
    """Stage of a deployment."""

    BUILD = "build"
    TEST = "test"
    DEPLOY = "deploy"
    VERIFY = "verify"


class DeploymentStartedPayload(Payload):
    """What is deployed, from where, to where."""

    deployment_id: DeploymentId = Field(description=_DEPLOYMENT_ID)
    environment: EnvironmentName = Field(description=_ENVIRONMENT)
    commit_sha: CommitSha = Field(description=_COMMIT)
    branch: BranchName | None = Field(default=None, description="The git branch.")
    pr_number: PullRequestNumber | None = Field(default=None, description="The pull request, if any.")
    repository: RepositoryName | None = Field(default=None, description="The repository, owner/name.")
    triggered_by: EntityId | None = Field(default=None, description="Who started it: a person, an agent, a CI job.")


class DeploymentBuildResultPayload(Payload):
    """The outcome of the build step."""

    deployment_id: DeploymentId = Field(description=_DEPLOYMENT_ID)
    outcome: StepOutcome = Field(description="success, failure, cancelled or skipped.")
    commit_sha: CommitSha = Field(description=_COMMIT)
    duration_ms: DurationMs | None = Field(default=None, description="How long the build took.")
    log_url: WebUrl | None = Field(default=None, description="Where the build log is.")
    error: Text | None = Field(default=None, description="Why it failed.")


class DeploymentTestResultPayload(Payload):
    """The outcome of the test step; passed + failed + skipped <= total."""

    deployment_id: DeploymentId = Field(description=_DEPLOYMENT_ID)
    outcome: StepOutcome = Field(description="success, failure, cancelled or skipped.")
    commit_sha: CommitSha = Field(description=_COMMIT)
    tests_total: NonNegativeInt = Field(default=0, description="Tests run.")
    tests_passed: NonNegativeInt = Field(default=0, description="Tests that passed.")
    tests_failed: NonNegativeInt = Field(default=0, description="Tests that failed.")
    tests_skipped: NonNegativeInt = Field(default=0, description="Tests skipped.")
    duration_ms: DurationMs | None = Field(default=None, description="How long the tests took.")
    report_url: WebUrl | None = Field(default=None, description="Where the test report is.")

    @model_validator(mode="after")
    def _counts_add_up(self) -> Self:
        counted = self.tests_passed + self.tests_failed + self.tests_skipped
        if counted > self.tests_total:
            raise ValueError(f"passed + failed + skipped is {counted}, more than tests_total {self.tests_total}")
        return self


class DeploymentCompletedPayload(Payload):
    """A deployment is live."""

    deployment_id: DeploymentId = Field(description=_DEPLOYMENT_ID)
    environment: EnvironmentName = Field(description=_ENVIRONMENT)
    commit_sha: CommitSha = Field(description=_COMMIT)
    url: WebUrl | None = Field(default=None, description="Where the deployed service answers.")
    duration_ms: DurationMs | None = Field(default=None, description="Time from start to live.")


class DeploymentFailedPayload(Payload):
    """A deployment did not go live."""

    deployment_id: DeploymentId = Field(description=_DEPLOYMENT_ID)
    environment: EnvironmentName = Field(description=_ENVIRONMENT)
    error: Text = Field(description="Why it failed.")
    stage: DeploymentStage | None = Field(default=None, description="The stage that failed.")
    commit_sha: CommitSha | None = Field(default=None, description=_COMMIT)
    retriable: StrictBool = Field(default=False, description="Whether deploying again may succeed.")
    duration_ms: DurationMs | None = Field(default=None, description="Time from start to failure.")


class DeploymentStarted(Envelope):
    """A deployment started."""

    family: ClassVar[Family] = Family.DEPLOYMENT
    event_type: Literal["deployment.started"] = "deployment.started"
    payload: DeploymentStartedPayload


class DeploymentBuildResult(Envelope):
    """A deployment's build finished."""

    family: ClassVar[Family] = Family.DEPLOYMENT
    event_type: Literal["deployment.build_result"] = "deployment.build_result"
    payload: DeploymentBuildResultPayload


class DeploymentTestResult(Envelope):
    """A deployment's tests finished."""

    family: ClassVar[Family] = Family.DEPLOYMENT
    event_type: Literal["deployment.test_result"] = "deployment.test_result"
    payload: DeploymentTestResultPayload


class DeploymentCompleted(Envelope):
    """A deployment completed: the commit is live in the environment."""

    family: ClassVar[Family] = Family.DEPLOYMENT
    event_type: Literal["deployment.completed"] = "deployment.completed"
    payload: DeploymentCompletedPayload


class DeploymentFailed(Envelope):
    """A deployment failed."""

    family: ClassVar[Family] = Family.DEPLOYMENT
    event_type: Literal["deployment.failed"] = "deployment.failed"
    payload: DeploymentFailedPayload
