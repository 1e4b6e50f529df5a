"""``projections.tasks`` and ``projections.task_dependencies`` from the task events.

Status comes from the lifecycle event with the greatest ``(occurred_at, event_id)``:
created -> pending, started -> in_progress, status_changed -> its ``to_status``, completed,
failed, cancelled. ``attempts`` counts distinct ``task.started`` events (their ids are kept).
``first_seen`` / ``last_seen`` span every event that names the task, of any type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections.batch import TASK_ID, Dispatch, Handler, spans
from devtrail.consumers.projections.merge import (
    Column,
    EventKey,
    Greatest,
    IdSet,
    Latest,
    Least,
    Patch,
    Reduction,
    Table,
    stamp,
    text,
)
from devtrail.consumers.projections.writer import ProjectionWriter
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import (
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskDependencyAdded,
    TaskEnvelope,
    TaskFailed,
    TaskStarted,
    TaskStatus,
    TaskStatusChanged,
)

DEFINED = Latest(
    "defined", (text("title"), text("description"), Column("priority", "smallint"), text("parent_task_id"))
)
#: Of two status events at the same instant, the later stage wins: done over blocked or
#: started, over pending (the event ids, random within a millisecond, decide only ties of these).
STATUS = Latest(
    "status",
    (text("status"),),
    rank=(
        (TaskStatus.IN_PROGRESS.value, 1),
        (TaskStatus.BLOCKED.value, 1),
        (TaskStatus.COMPLETED.value, 2),
        (TaskStatus.FAILED.value, 2),
        (TaskStatus.CANCELLED.value, 2),
    ),
)
ASSIGNED = Latest("assigned", (text("assignee"),))
COMPLETED = Latest("completed", (text("completion_summary"),))
FAILED = Latest("failed", (text("failure_error"),))
CANCELLED = Latest("cancelled", (text("cancel_reason"),))
PROJECT = Latest("project_ref", (text("project_id"),))
REQUIREMENT = Latest("requirement_ref", (text("requirement_id"),))
AGENT = Latest("agent_ref", (text("agent_id"),))
UPDATED = Latest("updated")

TASKS = Table(
    "projections.tasks",
    key=(text("task_id"),),
    rules=(
        DEFINED,
        Least(stamp("created_at")),
        STATUS,
        Least(stamp("started_at")),
        IdSet("started_event_ids"),
        ASSIGNED,
        COMPLETED,
        FAILED,
        CANCELLED,
        PROJECT,
        REQUIREMENT,
        AGENT,
        Least(stamp("first_seen")),
        Greatest(stamp("last_seen")),
        UPDATED,
    ),
)

DECLARED = Latest("declared", (Column("blocking", "boolean"),))
TASK_DEPENDENCIES = Table(
    "projections.task_dependencies",
    key=(text("task_id"), text("depends_on_task_id")),
    rules=(DECLARED, Least(stamp("added_at"))),
)


@dataclass
class TaskPatches:
    """What a batch says about tasks and their dependencies."""

    tasks: Reduction = field(default_factory=lambda: Reduction(TASKS))
    dependencies: Reduction = field(default_factory=lambda: Reduction(TASK_DEPENDENCIES))

    def task(self, event: TaskEnvelope, key: EventKey, patch: Patch) -> None:
        """Add a task event's patch, with the references it carries (already counted by ``spans``)."""
        for rule, reference in (
            (PROJECT, event.project_id),
            (REQUIREMENT, event.requirement_id),
            (AGENT, event.agent_id),
        ):
            if reference is not None:
                patch |= rule.set(key, reference)
        self.tasks.add((event.task_id,), patch | UPDATED.set(key), events=0)


def _status(key: EventKey, status: TaskStatus, **columns: Any) -> Patch:
    return STATUS.set(key, status.value) | columns


def task_created(event: TaskCreated, key: EventKey, out: TaskPatches) -> None:
    p = event.payload
    definition = DEFINED.set(key, p.title, p.description, p.priority, p.parent_task_id)
    out.task(event, key, definition | _status(key, TaskStatus.PENDING, created_at=key.at))


def task_started(event: TaskStarted, key: EventKey, out: TaskPatches) -> None:
    patch = _status(key, TaskStatus.IN_PROGRESS, started_at=key.at, started_event_ids=frozenset((key.event_id,)))
    if event.payload.assignee is not None:
        patch |= ASSIGNED.set(key, event.payload.assignee)
    out.task(event, key, patch)


def task_status_changed(event: TaskStatusChanged, key: EventKey, out: TaskPatches) -> None:
    out.task(event, key, _status(key, event.payload.to_status))


def task_completed(event: TaskCompleted, key: EventKey, out: TaskPatches) -> None:
    out.task(event, key, _status(key, TaskStatus.COMPLETED) | COMPLETED.set(key, event.payload.summary))


def task_failed(event: TaskFailed, key: EventKey, out: TaskPatches) -> None:
    out.task(event, key, _status(key, TaskStatus.FAILED) | FAILED.set(key, event.payload.error))


def task_cancelled(event: TaskCancelled, key: EventKey, out: TaskPatches) -> None:
    out.task(event, key, _status(key, TaskStatus.CANCELLED) | CANCELLED.set(key, event.payload.reason))


def task_dependency_added(event: TaskDependencyAdded, key: EventKey, out: TaskPatches) -> None:
    edge = (event.task_id, event.payload.depends_on_task_id)
    out.dependencies.add(edge, DECLARED.set(key, event.payload.blocking) | {"added_at": key.at})
    out.task(event, key, {})


HANDLERS: dict[type[Envelope], Handler[TaskPatches]] = {
    TaskCreated: task_created,
    TaskStarted: task_started,
    TaskStatusChanged: task_status_changed,
    TaskCompleted: task_completed,
    TaskFailed: task_failed,
    TaskCancelled: task_cancelled,
    TaskDependencyAdded: task_dependency_added,
}
DISPATCH = Dispatch(HANDLERS)


def reduce_tasks(rows: Sequence[CleanRow]) -> TaskPatches:
    """The batch reduced to one patch per task and per dependency."""
    out = TaskPatches()
    for task_id, (first, last, events) in spans(rows, TASK_ID).items():
        out.tasks.add((task_id,), {"first_seen": first, "last_seen": last}, events)
    DISPATCH.apply(rows, out)
    return out


class TasksProjection(ProjectionWriter):
    """``Writer`` of ``projections.tasks`` and ``projections.task_dependencies``."""

    name = "projection_tasks"
    tables = (TASKS, TASK_DEPENDENCIES)

    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        out = reduce_tasks(rows)
        return [out.tasks, out.dependencies]
