"""The devtrail event contract: envelope, event types, codec, topic map."""

from schemas.codec import decode_message, encode_bundle, encode_event, validate_event
from schemas.envelope import SCHEMA_VERSION, Envelope, Family
from schemas.errors import ContractError, DecodeError, DevtrailError, EventValidationError
from schemas.events import (
    EVENT_ADAPTER,
    EVENT_CLASSES,
    AgentAction,
    AgentActionPayload,
    Event,
    LlmCalled,
    LlmCalledPayload,
    TaskCompleted,
    TaskCompletedPayload,
    TaskCreated,
    TaskCreatedPayload,
    TaskFailed,
    TaskFailedPayload,
    TaskStarted,
    TaskStartedPayload,
    TaskStatus,
    ToolCalled,
    ToolCalledPayload,
)
from schemas.ids import uuid7
from schemas.topics import TopicMap

__all__ = [
    "EVENT_ADAPTER",
    "EVENT_CLASSES",
    "SCHEMA_VERSION",
    "AgentAction",
    "AgentActionPayload",
    "ContractError",
    "DecodeError",
    "DevtrailError",
    "Envelope",
    "Event",
    "EventValidationError",
    "Family",
    "LlmCalled",
    "LlmCalledPayload",
    "TaskCompleted",
    "TaskCompletedPayload",
    "TaskCreated",
    "TaskCreatedPayload",
    "TaskFailed",
    "TaskFailedPayload",
    "TaskStarted",
    "TaskStartedPayload",
    "TaskStatus",
    "ToolCalled",
    "ToolCalledPayload",
    "TopicMap",
    "decode_message",
    "encode_bundle",
    "encode_event",
    "uuid7",
    "validate_event",
]
