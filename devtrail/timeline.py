"""``devtrail timeline KIND ID``: the events of an entity and of everything linked to it, in order.

The entities linked to the one asked for are found by walking the stored links
(``projections.correlations``) in the directions that make sense for it (``MOVES``): a
task's sub-tasks, sessions, Linear issue, pull requests, their commits, the deployments of
those and the incidents of the deployments; a pull request's tasks, commits, deployments
and incidents; a deployment's commit, pull request, tasks and incidents; ... A
requirement's own events are its ``requirement.*`` and ``link.created`` events; the rest
come through its tasks. Every entity
remembers the path that reached it, which is how each event was linked. The walk is
breadth-first with a visited set, so a cycle in the links (a task its own ancestor) ends
it, and it is bounded (``MAX_DEPTH``, ``MAX_ENTITIES``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from devtrail.schemas.envelope import Family
from devtrail.schemas.events import EVENT_CLASSES

TASK, REQUIREMENT, SESSION = "task", "requirement", "session"
PULL_REQUEST, LINEAR, COMMIT, DEPLOYMENT, INCIDENT = "pull_request", "linear_issue", "commit", "deployment", "incident"
CORRELATION = "correlation"
#: The CLI's names of the kinds.
KINDS = {
    "task": TASK,
    "requirement": REQUIREMENT,
    "session": SESSION,
    "pr": PULL_REQUEST,
    "linear": LINEAR,
    "deployment": DEPLOYMENT,
    "correlation": CORRELATION,
}
MAX_DEPTH = 8
MAX_ENTITIES = 5000

Move = tuple[str, str, bool]  # (from kind, to kind, along the link's direction)
_DOWN_FROM_TASK: frozenset[Move] = frozenset(
    {
        (TASK, TASK, False),  # sub-tasks: a sub-task links to its parent
        (TASK, SESSION, False),
        (TASK, LINEAR, True),
        (TASK, PULL_REQUEST, True),
        (LINEAR, PULL_REQUEST, False),
        (PULL_REQUEST, COMMIT, True),
        (PULL_REQUEST, COMMIT, False),
        (COMMIT, DEPLOYMENT, False),
        (PULL_REQUEST, DEPLOYMENT, False),
        (DEPLOYMENT, INCIDENT, False),
        (COMMIT, INCIDENT, False),
    }
)
_UP_TO_TASKS: frozenset[Move] = frozenset(
    {
        (PULL_REQUEST, TASK, False),
        (PULL_REQUEST, LINEAR, True),
        (LINEAR, TASK, False),
        (DEPLOYMENT, COMMIT, True),
        (DEPLOYMENT, PULL_REQUEST, True),
        (COMMIT, PULL_REQUEST, True),  # a commit pushed with its pull request's number
        (COMMIT, PULL_REQUEST, False),  # a pull request's head or merge commit
        (PULL_REQUEST, COMMIT, True),
        (PULL_REQUEST, COMMIT, False),
        (COMMIT, DEPLOYMENT, False),
        (PULL_REQUEST, DEPLOYMENT, False),
        (DEPLOYMENT, INCIDENT, False),
        (INCIDENT, DEPLOYMENT, True),
        (INCIDENT, COMMIT, True),
    }
)
#: Which links a walk from each kind follows.
MOVES: dict[str, frozenset[Move]] = {
    TASK: _DOWN_FROM_TASK,
    REQUIREMENT: _DOWN_FROM_TASK | {(REQUIREMENT, TASK, False)},
    LINEAR: _DOWN_FROM_TASK | {(LINEAR, TASK, False)},
    SESSION: frozenset({(SESSION, TASK, True)}),
    PULL_REQUEST: _UP_TO_TASKS,
    DEPLOYMENT: _UP_TO_TASKS,
    CORRELATION: frozenset(),
}

_FORWARD = """
SELECT entity_kind AS from_kind, entity_id AS from_id, linked_kind AS to_kind, linked_id AS to_id, matched_by
FROM projections.correlations
WHERE (entity_kind, entity_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
_BACKWARD = """
SELECT linked_kind AS from_kind, linked_id AS from_id, entity_kind AS to_kind, entity_id AS to_id, matched_by
FROM projections.correlations
WHERE (linked_kind, linked_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
# Other names of the same commits (an abbreviated SHA and the full one: projections.same_commit).
_COMMIT_ALIASES = """
SELECT c.sha, a.alias FROM unnest($1::text[]) AS c(sha)
JOIN LATERAL (
    SELECT linked_id AS alias FROM projections.correlations
    WHERE linked_kind = 'commit' AND left(linked_id, 7) = left(c.sha, 7)
    UNION
    SELECT entity_id FROM projections.correlations
    WHERE entity_kind = 'commit' AND left(entity_id, 7) = left(c.sha, 7)
) a ON a.alias <> c.sha AND projections.same_commit(a.alias, c.sha)
"""
# Each arm can use an index of events: the references' partial indexes, and for the rare
# types (requirements, links, pull requests, commits, deployments, incidents) the index on
# (event_type, occurred_at) that leaves out the bulk types; their payload is then filtered.
_EVENTS = """
WITH matched AS (
    SELECT event_id, occurred_at FROM events WHERE task_id = ANY($1::text[])
    UNION SELECT event_id, occurred_at FROM events WHERE session_id = ANY($2::text[])
    UNION SELECT event_id, occurred_at FROM events
          WHERE event_type = ANY($11::text[]) AND requirement_id = ANY($3::text[])
    UNION SELECT event_id, occurred_at FROM events WHERE correlation_id = ANY($4::text[])
    UNION SELECT event_id, occurred_at FROM events
          WHERE event_type = ANY($12::text[])
            AND (payload->>'repository') || '#' || (payload->>'number') = ANY($5::text[])
    UNION SELECT event_id, occurred_at FROM events
          WHERE event_type = 'commit.pushed' AND payload->>'sha' = ANY($6::text[])
    UNION SELECT event_id, occurred_at FROM events
          WHERE event_type = ANY($13::text[]) AND payload->>'deployment_id' = ANY($7::text[])
    UNION SELECT event_id, occurred_at FROM events
          WHERE event_type = ANY($14::text[]) AND payload->>'incident_id' = ANY($8::text[])
    UNION SELECT event_id, occurred_at FROM events
          WHERE event_type = 'link.created' AND payload->>'external_id' = ANY($9::text[])
)
SELECT e.event_id, e.occurred_at, e.event_type, e.source, e.project_id, e.agent_id, e.session_id, e.task_id,
       e.requirement_id, e.correlation_id, e.attribution::text AS attribution, e.payload::text AS payload
FROM matched m JOIN events e USING (event_id, occurred_at)
ORDER BY e.occurred_at, e.event_id
LIMIT $10
"""


def _types_of(*families: Family) -> list[str]:
    """The event types of ``families``, from the catalog (new types join by themselves)."""
    return [str(cls.model_fields["event_type"].default) for cls in EVENT_CLASSES if cls.family in families]


_REQUIREMENT_TYPES = _types_of(Family.REQUIREMENT, Family.LINK)
_PR_TYPES = _types_of(Family.PR)
_DEPLOYMENT_TYPES = _types_of(Family.DEPLOYMENT)
_INCIDENT_TYPES = _types_of(Family.INCIDENT)


@dataclass(frozen=True)
class Entity:
    """An entity reached by the walk, and how: the links from the one asked for."""

    kind: str
    id: str
    path: tuple[str, ...]  # "task T-1", "-> pull_request acme/shop#7 (branch)", ...

    def how(self) -> str:
        return " ".join(self.path)


@dataclass(frozen=True)
class TimelineEvent:
    """One event of the timeline, and how it is linked to the entity asked for."""

    occurred_at: datetime
    event_id: str
    event_type: str
    source: str
    linked_by: str
    references: dict[str, str]
    attribution: dict[str, str] | None
    payload: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "occurred_at": self.occurred_at.isoformat(),
            "event_id": self.event_id,
            "event_type": self.event_type,
            "source": self.source,
            "linked_by": self.linked_by,
            "references": self.references,
            "attribution": self.attribution,
            "payload": self.payload,
        }


async def linked_entities(conn: asyncpg.Connection, kind: str, entity_id: str) -> list[Entity]:
    """The entity asked for and everything the walk from it reaches (see ``MOVES``)."""
    moves = MOVES[kind]
    root = Entity(kind, entity_id, (f"{kind} {entity_id}",))
    found = {(kind, entity_id): root}
    frontier = [root]
    for _ in range(MAX_DEPTH):
        if not frontier or len(found) >= MAX_ENTITIES:
            break
        by_key = {(e.kind, e.id): e for e in frontier}
        for sha, alias in await conn.fetch(_COMMIT_ALIASES, [e.id for e in frontier if e.kind == COMMIT]):
            by_key.setdefault((COMMIT, alias), by_key[(COMMIT, sha)])  # the same commit, abbreviated or not
        kinds, ids = [key[0] for key in by_key], [key[1] for key in by_key]
        reached: list[Entity] = []
        for query, along in ((_FORWARD, True), (_BACKWARD, False)):
            for link in await conn.fetch(query, kinds, ids):
                to = (link["to_kind"], link["to_id"])
                if (link["from_kind"], link["to_kind"], along) not in moves or to in found:
                    continue
                parent = by_key[(link["from_kind"], link["from_id"])]
                entity = Entity(*to, (*parent.path, f"-> {to[0]} {to[1]} ({link['matched_by']})"))
                found[to] = entity
                reached.append(entity)
        frontier = reached
    return list(found.values())


async def timeline(conn: asyncpg.Connection, kind: str, entity_id: str, limit: int = 10_000) -> list[TimelineEvent]:
    """The events of ``(kind, entity_id)`` and of the entities linked to it, oldest first.

    Args:
        conn: a connection to the devtrail database.
        kind: one of ``KINDS``' values.
        entity_id: the entity's id (a pull request as ``owner/repo#123``).
        limit: events at most.
    """
    entities = await linked_entities(conn, kind, entity_id)
    ids: dict[str, list[str]] = {k: [] for k in (*KINDS.values(), COMMIT, INCIDENT)}
    how: dict[tuple[str, str], str] = {}
    for entity in entities:
        ids.setdefault(entity.kind, []).append(entity.id)
        how[(entity.kind, entity.id)] = entity.how()
    rows = await conn.fetch(
        _EVENTS,
        ids[TASK], ids[SESSION], ids[REQUIREMENT], ids[CORRELATION], ids[PULL_REQUEST],
        ids[COMMIT], ids[DEPLOYMENT], ids[INCIDENT], ids[LINEAR], limit,
        _REQUIREMENT_TYPES, _PR_TYPES, _DEPLOYMENT_TYPES, _INCIDENT_TYPES,
    )  # fmt: skip
    return [_event(row, how) for row in rows]


def _event(row: asyncpg.Record, how: dict[tuple[str, str], str]) -> TimelineEvent:
    payload: dict[str, Any] = orjson.loads(row["payload"])
    candidates: Sequence[tuple[str, Any]] = (
        (CORRELATION, row["correlation_id"]),
        (SESSION, row["session_id"]),
        (REQUIREMENT, row["requirement_id"]),
        (TASK, row["task_id"]),
        (PULL_REQUEST, f"{payload.get('repository')}#{payload.get('number')}"),
        (COMMIT, payload.get("sha")),
        (DEPLOYMENT, payload.get("deployment_id")),
        (INCIDENT, payload.get("incident_id")),
        (LINEAR, payload.get("external_id")),
    )
    # The most specific match: the entity reached by the longest path is the closest to the event.
    matches = [how[c] for c in candidates if c in how]
    linked_by = max(matches, key=len) if matches else "?"
    references = {
        name: row[name]
        for name in ("project_id", "agent_id", "session_id", "task_id", "requirement_id", "correlation_id")
        if row[name] is not None
    }
    return TimelineEvent(
        occurred_at=row["occurred_at"],
        event_id=str(row["event_id"]),
        event_type=row["event_type"],
        source=row["source"],
        linked_by=linked_by,
        references=references,
        attribution=orjson.loads(row["attribution"]) if row["attribution"] is not None else None,
        payload=payload,
    )


def render(events: list[TimelineEvent], kind: str, entity_id: str) -> str:
    """The timeline as text: one line per event, then how it is linked."""
    if not events:
        return f"no events for {kind} {entity_id} (is the id right, and have the writers caught up?)"
    lines = [f"{len(events):,} events for {kind} {entity_id}, oldest first"]
    for event in events:
        refs = " ".join(f"{k.removesuffix('_id')}={v}" for k, v in event.references.items())
        filled = (
            f"  [filled: {', '.join(f'{k} by {v}' for k, v in event.attribution.items())}]" if event.attribution else ""
        )
        lines.append(f"{event.occurred_at.isoformat()}  {event.event_type:<24} {refs}{filled}")
        lines.append(f"    via {event.linked_by}")
    return "\n".join(lines)
