"""Reading a batch of clean rows cheaply: typed events of a few types, spans and references.

Most rows are ``llm.called`` and ``tool.called``: a projection parses the payload only of the
event types it has a handler for (picked by ``row.event_type``, a string compare), and reads
every other row's envelope columns by position, without building anything per row.

Projections read events *as sent*: a reference that correlation filled in (named in the
row's ``attribution``) is not evidence of a link, only a consequence of links the
projections hold already; the ``analytics`` views derive it again at query time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

import orjson

from devtrail.consumers.clean import EVENT_COLUMNS, CleanRow
from devtrail.consumers.projections.merge import EventKey
from devtrail.schemas.envelope import Envelope

PROJECT_ID, AGENT_ID = EVENT_COLUMNS.index("project_id"), EVENT_COLUMNS.index("agent_id")
SESSION_ID, TASK_ID = EVENT_COLUMNS.index("session_id"), EVENT_COLUMNS.index("task_id")
REQUIREMENT_ID = EVENT_COLUMNS.index("requirement_id")
ATTRIBUTION = EVENT_COLUMNS.index("attribution")
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


REFERENCE_ORDER = EVENT_COLUMNS[REFERENCES]
REFERENCE_NAMES = frozenset(REFERENCE_ORDER)


def event_type_of(cls: type[Envelope]) -> str:
    return str(cls.model_fields["event_type"].default)


#: Event types some ``Dispatch`` handles: the rows a ``Digest`` parses.
PARSED_TYPES: set[str] = set()


class Dispatch(Generic[Out]):
    """Handlers by event class; ``apply`` runs them on the batch's events of those classes.

    Args:
        handlers: event class -> ``handler(event, key, out)``, which adds the event's patches to ``out``.
    """

    def __init__(self, handlers: Mapping[type[Envelope], Handler[Out]]) -> None:
        self._by_type = {event_type_of(cls): handler for cls, handler in handlers.items()}
        self.event_types = frozenset(self._by_type)
        PARSED_TYPES.update(self.event_types)

    def apply(self, rows: Sequence[CleanRow], out: Out) -> int:
        """Run each handled row's handler on its typed event; return how many rows were handled.

        Raises:
            MalformedRowError: a handled row does not hold a valid event (refused data).
        """
        handled = 0
        by_type, typed = self._by_type, digest(rows).typed
        for event_type, handler in by_type.items():
            for row in typed.get(event_type, ()):
                handler(as_sent(row).event(), key_of(row), out)
                handled += 1
        return handled


def spans(rows: Sequence[CleanRow], column: int) -> dict[Any, list[Any]]:
    """Per entity named in ``column`` (as sent): ``[first occurred_at, last occurred_at, events]``."""
    found: dict[Any, list[Any]] = {}
    position = column - PROJECT_ID
    for references, group in digest(rows).groups.items():
        entity = references[position]
        if entity is None:
            continue
        span = found.get(entity)
        if span is None:
            found[entity] = [group.first.at, group.last.at, group.events]
        else:
            if group.first.at < span[0]:
                span[0] = group.first.at
            if group.last.at > span[1]:
                span[1] = group.last.at
            span[2] += group.events
    return found


@dataclass
class ReferenceGroup:
    """The events of a batch that carry the same references: their least and greatest key."""

    first: EventKey
    last: EventKey
    events: int


def reference_groups(rows: Sequence[CleanRow]) -> dict[References, ReferenceGroup]:
    """The batch's rows grouped by their envelope references as sent (few groups: an agent in a session)."""
    return digest(rows).groups


@dataclass
class Digest:
    """What every projection reads of a batch, computed once for all of them.

    Attributes:
        groups: the rows grouped by their envelope references as sent.
        typed: per event type of ``PARSED_TYPES``, its rows (in the batch's order). Each
            ``Dispatch`` parses them itself: parsed events kept for the whole batch would
            cost more in garbage collection than parsing some twice does.
    """

    groups: dict[References, ReferenceGroup]
    typed: dict[str, list[CleanRow]]


def _digest(rows: Sequence[CleanRow]) -> Digest:
    # One pass, grouping by the references as stored and the attribution text (few distinct
    # pairs per batch); the references correlation filled in are cleared per pair, not per row.
    raw: dict[tuple[Any, ...], list[Any]] = {}
    typed: dict[str, list[CleanRow]] = {}
    parsed = PARSED_TYPES
    for row in rows:
        group_key = (row[5], row[6], row[7], row[8], row[9], row[ATTRIBUTION])  # REFERENCES, attribution
        key = (row.occurred_at, row.event_id)
        found = raw.get(group_key)
        if found is None:
            raw[group_key] = [key, key, 1]
        else:
            if key < found[0]:
                found[0] = key
            elif key > found[1]:
                found[1] = key
            found[2] += 1
        event_type = row.event_type
        if event_type in parsed:
            typed.setdefault(event_type, []).append(row)
    groups: dict[References, ReferenceGroup] = {}
    for group_key, (first, last, events) in raw.items():
        references: References = group_key[:5]
        attribution = group_key[-1]
        if attribution is not None:
            filled = filled_in(attribution)
            cleared = (None if n in filled else value for n, value in zip(REFERENCE_ORDER, references, strict=True))
            references = tuple(cleared)  # type: ignore[assignment]
        group = groups.get(references)
        if group is None:
            groups[references] = ReferenceGroup(EventKey(*first), EventKey(*last), events)
        else:
            if first < group.first:
                group.first = EventKey(*first)
            if last > group.last:
                group.last = EventKey(*last)
            group.events += events
    return Digest(groups, typed)


_digests: list[tuple[Sequence[CleanRow], int, Digest]] = []
_digests_lock = threading.Lock()


def digest(rows: Sequence[CleanRow]) -> Digest:
    """The batch's ``Digest``, computed once per batch for all projections (the last two are kept).

    Batches are recognised by identity: the writer host hands every writer the same list.
    """
    with _digests_lock:
        for seen, length, found in _digests:
            if seen is rows and length == len(rows):
                return found
    made = _digest(rows)
    with _digests_lock:
        _digests.insert(0, (rows, len(rows), made))
        del _digests[2:]
    return made
