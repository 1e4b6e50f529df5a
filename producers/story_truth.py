"""What the development stories of ``devtrail.producers.stories`` imply: the truth to check the pipeline against.

Every value here is recorded from the generator's own decisions, never by reading the events
back through devtrail code, so a test or the demo can compare what the pipeline made of the
events (enrichment, projections) with what the stories meant.
"""

from __future__ import annotations

import enum
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from devtrail.schemas.code_events import AuthorKind
from devtrail.schemas.task_events import TaskStatus


class PullRequestStatus(enum.StrEnum):
    """How a pull request ended."""

    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"


class RequirementStatus(enum.StrEnum):
    """A requirement is completed once all its tasks are; open otherwise."""

    OPEN = "open"
    COMPLETED = "completed"


class DeploymentStatus(enum.StrEnum):
    """How a deployment ended."""

    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class TaskTruth:
    """One task as its lifecycle events leave it.

    Attributes:
        status: the status of its lifecycle event with the latest ``occurred_at``.
        attempts: its ``task.started`` events (a retried task was started twice).
        started_at: the first ``task.started``; ``last_started_at`` the latest.
        failed_at: the latest ``task.failed``, also when a retry then completed the task.
        linear_key: the Linear issue a ``link.created`` links it to, if any.
        pull_request: its pull request, ``owner/repo#N``, if any.
        depends_on: the tasks its ``task.dependency_added`` events name, in order.
        llm_cost_usd: the cost of the LLM calls of its sessions (the calls name no task).
    """

    task_id: str
    project_id: str
    requirement_id: str
    parent_task_id: str | None
    title: str
    status: TaskStatus
    attempts: int
    linear_key: str | None
    pull_request: str | None
    depends_on: tuple[str, ...]
    created_at: datetime
    started_at: datetime | None
    last_started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None
    llm_cost_usd: float


@dataclass(frozen=True)
class RequirementTruth:
    """One requirement: its tasks (sub-tasks and hotfixes included) and whether all completed."""

    requirement_id: str
    project_id: str
    title: str
    status: RequirementStatus
    complexity: int
    tasks_total: int
    tasks_completed: int
    created_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class SessionTruth:
    """One agent session: one attempt at one task, with the totals of its calls."""

    session_id: str
    task_id: str
    agent_id: str
    project_id: str
    requirement_id: str
    started_at: datetime
    ended_at: datetime
    llm_calls: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class CallTruth:
    """A call that names only its session and agent, and what the pipeline should attribute it to."""

    event_id: str
    session_id: str
    agent_id: str
    task_id: str
    requirement_id: str
    project_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class LlmTruth(CallTruth):
    """One ``llm.called``: its attribution, tokens and cost (as the event carries them)."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class ToolTruth(CallTruth):
    """One ``tool.called`` and its attribution."""

    tool_name: str
    success: bool


@dataclass(frozen=True)
class PrTruth:
    """One pull request.

    Attributes:
        pr_id: ``owner/repo#N``, as ``devtrail.consumers.processor.correlate.pull_request_id`` names it.
        matched_by: how its ``pr.opened`` finds the task: ``branch`` (the branch names the
            Linear key, in lower case) or ``title`` (only the title names it). Its later
            events are matched ``explicit``: the processor links the pull request to the task.
        commits: the shas of its ``commit.pushed`` events, in order (the first is the head
            ``pr.opened`` names).
    """

    pr_id: str
    repository: str
    number: int
    project_id: str
    task_id: str
    linear_key: str
    matched_by: str
    status: PullRequestStatus
    author: str
    author_kind: AuthorKind
    branch: str
    title: str
    commits: tuple[str, ...]
    merge_sha: str | None
    opened_at: datetime
    merged_at: datetime | None
    closed_at: datetime | None


@dataclass(frozen=True)
class DeploymentTruth:
    """One deployment of a pull request's merge commit, and the task that commit comes from."""

    deployment_id: str
    project_id: str
    environment: str
    commit_sha: str
    pull_request: str
    task_id: str
    status: DeploymentStatus
    started_at: datetime
    ended_at: datetime


@dataclass(frozen=True)
class IncidentTruth:
    """One incident: the failed deployment at fault and the one that fixed it.

    Attributes:
        task_id: the task whose change the failed deployment shipped.
    """

    incident_id: str
    project_id: str
    severity: str
    deployment_id: str
    fixed_by_deployment_id: str
    task_id: str
    opened_at: datetime
    resolved_at: datetime


@dataclass(frozen=True)
class StoryTruth:
    """The truth of every story returned so far.

    Attributes:
        stories: stories written.
        event_counts: events by type.
        agents: agent id -> project id.
        llm_calls, tool_calls: by event id.
        pull_requests: by ``owner/repo#N``.
        cycles: the attempted dependency cycles: ``[a, b, c]`` means a depends on b, b on c
            and c on a; the first task's ``task.dependency_added`` closes the cycle (it comes last).
    """

    stories: int
    event_counts: dict[str, int]
    agents: dict[str, str]
    tasks: dict[str, TaskTruth]
    requirements: dict[str, RequirementTruth]
    sessions: dict[str, SessionTruth]
    llm_calls: dict[str, LlmTruth]
    tool_calls: dict[str, ToolTruth]
    pull_requests: dict[str, PrTruth]
    deployments: dict[str, DeploymentTruth]
    incidents: dict[str, IncidentTruth]
    cycles: list[list[str]]

    @property
    def events(self) -> int:
        """Events written."""
        return sum(self.event_counts.values())

    def cost_by_task(self) -> dict[str, float]:
        """LLM cost in USD by task, for the tasks with LLM calls."""
        return _summed((call.task_id, call.cost_usd) for call in self.llm_calls.values())

    def cost_by_requirement(self) -> dict[str, float]:
        """LLM cost in USD by requirement."""
        return _summed((call.requirement_id, call.cost_usd) for call in self.llm_calls.values())

    def cost_by_project(self) -> dict[str, float]:
        """LLM cost in USD by project."""
        return _summed((call.project_id, call.cost_usd) for call in self.llm_calls.values())

    def summary(self) -> dict[str, int]:
        """Counts of what the stories hold, for a report."""
        return {
            "stories": self.stories,
            "events": self.events,
            "agents": len(self.agents),
            "requirements": len(self.requirements),
            "tasks": len(self.tasks),
            "sessions": len(self.sessions),
            "llm_calls": len(self.llm_calls),
            "tool_calls": len(self.tool_calls),
            "pull_requests": len(self.pull_requests),
            "deployments": len(self.deployments),
            "incidents": len(self.incidents),
            "dependency_cycles": len(self.cycles),
        }


def _summed(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    totals: defaultdict[str, float] = defaultdict(float)
    for key, value in pairs:
        totals[key] += value
    return dict(totals)


@dataclass
class TruthLog:
    """The truth as the stories are written; ``snapshot`` freezes a copy."""

    stories: int = 0
    event_counts: Counter[str] = field(default_factory=Counter)
    agents: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, TaskTruth] = field(default_factory=dict)
    requirements: dict[str, RequirementTruth] = field(default_factory=dict)
    sessions: dict[str, SessionTruth] = field(default_factory=dict)
    llm_calls: dict[str, LlmTruth] = field(default_factory=dict)
    tool_calls: dict[str, ToolTruth] = field(default_factory=dict)
    pull_requests: dict[str, PrTruth] = field(default_factory=dict)
    deployments: dict[str, DeploymentTruth] = field(default_factory=dict)
    incidents: dict[str, IncidentTruth] = field(default_factory=dict)
    cycles: list[list[str]] = field(default_factory=list)

    def snapshot(self) -> StoryTruth:
        """A copy of the truth so far, which later stories leave unchanged."""
        return StoryTruth(
            stories=self.stories,
            event_counts=dict(self.event_counts),
            agents=dict(self.agents),
            tasks=dict(self.tasks),
            requirements=dict(self.requirements),
            sessions=dict(self.sessions),
            llm_calls=dict(self.llm_calls),
            tool_calls=dict(self.tool_calls),
            pull_requests=dict(self.pull_requests),
            deployments=dict(self.deployments),
            incidents=dict(self.incidents),
            cycles=[list(cycle) for cycle in self.cycles],
        )
