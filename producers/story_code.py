"""The code side of a story: pull requests and commits, deployments, an incident and its fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from devtrail.producers.story_truth import (
    DeploymentStatus,
    DeploymentTruth,
    IncidentTruth,
    PrTruth,
    PullRequestStatus,
)
from devtrail.producers.story_world import PERSONS, Agent, Project, Run
from devtrail.schemas.code_events import (
    AuthorKind,
    CommitPushed,
    CommitPushedPayload,
    PullRequestClosed,
    PullRequestClosedPayload,
    PullRequestMerged,
    PullRequestMergedPayload,
    PullRequestOpened,
    PullRequestOpenedPayload,
)
from devtrail.schemas.deployment_events import (
    DeploymentBuildResult,
    DeploymentBuildResultPayload,
    DeploymentCompleted,
    DeploymentCompletedPayload,
    DeploymentFailed,
    DeploymentFailedPayload,
    DeploymentStage,
    DeploymentStarted,
    DeploymentStartedPayload,
    DeploymentTestResult,
    DeploymentTestResultPayload,
    StepOutcome,
)
from devtrail.schemas.fields import Severity
from devtrail.schemas.incident_events import (
    IncidentOpened,
    IncidentOpenedPayload,
    IncidentResolved,
    IncidentResolvedPayload,
)

#: Share of pull requests whose title names the Linear key and whose branch does not.
TITLE_ONLY_RATE = 0.25
#: Share of pull requests an agent writes (the agent working the task); people write the others.
AGENT_AUTHOR_RATE = 0.6
ENVIRONMENT = "production"


@dataclass
class PullRequestDraft:
    """A pull request while it is open."""

    pr_id: str
    number: int
    task_id: str
    linear_key: str
    matched_by: str
    author: str
    author_kind: AuthorKind
    branch: str
    title: str
    opened_at: datetime
    commits: list[str] = field(default_factory=list)


class CodeWriter:
    """Writes a project's code events into a story, and records their truth.

    Args:
        run: the decisions, the events, the truth.
        project: whose repository.
    """

    def __init__(self, run: Run, project: Project) -> None:
        self._run = run
        self._rng = run.rng
        self._emitter = run.emitter
        self._project = project
        self._log = run.log

    def open_pull_request(self, task_id: str, linear_key: str, subject: str, agent: Agent) -> PullRequestDraft:
        """``pr.opened`` for the task's Linear issue, then one to three ``commit.pushed``."""
        rng, project = self._rng, self._project
        by_agent = rng.random() < AGENT_AUTHOR_RATE
        author, handle = (agent.agent_id, agent.name) if by_agent else (rng.choice(PERSONS), "")
        handle = handle or author
        slug = subject.lower().replace(":", "").replace(" ", "-")
        title_only = rng.random() < TITLE_ONLY_RATE
        number = project.pr_number()
        draft = PullRequestDraft(
            pr_id=f"{project.repository}#{number}",
            number=number,
            task_id=task_id,
            linear_key=linear_key,
            matched_by="title" if title_only else "branch",
            author=author,
            author_kind=AuthorKind.AGENT if by_agent else AuthorKind.PERSON,
            branch=f"{handle}/{slug}" if title_only else f"{handle}/{linear_key.lower()}-{slug}",
            title=f"{subject} [{linear_key}]" if title_only else subject,
            opened_at=self._emitter.clock.advance(rng, 60, 600),
            commits=[self._emitter.sha()],
        )
        self._emit_pr(PullRequestOpened, PullRequestOpenedPayload, draft)
        for n in range(rng.randint(1, 3)):
            if n:
                draft.commits.append(self._emitter.sha())
            self._push(draft, draft.commits[-1])
        return draft

    def merge(self, draft: PullRequestDraft) -> PrTruth:
        """``pr.merged``, a while after the last commit."""
        merged_at = self._emitter.clock.advance(self._rng, 300, 1800)
        merge_sha = self._emitter.sha()
        self._emit_pr(PullRequestMerged, PullRequestMergedPayload, draft, merge_sha=merge_sha)
        return self._record(draft, PullRequestStatus.MERGED, merge_sha, merged_at, None)

    def close(self, draft: PullRequestDraft) -> PrTruth:
        """``pr.closed`` without a merge."""
        closed_at = self._emitter.clock.advance(self._rng, 300, 1800)
        self._emit_pr(PullRequestClosed, PullRequestClosedPayload, draft)
        return self._record(draft, PullRequestStatus.CLOSED, None, None, closed_at)

    def deploy(self, pr: PrTruth, succeeds: bool) -> DeploymentTruth:
        """Deploy the pull request's merge commit: started, build result, then completed or failed."""
        rng, emit, project = self._rng, self._emitter.emit, self._project
        deployment_id = self._run.new_id("deploy-", project.project_id)
        assert pr.merge_sha is not None
        sha, refs = pr.merge_sha, {"project_id": project.project_id, "correlation_id": deployment_id}
        started_at = self._emitter.clock.advance(rng, 120, 1200)
        emit(
            DeploymentStarted,
            payload=DeploymentStartedPayload(
                deployment_id=deployment_id, environment=ENVIRONMENT, commit_sha=sha, branch="main",
                pr_number=pr.number, repository=pr.repository, triggered_by=rng.choice(PERSONS),
            ),
            **refs,
        )  # fmt: skip
        self._emitter.clock.advance(rng, 60, 400)
        emit(
            DeploymentBuildResult,
            payload=DeploymentBuildResultPayload(
                deployment_id=deployment_id, outcome=StepOutcome.SUCCESS, commit_sha=sha,
                duration_ms=rng.randint(30_000, 400_000),
            ),
            **refs,
        )  # fmt: skip
        ended_at = self._finish_deployment(deployment_id, sha, succeeds, refs)
        status = DeploymentStatus.COMPLETED if succeeds else DeploymentStatus.FAILED
        truth = DeploymentTruth(
            deployment_id, project.project_id, ENVIRONMENT, sha, pr.pr_id, pr.task_id, status, started_at, ended_at
        )
        self._log.deployments[deployment_id] = truth
        return truth

    def open_incident(self, failed: DeploymentTruth) -> tuple[str, Severity, datetime]:
        """``incident.opened`` naming the failed deployment (not its commit: found through the deployment)."""
        rng = self._rng
        incident_id = self._run.new_id("INC-", self._project.project_id)
        severity = rng.choice((Severity.ERROR, Severity.CRITICAL))
        opened_at = self._emitter.clock.advance(rng, 120, 900)
        self._emitter.emit(
            IncidentOpened,
            payload=IncidentOpenedPayload(
                incident_id=incident_id, title=f"Errors in {ENVIRONMENT} after {failed.deployment_id}",
                severity=severity, environment=ENVIRONMENT, deployment_id=failed.deployment_id,
            ),
            project_id=self._project.project_id,
            correlation_id=incident_id,
        )  # fmt: skip
        return incident_id, severity, opened_at

    def resolve_incident(
        self, opened: tuple[str, Severity, datetime], failed: DeploymentTruth, fixed: DeploymentTruth
    ) -> IncidentTruth:
        """``incident.resolved``: the failed deployment at fault, the fixed one as the fix."""
        incident_id, severity, opened_at = opened
        resolved_at = self._emitter.clock.advance(self._rng, 120, 1800)
        self._emitter.emit(
            IncidentResolved,
            payload=IncidentResolvedPayload(
                incident_id=incident_id, environment=ENVIRONMENT, deployment_id=failed.deployment_id,
                resolution="hotfix deployed", fixed_by_deployment_id=fixed.deployment_id,
            ),
            project_id=self._project.project_id,
            correlation_id=incident_id,
        )  # fmt: skip
        truth = IncidentTruth(
            incident_id, self._project.project_id, severity.value, failed.deployment_id, fixed.deployment_id,
            failed.task_id, opened_at, resolved_at,
        )  # fmt: skip
        self._log.incidents[incident_id] = truth
        return truth

    def _finish_deployment(self, deployment_id: str, sha: str, succeeds: bool, refs: dict[str, str]) -> datetime:
        rng, emit = self._rng, self._emitter.emit
        if not succeeds:
            ended_at = self._emitter.clock.advance(rng, 60, 600)
            payload = DeploymentFailedPayload(
                deployment_id=deployment_id, environment=ENVIRONMENT, error="health checks failed: 5xx above 2%",
                stage=DeploymentStage.VERIFY, commit_sha=sha, duration_ms=rng.randint(60_000, 900_000),
            )  # fmt: skip
            emit(DeploymentFailed, payload=payload, **refs)
            return ended_at
        self._emitter.clock.advance(rng, 60, 600)
        total = rng.randint(200, 2_000)
        emit(
            DeploymentTestResult,
            payload=DeploymentTestResultPayload(
                deployment_id=deployment_id, outcome=StepOutcome.SUCCESS, commit_sha=sha,
                tests_total=total, tests_passed=total,
            ),
            **refs,
        )  # fmt: skip
        ended_at = self._emitter.clock.advance(rng, 60, 600)
        emit(
            DeploymentCompleted,
            payload=DeploymentCompletedPayload(
                deployment_id=deployment_id, environment=ENVIRONMENT, commit_sha=sha,
                duration_ms=rng.randint(120_000, 1_200_000),
            ),
            **refs,
        )  # fmt: skip
        return ended_at

    def _emit_pr(
        self,
        cls: type[PullRequestOpened | PullRequestMerged | PullRequestClosed],
        payload_cls: type[PullRequestOpenedPayload | PullRequestMergedPayload | PullRequestClosedPayload],
        draft: PullRequestDraft,
        **extra: str,
    ) -> None:
        payload = payload_cls(
            repository=self._project.repository, number=draft.number, branch=draft.branch, base_branch="main",
            title=draft.title, head_sha=draft.commits[-1], author=draft.author, author_kind=draft.author_kind,
            url=f"https://github.com/{self._project.repository}/pull/{draft.number}", **extra,
        )  # fmt: skip
        self._emitter.emit(cls, payload=payload, **self._code_refs(draft))

    def _push(self, draft: PullRequestDraft, sha: str) -> None:
        pushed_at = self._emitter.clock.advance(self._rng, 60, 480)
        payload = CommitPushedPayload(
            sha=sha, repository=self._project.repository, branch=draft.branch,
            authored_at=pushed_at - timedelta(seconds=self._rng.randint(30, 900)), author=draft.author,
            author_kind=draft.author_kind, message=f"{draft.title}: part {len(draft.commits)}",
            pr_number=draft.number,
        )  # fmt: skip
        self._emitter.emit(CommitPushed, payload=payload, **self._code_refs(draft))

    def _code_refs(self, draft: PullRequestDraft) -> dict[str, str]:
        """Project (the repository's integration knows it) and, for an agent's code, the agent; never the task."""
        refs = {"project_id": self._project.project_id, "correlation_id": draft.pr_id}
        if draft.author_kind is AuthorKind.AGENT:
            refs["agent_id"] = draft.author
        return refs

    def _record(
        self,
        draft: PullRequestDraft,
        status: PullRequestStatus,
        merge_sha: str | None,
        merged_at: datetime | None,
        closed_at: datetime | None,
    ) -> PrTruth:
        truth = PrTruth(
            pr_id=draft.pr_id, repository=self._project.repository, number=draft.number,
            project_id=self._project.project_id, task_id=draft.task_id, linear_key=draft.linear_key,
            matched_by=draft.matched_by, status=status, author=draft.author, author_kind=draft.author_kind,
            branch=draft.branch, title=draft.title, commits=tuple(draft.commits), merge_sha=merge_sha,
            opened_at=draft.opened_at, merged_at=merged_at, closed_at=closed_at,
        )  # fmt: skip
        self._log.pull_requests[draft.pr_id] = truth
        return truth
