"""Requirements: created, updated, complexity scored, completed.

Every requirement event is about one requirement: ``requirement_id`` is required
(``RequirementEnvelope``).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from devtrail.schemas.envelope import EntityId, Envelope, Family, Payload, ShortText, Text
from devtrail.schemas.fields import DurationMs, NonNegativeFloat, NonNegativeInt, Priority

_REQUIREMENT_ID = "The requirement; required for this event."

#: Acceptance criteria: up to 100 items of at most 10,000 characters.
AcceptanceCriteria = Annotated[tuple[Text, ...], Field(max_length=100)]


class RequirementCreatedPayload(Payload):
    """A new requirement."""

    title: ShortText = Field(description="One line saying what is wanted.")
    description: Text | None = Field(default=None, description="The details.")
    priority: Priority = Field(default=3, description="0 (lowest) to 5 (highest).")
    acceptance_criteria: AcceptanceCriteria = Field(default=(), description="What must hold when it is done.")


#: The fields of ``requirement.updated`` of which at least one is set (not null).
_UPDATABLE = ("title", "description", "priority", "acceptance_criteria")


class RequirementUpdatedPayload(Payload):
    """The fields of a requirement that changed; at least one is set."""

    # The rule of ``_something_changed``, for the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in _UPDATABLE]
        }
    )

    title: ShortText | None = Field(default=None, description="New title.")
    description: Text | None = Field(default=None, description="New description.")
    priority: Priority | None = Field(default=None, description="New priority, 0 to 5.")
    acceptance_criteria: AcceptanceCriteria | None = Field(default=None, description="New acceptance criteria.")
    reason: Text | None = Field(default=None, description="Why it changed.")

    @model_validator(mode="after")
    def _something_changed(self) -> Self:
        if all(getattr(self, name) is None for name in _UPDATABLE):
            raise ValueError("set at least one of title, description, priority, acceptance_criteria")
        return self


class RequirementComplexityScoredPayload(Payload):
    """How hard a requirement is, as judged by a person or a model."""

    score: Annotated[NonNegativeInt, Field(ge=1, le=10)] = Field(description="1 (trivial) to 10 (very complex).")
    method: ShortText | None = Field(default=None, description="How it was scored, e.g. llm, planning_poker.")
    model: ShortText | None = Field(default=None, description="The model that scored it (gen_ai.request.model).")
    rationale: Text | None = Field(default=None, description="Why this score.")
    estimated_hours: NonNegativeFloat | None = Field(default=None, description="Estimated effort in hours.")


class RequirementCompletedPayload(Payload):
    """A requirement was met."""

    tasks_completed: NonNegativeInt | None = Field(default=None, description="Tasks done for it.")
    duration_ms: DurationMs | None = Field(default=None, description="Time from creation to completion.")
    summary: Text | None = Field(default=None, description="What was delivered.")


class RequirementReopenedPayload(Payload):
    """A completed requirement has work again: one of its tasks failed or was added after it was completed."""

    reason: Text = Field(description="Why it is open again.")
    task_id: EntityId | None = Field(default=None, description="The task that reopened it.")


class RequirementEnvelope(Envelope):
    """Base of the requirement events: each is about one requirement, so ``requirement_id`` is required."""

    requirement_id: EntityId = Field(description=_REQUIREMENT_ID)


class RequirementCreated(RequirementEnvelope):
    """A requirement was created."""

    family: ClassVar[Family] = Family.REQUIREMENT
    event_type: Literal["requirement.created"] = "requirement.created"
    payload: RequirementCreatedPayload


class RequirementUpdated(RequirementEnvelope):
    """A requirement was changed."""

    family: ClassVar[Family] = Family.REQUIREMENT
    event_type: Literal["requirement.updated"] = "requirement.updated"
    payload: RequirementUpdatedPayload


class RequirementComplexityScored(RequirementEnvelope):
    """A requirement's complexity was scored."""

    family: ClassVar[Family] = Family.REQUIREMENT
    event_type: Literal["requirement.complexity_scored"] = "requirement.complexity_scored"
    payload: RequirementComplexityScoredPayload


class RequirementCompleted(RequirementEnvelope):
    """A requirement was completed."""

    family: ClassVar[Family] = Family.REQUIREMENT
    event_type: Literal["requirement.completed"] = "requirement.completed"
    payload: RequirementCompletedPayload = RequirementCompletedPayload()


class RequirementReopened(RequirementEnvelope):
    """A completed requirement was reopened."""

    family: ClassVar[Family] = Family.REQUIREMENT
    event_type: Literal["requirement.reopened"] = "requirement.reopened"
    payload: RequirementReopenedPayload
