"""``projections.agents`` from ``agent.registered`` / ``agent.unregistered`` and every event naming an agent.

The description (name, runtime, model, version, capabilities) is the latest registration's;
``registered_at`` the first registration; ``first_seen`` / ``last_seen`` span every event
that carries the ``agent_id``.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections.batch import AGENT_ID, Dispatch, Handler, spans
from devtrail.consumers.projections.merge import (
    Column,
    EventKey,
    Greatest,
    Latest,
    Least,
    Reduction,
    Table,
    stamp,
    text,
)
from devtrail.consumers.projections.writer import ProjectionWriter
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import AgentRegistered, AgentUnregistered

#: Capabilities travel as a JSON array and are stored as ``text[]``.
CAPABILITIES = Column(
    "capabilities",
    "text[]",
    "text",
    "CASE WHEN {0} IS NOT NULL THEN ARRAY(SELECT jsonb_array_elements_text({0}::jsonb)) END",
)
REGISTRATION = Latest("registration", (text("name"), text("runtime"), text("model"), text("version"), CAPABILITIES))
UNREGISTERED = Latest("unregistered", (text("unregister_reason"),))

AGENTS = Table(
    "projections.agents",
    key=(text("agent_id"),),
    rules=(
        REGISTRATION,
        Least(stamp("registered_at")),
        UNREGISTERED,
        Least(stamp("first_seen")),
        Greatest(stamp("last_seen")),
    ),
)


def agent_registered(event: AgentRegistered, key: EventKey, out: Reduction) -> None:
    p = event.payload
    capabilities = orjson.dumps(p.capabilities).decode()
    patch = REGISTRATION.set(key, p.name, p.runtime, p.model, p.version, capabilities)
    out.add((event.agent_id,), patch | {"registered_at": key.at}, 0)


def agent_unregistered(event: AgentUnregistered, key: EventKey, out: Reduction) -> None:
    out.add((event.agent_id,), UNREGISTERED.set(key, event.payload.reason), 0)


HANDLERS: dict[type[Envelope], Handler[Reduction]] = {
    AgentRegistered: agent_registered,
    AgentUnregistered: agent_unregistered,
}
DISPATCH = Dispatch(HANDLERS)


def reduce_agents(rows: Sequence[CleanRow]) -> Reduction:
    """The batch reduced to one patch per agent."""
    out = Reduction(AGENTS)
    for agent_id, (first, last, events) in spans(rows, AGENT_ID).items():
        out.add((agent_id,), {"first_seen": first, "last_seen": last}, events)
    DISPATCH.apply(rows, out)
    return out


class AgentsProjection(ProjectionWriter):
    """``Writer`` of ``projections.agents``."""

    name = "projection_agents"
    tables = (AGENTS,)

    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        return [reduce_agents(rows)]
