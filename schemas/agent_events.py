"""What agents do: registration, actions, errors, tool calls and LLM calls.

Field descriptions name the OpenTelemetry ``gen_ai.*`` attribute a field corresponds to,
where there is one. The agent events and ``tool.called`` are about one agent: ``agent_id`` is
required (``AgentEnvelope``). ``llm.called`` requires no reference: a model is called by an
agent, in a session, or by a service with neither (a scorer, an evaluation); it should carry
``agent_id`` or ``session_id``, which is not enforced ("one of" is no declarative constraint).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from devtrail.schemas.envelope import EntityId, Envelope, Family, Payload, ShortText, Text
from devtrail.schemas.fields import FiniteFloat, Labels, NonNegativeFloat, NonNegativeInt, StrictBool

_AGENT_ID = "The agent (gen_ai.agent.id); required for this event."


# ---- payloads -------------------------------------------------------------------------


class AgentRegisteredPayload(Payload):
    """An agent became known to devtrail."""

    name: ShortText = Field(description="Human-readable name (gen_ai.agent.name).")
    runtime: ShortText | None = Field(default=None, description="What runs it, e.g. claude-code, codegen, a service.")
    model: ShortText | None = Field(default=None, description="Default model it calls (gen_ai.request.model).")
    version: ShortText | None = Field(default=None, description="Version of the agent or its runtime.")
    capabilities: Labels = Field(default=(), description="What it can do, e.g. code, review, deploy.")


class AgentActionPayload(Payload):
    """A step an agent took that is neither a tool call nor an LLM call."""

    action: ShortText = Field(description="What it did, e.g. plan, reflect, handoff.")
    detail: dict[str, Any] = Field(default_factory=dict, description="Free-form details (any JSON object).")


class AgentErrorPayload(Payload):
    """An error inside an agent (the task may still succeed)."""

    error_type: ShortText = Field(description="Class of error (error.type), e.g. timeout, rate_limited.")
    message: Text = Field(description="What went wrong.")
    retriable: StrictBool = Field(default=False, description="Whether the agent may try again.")
    stacktrace: Text | None = Field(default=None, description="Stack trace, if any (no secrets).")


class AgentUnregisteredPayload(Payload):
    """An agent was retired."""

    reason: Text | None = Field(default=None, description="Why it was retired.")


class ToolCalledPayload(Payload):
    """One tool call made by an agent."""

    tool_name: ShortText = Field(description="The tool (gen_ai.tool.name).")
    success: StrictBool = Field(default=True, description="Whether the call succeeded.")
    duration_ms: NonNegativeInt | None = Field(default=None, description="How long the call took.")
    error: Text | None = Field(default=None, description="The error, when it failed.")


class LlmCalledPayload(Payload):
    """One model call. Names map to OpenTelemetry ``gen_ai.*`` attributes."""

    provider: ShortText = Field(description="gen_ai.system (gen_ai.provider.name): anthropic, openai, ...")
    model: ShortText = Field(description="gen_ai.request.model")
    input_tokens: NonNegativeInt = Field(description="gen_ai.usage.input_tokens (cached tokens included)")
    output_tokens: NonNegativeInt = Field(description="gen_ai.usage.output_tokens")
    cached_tokens: NonNegativeInt = Field(default=0, description="gen_ai.usage.cache_read.input_tokens")
    cost_usd: NonNegativeFloat = Field(default=0.0, description="Price of the call in USD.")
    latency_ms: NonNegativeInt | None = Field(default=None, description="Time from request to complete response.")
    response_id: ShortText | None = Field(default=None, description="gen_ai.response.id (since 1.1)")
    finish_reason: ShortText | None = Field(
        default=None, description="gen_ai.response.finish_reasons (the first), e.g. stop, length (since 1.1)"
    )
    temperature: FiniteFloat | None = Field(default=None, ge=0, description="gen_ai.request.temperature (since 1.1)")


# ---- events ---------------------------------------------------------------------------


class AgentEnvelope(Envelope):
    """Base of the events about one agent (the agent events and ``tool.called``): ``agent_id`` is required."""

    agent_id: EntityId = Field(description=_AGENT_ID)


class AgentRegistered(AgentEnvelope):
    """An agent was registered."""

    family: ClassVar[Family] = Family.AGENT
    event_type: Literal["agent.registered"] = "agent.registered"
    payload: AgentRegisteredPayload


class AgentAction(AgentEnvelope):
    """An agent took an action."""

    family: ClassVar[Family] = Family.AGENT
    event_type: Literal["agent.action"] = "agent.action"
    payload: AgentActionPayload


class AgentErrorReported(AgentEnvelope):
    """An agent reported an error (event type ``agent.error``)."""

    family: ClassVar[Family] = Family.AGENT
    event_type: Literal["agent.error"] = "agent.error"
    payload: AgentErrorPayload


class AgentUnregistered(AgentEnvelope):
    """An agent was unregistered."""

    family: ClassVar[Family] = Family.AGENT
    event_type: Literal["agent.unregistered"] = "agent.unregistered"
    payload: AgentUnregisteredPayload = AgentUnregisteredPayload()


class ToolCalled(AgentEnvelope):
    """An agent called a tool."""

    family: ClassVar[Family] = Family.TOOL
    event_type: Literal["tool.called"] = "tool.called"
    payload: ToolCalledPayload


class LlmCalled(Envelope):
    """A language model was called: tokens, cost and latency."""

    family: ClassVar[Family] = Family.LLM
    event_type: Literal["llm.called"] = "llm.called"
    payload: LlmCalledPayload
