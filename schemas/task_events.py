"""Task lifecycle: created, started, status changed, completed, failed, cancelled, dependency added.

Every task event is about one task: ``task_id`` is required (``TaskEnvelope``).
"""

from __future__ import annotations

import enum
from typing import ClassVar, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from devtrail.schemas.envelope import EntityId, Envelope, Family, OccurredAt, Payload, ShortText, Text
from devtrail.schemas.fields import NonNegativeInt, Priority, StrictBool


class TaskStatus(enum.StrEnum):
    """Lifecycle states of a task."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskCreatedPayload(Payload):
    """A new task."""

    title: ShortText = Field(description="One line saying what is to be done.")
    description: Text | None = Field(default=None, description="The details.")
    parent_task_id: EntityId | None = Field(default=None, description="The task this one is a sub-task of.")
    priority: Priority = Field(default=3, description="0 (lowest) to 5 (highest).")


class TaskStartedPayload(Payload):
    """Work on a task began."""

    assignee: EntityId | None = Field(default=None, description="Who works on it: an agent or a person.")


class TaskCompletedPayload(Payload):
    """A task was finished successfully."""

    duration_ms: NonNegativeInt | None = Field(default=None, description="Time from start to completion.")
    summary: Text | None = Field(default=None, description="What was done.")


class TaskFailedPayload(Payload):
    """A task ended without success."""

    error: Text = Field(description="Why it failed.")
    retriable: StrictBool = Field(default=False, description="Whether trying again may succeed.")
    duration_ms: NonNegativeInt | None = Field(default=None, description="Time from start to failure.")


class TaskStatusChangedPayload(Payload):
    """A task moved from one status to another."""

    # The rule of ``_status_differs``, for the JSON Schema: no pair of equal statuses.
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "anyOf": [
                    {"properties": {"from_status": {"const": status.value}, "to_status": {"const": status.value}}}
                    for status in TaskStatus
                ]
            }
        }
    )

    from_status: TaskStatus = Field(description="Status before the change.")
    to_status: TaskStatus = Field(description="Status after the change; differs from from_status.")
    reason: Text | None = Field(default=None, description="Why it changed.")

    @model_validator(mode="after")
    def _status_differs(self) -> Self:
        if self.from_status == self.to_status:
            raise ValueError(f"from_status and to_status are both {self.from_status.value!r}; nothing changed")
        return self


class TaskCancelledPayload(Payload):
    """A task was abandoned on purpose (not a failure)."""

    reason: Text | None = Field(default=None, description="Why it was cancelled.")
    cancelled_by: EntityId | None = Field(default=None, description="Who cancelled it: an agent or a person.")


class TaskDependencyAddedPayload(Payload):
    """The task (envelope ``task_id``) now depends on another task."""

    depends_on_task_id: EntityId = Field(description="The task it depends on; differs from the envelope's task_id.")
    blocking: StrictBool = Field(default=True, description="Whether the task cannot complete before the other one.")


class TaskStalledPayload(Payload):
    """A started task saw nothing for longer than the stall limit (raised by the ``stalled_tasks`` rule)."""

    last_activity_at: OccurredAt = Field(description="When the task's last event happened.")
    idle_s: NonNegativeInt = Field(description="Seconds without any event for the task when it was flagged.")
    status: TaskStatus | None = Field(default=None, description="The task's status then.")


_TASK_ID = "The task; required for this event."


class TaskEnvelope(Envelope):
    """Base of the task events: each is about one task, so ``task_id`` is required."""

    task_id: EntityId = Field(description=_TASK_ID)


class TaskCreated(TaskEnvelope):
    """A task was created."""

    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.created"] = "task.created"
    payload: TaskCreatedPayload


class TaskStarted(TaskEnvelope):
    """Work on a task started."""

    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.started"] = "task.started"
    payload: TaskStartedPayload = TaskStartedPayload()


class TaskCompleted(TaskEnvelope):
    """A task was completed."""

    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.completed"] = "task.completed"
    payload: TaskCompletedPayload = TaskCompletedPayload()


class TaskFailed(TaskEnvelope):
    """A task failed."""

    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.failed"] = "task.failed"
    payload: TaskFailedPayload


class TaskStatusChanged(TaskEnvelope):
    """A task's status changed."""

    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.status_changed"] = "task.status_changed"
    task_id: EntityId = Field(description="The task whose status changed.")
    payload: TaskStatusChangedPayload


class TaskCancelled(TaskEnvelope):
    """A task was cancelled."""

    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.cancelled"] = "task.cancelled"
    task_id: EntityId = Field(description="The cancelled task.")
    payload: TaskCancelledPayload = TaskCancelledPayload()


class TaskDependencyAdded(TaskEnvelope):
    """A dependency between two tasks was added."""

    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.dependency_added"] = "task.dependency_added"
    task_id: EntityId = Field(description="The dependent task.")
    payload: TaskDependencyAddedPayload

    @model_validator(mode="after")
    def _not_on_itself(self) -> Self:
        if self.payload.depends_on_task_id == self.task_id:
            raise ValueError(f"task {self.task_id!r} cannot depend on itself")
        return self


class TaskStalled(TaskEnvelope):
    """A started task went quiet for too long."""

    family: ClassVar[Family] = Family.TASK
    event_type: Literal["task.stalled"] = "task.stalled"
    payload: TaskStalledPayload
