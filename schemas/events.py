"""One class per event type; ``event_type`` is the discriminator.

Handlers dispatch on the class (``match event: case TaskCompleted(): ...``), never on
the string.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, TypeAdapter

from schemas.envelope import EntityId, Envelope, Family, Payload, ShortText, Text


class TaskStatus(enum.StrEnum):
    """Lifecycle states of a task."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# ---- task lifecycle -------------------------------------------------------------------


class TaskCreatedPayload(Payload):
    title: ShortText
    description: Text | None = None
    parent_task_id: EntityId | None = None
    priority: Annotated[int, Field(ge=0, le=5)] = 3


class TaskStartedPayload(Payload):
    assignee: EntityId | None = None


class TaskCompletedPayload(Payload):
    duration_ms: NonNegativeInt | None = None
    summary: Text | None = None


class TaskFailedPayload(Payload):
    error: Text
    retriable: bool = False
    duration_ms: NonNegativeInt | None = None


class TaskCreated(Envelope):
    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.created"] = "task.created"
    payload: TaskCreatedPayload


class TaskStarted(Envelope):
    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.started"] = "task.started"
    payload: TaskStartedPayload = TaskStartedPayload()


class TaskCompleted(Envelope):
    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.completed"] = "task.completed"
    payload: TaskCompletedPayload = TaskCompletedPayload()


class TaskFailed(Envelope):
    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.failed"] = "task.failed"
    payload: TaskFailedPayload


# ---- agents, tools, LLMs --------------------------------------------------------------


class AgentActionPayload(Payload):
    action: ShortText
    detail: dict[str, Any] = Field(default_factory=dict)


class ToolCalledPayload(Payload):
    tool_name: ShortText
    success: bool = True
    duration_ms: NonNegativeInt | None = None
    error: Text | None = None


class LlmCalledPayload(Payload):
    """One model call. Names map to OpenTelemetry ``gen_ai.*`` attributes."""

    provider: ShortText = Field(description="gen_ai.system")
    model: ShortText = Field(description="gen_ai.request.model")
    input_tokens: NonNegativeInt = Field(description="gen_ai.usage.input_tokens")
    output_tokens: NonNegativeInt = Field(description="gen_ai.usage.output_tokens")
    cached_tokens: NonNegativeInt = 0
    cost_usd: NonNegativeFloat = 0.0
    latency_ms: NonNegativeInt | None = None


class AgentAction(Envelope):
    family: ClassVar[Family] = Family.AGENT
    event_type: Literal["agent.action"] = "agent.action"
    payload: AgentActionPayload


class ToolCalled(Envelope):
    family: ClassVar[Family] = Family.TOOL
    event_type: Literal["tool.called"] = "tool.called"
    payload: ToolCalledPayload


class LlmCalled(Envelope):
    family: ClassVar[Family] = Family.LLM
    event_type: Literal["llm.called"] = "llm.called"
    payload: LlmCalledPayload


EVENT_CLASSES: tuple[type[Envelope], ...] = (
    TaskCreated,
    TaskStarted,
    TaskCompleted,
    TaskFailed,
    AgentAction,
    ToolCalled,
    LlmCalled,
)

Event = Annotated[
    TaskCreated | TaskStarted | TaskCompleted | TaskFailed | AgentAction | ToolCalled | LlmCalled,
    Field(discriminator="event_type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_LIST_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
