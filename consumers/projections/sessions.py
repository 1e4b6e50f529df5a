"""``projections.sessions`` from the session events and every event that names a session.

client, model and title come from ``session.started``, the end from ``session.ended``. The
project, agent, task and requirement of a session come from the events that carry both the
session and that reference: each is the one of the latest such event (the task a session
works on now; ``analytics.sessions.task_ids`` lists every task it worked on).
"""

from __future__ import annotations

from collections.abc import Sequence

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections.batch import Dispatch, Handler, reference_groups
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
from devtrail.schemas.events import SessionEnded, SessionStarted

DESCRIBED = Latest("described", (text("client"), text("user_id"), text("model"), text("title")))
ENDED = Latest(
    "ended",
    (
        text("end_reason"),
        Column("duration_ms", "bigint"),
        Column("message_count", "bigint"),
        Column("input_tokens", "bigint"),
        Column("output_tokens", "bigint"),
        Column("cost_usd", "double precision"),
    ),
)
PROJECT = Latest("project_ref", (text("project_id"),))
AGENT = Latest("agent_ref", (text("agent_id"),))
TASK = Latest("task_ref", (text("task_id"),))
REQUIREMENT = Latest("requirement_ref", (text("requirement_id"),))

SESSIONS = Table(
    "projections.sessions",
    key=(text("session_id"),),
    rules=(
        DESCRIBED,
        Least(stamp("started_at")),
        ENDED,
        PROJECT,
        AGENT,
        TASK,
        REQUIREMENT,
        Least(stamp("first_seen")),
        Greatest(stamp("last_seen")),
    ),
)


def session_started(event: SessionStarted, key: EventKey, out: Reduction) -> None:
    p = event.payload
    out.add((event.session_id,), DESCRIBED.set(key, p.client, p.user_id, p.model, p.title) | {"started_at": key.at}, 0)


def session_ended(event: SessionEnded, key: EventKey, out: Reduction) -> None:
    p = event.payload
    patch = ENDED.set(key, p.reason.value, p.duration_ms, p.message_count, p.input_tokens, p.output_tokens, p.cost_usd)
    out.add((event.session_id,), patch, 0)


HANDLERS: dict[type[Envelope], Handler[Reduction]] = {SessionStarted: session_started, SessionEnded: session_ended}
DISPATCH = Dispatch(HANDLERS)


def reduce_sessions(rows: Sequence[CleanRow]) -> Reduction:
    """The batch reduced to one patch per session."""
    out = Reduction(SESSIONS)
    for (project_id, agent_id, session_id, task_id, requirement_id), group in reference_groups(rows).items():
        if session_id is None:
            continue
        patch = {"first_seen": group.first.at, "last_seen": group.last.at}
        for rule, reference in (
            (PROJECT, project_id),
            (AGENT, agent_id),
            (TASK, task_id),
            (REQUIREMENT, requirement_id),
        ):
            if reference is not None:
                patch |= rule.set(group.last, reference)
        out.add((session_id,), patch, group.events)
    DISPATCH.apply(rows, out)
    return out


class SessionsProjection(ProjectionWriter):
    """``Writer`` of ``projections.sessions``."""

    name = "projection_sessions"
    tables = (SESSIONS,)

    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        return [reduce_sessions(rows)]
