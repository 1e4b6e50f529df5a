"""Sessions (a conversation or an agent run) and the chat messages inside them.

Every event here is about one session: ``session_id`` is required (``SessionEnvelope``).
"""

from __future__ import annotations

import enum
from typing import ClassVar, Literal

from pydantic import Field

from devtrail.schemas.envelope import EntityId, Envelope, Family, Payload, ShortText, Text
from devtrail.schemas.fields import CostUsd, DurationMs, LongText, NonNegativeInt, StrictBool, TokenCount

_SESSION_ID = "The session (gen_ai.conversation.id); required for this event."


class ChatRole(enum.StrEnum):
    """Who wrote a chat message."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class SessionEndReason(enum.StrEnum):
    """Why a session ended."""

    COMPLETED = "completed"
    USER_EXIT = "user_exit"
    TIMEOUT = "timeout"
    ERROR = "error"
    OTHER = "other"


class SessionStartedPayload(Payload):
    """A session began."""

    client: ShortText | None = Field(default=None, description="The client, e.g. claude-code, cursor, web.")
    user_id: EntityId | None = Field(default=None, description="The person who started it, if any.")
    model: ShortText | None = Field(default=None, description="Model in use at start (gen_ai.request.model).")
    title: ShortText | None = Field(default=None, description="A short title.")


class SessionEndedPayload(Payload):
    """A session ended, with its totals."""

    reason: SessionEndReason = Field(default=SessionEndReason.COMPLETED, description="Why it ended.")
    duration_ms: DurationMs | None = Field(default=None, description="Time from start to end.")
    message_count: NonNegativeInt | None = Field(default=None, description="Chat messages exchanged.")
    input_tokens: TokenCount | None = Field(default=None, description="Input tokens of all its LLM calls.")
    output_tokens: TokenCount | None = Field(default=None, description="Output tokens of all its LLM calls.")
    cost_usd: CostUsd | None = Field(default=None, description="Cost of all its LLM calls in USD.")


class ChatMessagePayload(Payload):
    """One message of a conversation."""

    role: ChatRole = Field(description="user, assistant, system or tool.")
    content: LongText = Field(description="The text, at most 100,000 characters (truncate longer ones).")
    content_truncated: StrictBool = Field(default=False, description="Whether content was cut to fit.")
    message_id: EntityId | None = Field(default=None, description="Id of the message in its client.")
    tool_call_id: EntityId | None = Field(
        default=None, description="For role tool: the call answered (gen_ai.tool.call.id)."
    )
    tokens: TokenCount | None = Field(default=None, description="Tokens in the message, if known.")
    summary: Text | None = Field(default=None, description="A short summary, for long messages.")


class SessionEnvelope(Envelope):
    """Base of the events about one session: ``session_id`` is required."""

    session_id: EntityId = Field(description=_SESSION_ID)


class SessionStarted(SessionEnvelope):
    """A session started."""

    family: ClassVar[Family] = Family.SESSION
    event_type: Literal["session.started"] = "session.started"
    payload: SessionStartedPayload = SessionStartedPayload()


class SessionEnded(SessionEnvelope):
    """A session ended."""

    family: ClassVar[Family] = Family.SESSION
    event_type: Literal["session.ended"] = "session.ended"
    payload: SessionEndedPayload = SessionEndedPayload()


class ChatMessage(SessionEnvelope):
    """A chat message was sent in a session (same topic as the session)."""

    family: ClassVar[Family] = Family.SESSION
    event_type: Literal["chat.message"] = "chat.message"
    payload: ChatMessagePayload
