"""The event catalog: one class per event type; ``event_type`` is the discriminator.

Handlers dispatch on the class (``match event: case TaskCompleted(): ...``), never on
the string. The classes live in one module per family (``task_events``, ``agent_events``,
...); this module gathers them into ``EVENT_CLASSES``, the ``Event`` union and its adapters.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from devtrail.schemas.agent_events import (
    AgentAction,
    AgentActionPayload,
    AgentEnvelope,
    AgentErrorPayload,
    AgentErrorReported,
    AgentRegistered,
    AgentRegisteredPayload,
    AgentUnregistered,
    AgentUnregisteredPayload,
    LlmCalled,
    LlmCalledPayload,
    ToolCalled,
    ToolCalledPayload,
)
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
    PullRequestPayload,
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
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.fields import Severity
from devtrail.schemas.incident_events import (
    IncidentOpened,
    IncidentOpenedPayload,
    IncidentResolved,
    IncidentResolvedPayload,
)
from devtrail.schemas.link_events import (
    ClaudeSessionLink,
    CodegenRequestLink,
    DeploymentLink,
    GithubPullRequestLink,
    LinearIssueLink,
    LinkCreated,
    LinkCreatedPayload,
    LinkKind,
    LinkTarget,
)
from devtrail.schemas.nul import NulRejectingAdapter
from devtrail.schemas.observation_events import (
    ContextStored,
    ContextStoredPayload,
    MetricKind,
    MetricRecorded,
    MetricRecordedPayload,
    UserAction,
    UserActionPayload,
    ValidationOutcome,
    ValidationResult,
    ValidationResultPayload,
)
from devtrail.schemas.requirement_events import (
    RequirementCompleted,
    RequirementCompletedPayload,
    RequirementComplexityScored,
    RequirementComplexityScoredPayload,
    RequirementCreated,
    RequirementCreatedPayload,
    RequirementEnvelope,
    RequirementReopened,
    RequirementReopenedPayload,
    RequirementUpdated,
    RequirementUpdatedPayload,
)
from devtrail.schemas.session_events import (
    ChatMessage,
    ChatMessagePayload,
    ChatRole,
    SessionEnded,
    SessionEndedPayload,
    SessionEndReason,
    SessionEnvelope,
    SessionStarted,
    SessionStartedPayload,
)
from devtrail.schemas.system_events import (
    AlertRaised,
    AlertRaisedPayload,
    AlertSubject,
    SystemConfigChanged,
    SystemConfigChangedPayload,
    SystemErrorPayload,
    SystemErrorReported,
    SystemNotice,
    SystemNoticePayload,
)
from devtrail.schemas.task_events import (
    TaskCancelled,
    TaskCancelledPayload,
    TaskCompleted,
    TaskCompletedPayload,
    TaskCreated,
    TaskCreatedPayload,
    TaskDependencyAdded,
    TaskDependencyAddedPayload,
    TaskEnvelope,
    TaskFailed,
    TaskFailedPayload,
    TaskStalled,
    TaskStalledPayload,
    TaskStarted,
    TaskStartedPayload,
    TaskStatus,
    TaskStatusChanged,
    TaskStatusChangedPayload,
)

__all__ = [
    "EVENT_ADAPTER",
    "EVENT_CLASSES",
    "EVENT_CLASSES_BY_TYPE",
    "EVENT_LIST_ADAPTER",
    "AgentAction",
    "AgentActionPayload",
    "AgentEnvelope",
    "AgentErrorPayload",
    "AgentErrorReported",
    "AgentRegistered",
    "AgentRegisteredPayload",
    "AgentUnregistered",
    "AgentUnregisteredPayload",
    "AlertRaised",
    "AlertRaisedPayload",
    "AlertSubject",
    "AuthorKind",
    "ChatMessage",
    "ChatMessagePayload",
    "ChatRole",
    "ClaudeSessionLink",
    "CodegenRequestLink",
    "CommitPushed",
    "CommitPushedPayload",
    "ContextStored",
    "ContextStoredPayload",
    "DeploymentBuildResult",
    "DeploymentBuildResultPayload",
    "DeploymentCompleted",
    "DeploymentCompletedPayload",
    "DeploymentFailed",
    "DeploymentFailedPayload",
    "DeploymentLink",
    "DeploymentStage",
    "DeploymentStarted",
    "DeploymentStartedPayload",
    "DeploymentTestResult",
    "DeploymentTestResultPayload",
    "Event",
    "GithubPullRequestLink",
    "IncidentOpened",
    "IncidentOpenedPayload",
    "IncidentResolved",
    "IncidentResolvedPayload",
    "LinearIssueLink",
    "LinkCreated",
    "LinkCreatedPayload",
    "LinkKind",
    "LinkTarget",
    "LlmCalled",
    "LlmCalledPayload",
    "MetricKind",
    "MetricRecorded",
    "MetricRecordedPayload",
    "PullRequestClosed",
    "PullRequestClosedPayload",
    "PullRequestMerged",
    "PullRequestMergedPayload",
    "PullRequestOpened",
    "PullRequestOpenedPayload",
    "PullRequestPayload",
    "RequirementCompleted",
    "RequirementCompletedPayload",
    "RequirementComplexityScored",
    "RequirementComplexityScoredPayload",
    "RequirementCreated",
    "RequirementCreatedPayload",
    "RequirementEnvelope",
    "RequirementReopened",
    "RequirementReopenedPayload",
    "RequirementUpdated",
    "RequirementUpdatedPayload",
    "SessionEndReason",
    "SessionEnded",
    "SessionEndedPayload",
    "SessionEnvelope",
    "SessionStarted",
    "SessionStartedPayload",
    "Severity",
    "StepOutcome",
    "SystemConfigChanged",
    "SystemConfigChangedPayload",
    "SystemErrorPayload",
    "SystemErrorReported",
    "SystemNotice",
    "SystemNoticePayload",
    "TaskCancelled",
    "TaskCancelledPayload",
    "TaskCompleted",
    "TaskCompletedPayload",
    "TaskCreated",
    "TaskCreatedPayload",
    "TaskDependencyAdded",
    "TaskDependencyAddedPayload",
    "TaskEnvelope",
    "TaskFailed",
    "TaskFailedPayload",
    "TaskStalled",
    "TaskStalledPayload",
    "TaskStarted",
    "TaskStartedPayload",
    "TaskStatus",
    "TaskStatusChanged",
    "TaskStatusChangedPayload",
    "ToolCalled",
    "ToolCalledPayload",
    "UserAction",
    "UserActionPayload",
    "ValidationOutcome",
    "ValidationResult",
    "ValidationResultPayload",
]

#: Every event class, in catalog order (grouped by family).
EVENT_CLASSES: tuple[type[Envelope], ...] = (
    AgentRegistered,
    AgentAction,
    AgentErrorReported,
    AgentUnregistered,
    ToolCalled,
    LlmCalled,
    SessionStarted,
    SessionEnded,
    ChatMessage,
    TaskCreated,
    TaskStarted,
    TaskStatusChanged,
    TaskCompleted,
    TaskFailed,
    TaskCancelled,
    TaskDependencyAdded,
    TaskStalled,
    RequirementCreated,
    RequirementUpdated,
    RequirementComplexityScored,
    RequirementCompleted,
    RequirementReopened,
    DeploymentStarted,
    DeploymentBuildResult,
    DeploymentTestResult,
    DeploymentCompleted,
    DeploymentFailed,
    PullRequestOpened,
    PullRequestMerged,
    PullRequestClosed,
    CommitPushed,
    IncidentOpened,
    IncidentResolved,
    LinkCreated,
    ContextStored,
    ValidationResult,
    MetricRecorded,
    UserAction,
    SystemErrorReported,
    SystemConfigChanged,
    SystemNotice,
    AlertRaised,
)

#: ``event_type`` string -> class.
EVENT_CLASSES_BY_TYPE: dict[str, type[Envelope]] = {
    str(cls.model_fields["event_type"].default): cls for cls in EVENT_CLASSES
}

Event = Annotated[
    AgentRegistered
    | AgentAction
    | AgentErrorReported
    | AgentUnregistered
    | ToolCalled
    | LlmCalled
    | SessionStarted
    | SessionEnded
    | ChatMessage
    | TaskCreated
    | TaskStarted
    | TaskStatusChanged
    | TaskCompleted
    | TaskFailed
    | TaskCancelled
    | TaskDependencyAdded
    | TaskStalled
    | RequirementCreated
    | RequirementUpdated
    | RequirementComplexityScored
    | RequirementCompleted
    | RequirementReopened
    | DeploymentStarted
    | DeploymentBuildResult
    | DeploymentTestResult
    | DeploymentCompleted
    | DeploymentFailed
    | PullRequestOpened
    | PullRequestMerged
    | PullRequestClosed
    | CommitPushed
    | IncidentOpened
    | IncidentResolved
    | LinkCreated
    | ContextStored
    | ValidationResult
    | MetricRecorded
    | UserAction
    | SystemErrorReported
    | SystemConfigChanged
    | SystemNotice
    | AlertRaised,
    Field(discriminator="event_type"),
]

#: Validates one event; ``validate_json`` also rejects strings holding NUL (``devtrail.schemas.nul``).
EVENT_ADAPTER: TypeAdapter[Event] = NulRejectingAdapter(Event)
#: Validates a bundle; ``validate_json`` also rejects strings holding NUL.
EVENT_LIST_ADAPTER: TypeAdapter[list[Event]] = NulRejectingAdapter(list[Event])
