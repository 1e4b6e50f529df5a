"""What each event type is about, and how it names it: the references it requires.

An event names the entity it is about either in the envelope (``task_id``, ``agent_id``,
...: the event classes make the field required, e.g. ``devtrail.schemas.task_events.TaskEnvelope``)
or in its payload (``deployment_id``, a pull request's ``repository`` and ``number``, ...).
The few types that require neither are listed in ``UNBOUND_TYPES`` with the reason;
docs/events.md shows the table ("References") and the tests keep the three in step.
"""

from __future__ import annotations

__all__ = ["ENVELOPE_REFERENCES", "PAYLOAD_IDENTITIES", "UNBOUND_TYPES"]

#: Envelope fields that name an entity an event is about, and the entity each names.
ENVELOPE_REFERENCES: dict[str, str] = {
    "project_id": "project",
    "agent_id": "agent",
    "session_id": "session",
    "task_id": "task",
    "requirement_id": "requirement",
}

#: Payload fields that name what an event is about, for the types that carry it there.
PAYLOAD_IDENTITIES = ("deployment_id", "repository", "number", "sha", "incident_id")

#: Event types that require no reference, and why.
UNBOUND_TYPES: dict[str, str] = {
    "llm.called": "Should carry `agent_id` or `session_id`: a model is called by an agent, in a session, or by a "
    "service with neither (a scorer, an evaluation). Not enforced: no declarative constraint says "
    '"one of", and a Python check would slow the most frequent type.',
    "link.created": "Should carry the reference of the entity it links (`task_id`, `requirement_id`, `session_id`, "
    "...): any one of them, so none is required.",
    "context.stored": "The context is named by `payload.key` and `payload.version`.",
    "validation.result": "What was validated is `payload.target` or any envelope reference.",
    "metric.recorded": "A measurement; its attributes say of what.",
    "user.action": "The person is `payload.user_id`; what they acted on is `payload.target_id`.",
    "system.error": "About devtrail itself: `payload.component`.",
    "system.config_changed": "About devtrail itself: `payload.component` and `payload.key`.",
    "system.notice": "About devtrail itself: `payload.component`.",
    "alert.raised": "What it is about is `payload.subject_kind` and `payload.subject_id` (a task, a requirement, "
    "an agent, a pull request, ...); the envelope carries that entity's references when they are known.",
}
