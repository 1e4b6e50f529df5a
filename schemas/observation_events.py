"""Records about the work: context stored, validation results, metrics, user actions."""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from devtrail.schemas.envelope import EntityId, Envelope, Family, Payload, ShortText, Text
from devtrail.schemas.fields import Attributes, FiniteFloat, Int64, NonNegativeInt, Sha256, StrictBool

#: A context key: letters, digits and ``._:/@-``, at most 200 characters, e.g. ``repo/web/CLAUDE.md``.
ContextKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")]
#: A metric name in OpenTelemetry style, e.g. ``devtrail.task.duration``.
MetricName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,199}$")]
#: A metric attribute key.
AttributeKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,99}$")]
#: Up to 64 metric attributes with scalar values.
MetricAttributes = Annotated[dict[AttributeKey, StrictBool | Int64 | FiniteFloat | ShortText], Field(max_length=64)]


class ValidationOutcome(enum.StrEnum):
    """Result of a validation."""

    PASSED = "passed"
    FAILED = "failed"
    WARNING = "warning"
    SKIPPED = "skipped"
    ERROR = "error"


class MetricKind(enum.StrEnum):
    """What a recorded value means."""

    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


class ContextStoredPayload(Payload):
    """A version of a piece of context (a document, a memory, a prompt) was stored."""

    key: ContextKey = Field(description="What the context is, e.g. repo/web/CLAUDE.md.")
    version: Annotated[NonNegativeInt, Field(ge=1)] = Field(description="Version of this key, from 1.")
    content_type: ShortText | None = Field(default=None, description="Media type, e.g. text/markdown.")
    size_bytes: NonNegativeInt | None = Field(default=None, description="Size of the stored content.")
    sha256: Sha256 | None = Field(default=None, description="SHA-256 of the content, lower-case hex.")
    location: ShortText | None = Field(default=None, description="Where it is stored, e.g. an object-store URI.")
    summary: Text | None = Field(default=None, description="What it holds.")


class ValidationResultPayload(Payload):
    """The outcome of a validation (a check, a review, an evaluation)."""

    validator: ShortText = Field(description="What validated, e.g. ruff, reviewer-agent, acceptance-tests.")
    outcome: ValidationOutcome = Field(description="passed, failed, warning, skipped or error.")
    target: ShortText | None = Field(default=None, description="What was validated, e.g. a file, a PR, a task.")
    score: Annotated[FiniteFloat, Field(ge=0, le=1)] | None = Field(
        default=None, description="Score from 0 to 1, if the validator gives one."
    )
    checks_total: NonNegativeInt | None = Field(default=None, description="Checks run.")
    checks_failed: NonNegativeInt | None = Field(default=None, description="Checks that failed.")
    message: Text | None = Field(default=None, description="What it found.")
    details: Attributes = Field(default_factory=dict, description="Free-form details (any JSON object).")


class MetricRecordedPayload(Payload):
    """One measurement."""

    name: MetricName = Field(description="Metric name, e.g. devtrail.task.duration.")
    value: FiniteFloat = Field(description="The value (finite).")
    unit: ShortText = Field(description="UCUM unit as OpenTelemetry uses them, e.g. ms, s, By, 1, {token}.")
    kind: MetricKind = Field(default=MetricKind.GAUGE, description="gauge, counter (a delta) or histogram sample.")
    attributes: MetricAttributes = Field(default_factory=dict, description="Up to 64 scalar attributes.")


class UserActionPayload(Payload):
    """Something a person did, e.g. approved a PR, re-ran a task, edited a requirement."""

    user_id: EntityId = Field(description="The person.")
    action: ShortText = Field(description="What they did, e.g. approve, rerun, comment.")
    target_type: ShortText | None = Field(default=None, description="Kind of thing acted on, e.g. task, pr.")
    target_id: EntityId | None = Field(default=None, description="The thing acted on.")
    detail: Attributes = Field(default_factory=dict, description="Free-form details (any JSON object).")


class ContextStored(Envelope):
    """Context was stored."""

    family: ClassVar[Family] = Family.CONTEXT
    event_type: Literal["context.stored"] = "context.stored"
    payload: ContextStoredPayload


class ValidationResult(Envelope):
    """A validation produced a result."""

    family: ClassVar[Family] = Family.VALIDATION
    event_type: Literal["validation.result"] = "validation.result"
    payload: ValidationResultPayload


class MetricRecorded(Envelope):
    """A performance metric was recorded."""

    family: ClassVar[Family] = Family.METRIC
    event_type: Literal["metric.recorded"] = "metric.recorded"
    payload: MetricRecordedPayload


class UserAction(Envelope):
    """A person acted."""

    family: ClassVar[Family] = Family.USER
    event_type: Literal["user.action"] = "user.action"
    payload: UserActionPayload
