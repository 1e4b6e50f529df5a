"""Reading a batch of clean rows cheaply: typed events of a few types, spans and references.

Most rows are ``llm.called`` and ``tool.called``: a projection parses the payload only of the
event types it has a handler for (picked by ``row.event_type``, a string compare), and reads
every other row's envelope columns by position, without building anything per row.

Projections read events *as sent*: a reference that correlation filled in (named in the
row's ``attribution``) is not evidence of a link, only a consequence of links the
projections hold already; the ``analytics`` views derive it again at query time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

import orjson

from consumers.clean import EVENT_COLUMNS, CleanRow
from consumers.projections.merge import EventKey
from schemas.envelope import Envelope

PROJECT_ID, AGENT_ID = EVENT_COLUMNS.index("project_id"), EVENT_COLUMNS.index("agent_id")
SESSION_ID, TASK_ID = EVENT_COLUMNS.index("session_id"), EVENT_COLUMNS.index("task_id")
REQUIREMENT_ID = EVENT_COLUMNS.index("requirement_id")
#: The envelope's entity references, in this order, as ``row[REFERENCES]``.
REFERENCES = slice(PROJECT_ID, REQUIREMENT_ID + 1)
assert EVENT_COLUMNS[REFERENCES] == ("project_id", "agent_id", "session_id", "task_id", "requirement_id")

#: (project_id, agent_id, session_id, task_id, requirement_id) of one event.
References = tuple[str | None, str | None, str | None, str | None, str | None]

Out = TypeVar("Out")
Handler = Callable[[Any, EventKey, Out], None]


def key_of(row: CleanRow) -> EventKey:
    return EventKey(row.occurred_at, row.event_id)


@lru_cache(maxsize=4096)
def filled_in(attribution: str) -> frozenset[str]:
    """The reference fields an ``attribution`` says correlation filled in (few distinct texts: cached)."""
    try:
        matched = orjson.loads(attribution)
    except orjson.JSONDecodeError:
        return frozenset()
    return frozenset(matched) if isinstance(matched, dict) else frozenset()


def as_sent(row: CleanRow) -> CleanRow:
    """The row without the references correlation filled in."""
    if row.attribution is None:
        return row
    filled = filled_in(row.attribution)
    cleared: dict[str, Any] = {name: None for name in filled if name in REFERENCE_NAMES}
    return row._replace(**cleared) if cleared else row


REFERENCE_NAMES = frozenset(EVENT_COLUMNS[REFERENCES])


def event_type_of(cls: type[Envelope]) -> str:
    return str(cls.model_fields["event_type"].default)


class Dispatch(Generic[Out]):
    """Handlers by event class; ``apply`` parses only the rows of those classes.

    Args:
        handlers: event class -> ``handler(event, key, out)``, which adds the event's patches to ``out``.
    """

    def __init__(self, handlers: Mapping[type[Envelope], Handler[Out]]) -> None:
        self._by_type = {event_type_of(cls): handler for cls, handler in handlers.items()}
        self.event_types = frozenset(self._by_type)

    def apply(self, rows: Sequence[CleanRow], out: Out) -> int:
        """Run each handled row's handler on its typed event; return how many rows were handled.

        Raises:
            MalformedRowError: a handled row does not hold a valid event (refused data).
        """
        handled = 0
        by_type, wanted = self._by_type, self.event_types
        for row in rows:
            if row.event_type in wanted:
                by_type[row.event_type](as_sent(row).event(), key_of(row), out)
                handled += 1
        return handled


def spans(rows: Sequence[CleanRow], column: int) -> dict[Any, list[Any]]:
    """Per entity named in ``column`` (as sent): ``[first occurred_at, last occurred_at, events]``."""
    found: dict[Any, list[Any]] = {}
    name = EVENT_COLUMNS[column]
    for row in rows:
        entity = row[column]
        if entity is None or (row.attribution is not None and name in filled_in(row.attribution)):
            continue
        at = row.occurred_at
        span = found.get(entity)
        if span is None:
            found[entity] = [at, at, 1]
        else:
            if at < span[0]:
                span[0] = at
            elif at > span[1]:
                span[1] = at
            span[2] += 1
    return found


@dataclass
class ReferenceGroup:
    """The events of a batch that carry the same references: their least and greatest key."""

    first: EventKey
    last: EventKey
    events: int


def reference_groups(rows: Sequence[CleanRow]) -> dict[References, ReferenceGroup]:
    """The batch's rows grouped by their envelope references as sent (few groups: an agent in a session)."""
    groups: dict[References, ReferenceGroup] = {}
    for row in rows:
        references = row[5:10] if row.attribution is None else as_sent(row)[5:10]  # REFERENCES, for the type checker
        key = EventKey(row.occurred_at, row.event_id)
        group = groups.get(references)
        if group is None:
            groups[references] = ReferenceGroup(key, key, 1)
        else:
            if key < group.first:
                group.first = key
            elif key > group.last:
                group.last = key
            group.events += 1
    return groups
