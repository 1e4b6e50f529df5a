"""The public rules API: ``@rule`` and ``@every`` handlers, and what they are given.

A rule reacts to events of the classes it names (subclasses included), dispatched by class::

    from devtrail.rules import RuleContext, rule
    from devtrail.schemas.events import TaskCompleted

    @rule(TaskCompleted)
    async def close_requirement(event: TaskCompleted, ctx: RuleContext) -> None:
        ...

A periodic rule runs on a timer, with no event (``@every(60)``). Both receive a
``RuleContext``: the projections (read once they include the event), a state store of the
rule's own that survives restarts, ``emit`` for derived events, and the clock. What the
runtime guarantees is in ``devtrail.consumers.rules.engine`` and docs/rules.md.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from devtrail.schemas.envelope import Envelope

E = TypeVar("E", bound=Envelope)

#: A rule's name: letters, digits and ``_.-``; it keys the rule's state and derived ids.
RULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")


class RuleError(Exception):
    """A rule or a rules module is declared wrongly (raised when it is loaded)."""


@dataclass(frozen=True)
class Task:
    """A task as the projections hold it (``projections.tasks``)."""

    task_id: str
    title: str | None
    status: str | None
    status_at: datetime | None
    status_event_id: UUID | None
    project_id: str | None
    requirement_id: str | None
    parent_task_id: str | None
    agent_id: str | None
    assignee: str | None
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    completed_event_id: UUID | None
    failed_at: datetime | None
    cancelled_at: datetime | None
    cancelled_event_id: UUID | None
    first_seen: datetime | None
    last_seen: datetime | None

    @property
    def done(self) -> bool:
        """Completed or cancelled: nothing more is expected of it."""
        return self.status in ("completed", "cancelled")


@dataclass(frozen=True)
class Requirement:
    """A requirement as the projections hold it (``projections.requirements``)."""

    requirement_id: str
    title: str | None
    status: str | None
    project_id: str | None
    created_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True)
class Session:
    """A session as the projections hold it (``projections.sessions``)."""

    session_id: str
    project_id: str | None
    agent_id: str | None
    task_id: str | None
    requirement_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    cost_usd: float | None


@dataclass(frozen=True)
class Cost:
    """LLM calls attributed to a task, requirement or project, as the rules worker read them."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class State(Protocol):
    """A rule's own key/value store: JSON values, kept in PostgreSQL (``rules.state``).

    Writes take effect only if the handler returns: a handler that raises or times out
    leaves the store as it was. Reads see the handler's own writes.
    """

    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        ...

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (anything ``orjson`` encodes) under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``."""
        ...


class RuleContext(Protocol):
    """What a handler is given besides its event. See docs/rules.md for the guarantees."""

    @property
    def rule(self) -> str:
        """The running rule's name."""
        ...

    @property
    def state(self) -> State:
        """The rule's own state store."""
        ...

    def now(self) -> datetime:
        """The wall clock (UTC)."""
        ...

    async def task(self, task_id: str | None = None) -> Task | None:
        """The task (default: the event's ``task_id``), or ``None`` if unknown."""
        ...

    async def requirement(self, requirement_id: str | None = None) -> Requirement | None:
        """The requirement (default: the event's ``requirement_id``), or ``None``."""
        ...

    async def tasks_of_requirement(self, requirement_id: str | None = None) -> list[Task]:
        """Every task of the requirement (default: the event's), in no set order."""
        ...

    async def session(self, session_id: str | None = None) -> Session | None:
        """The session (default: the event's ``session_id``), or ``None``."""
        ...

    async def cost(
        self, *, task_id: str | None = None, requirement_id: str | None = None, project_id: str | None = None
    ) -> Cost:
        """LLM cost so far of one task, requirement or project (name exactly one)."""
        ...

    async def query(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        """Read anything else (the ``analytics`` views): rows as mappings. Read-only."""
        ...

    def emit(self, event: type[E] | E, /, *, key: str | None = None, **fields: Any) -> E:
        """Publish a derived event once this handler returns; return it as it will be sent.

        ``event`` is an event class with its ``fields`` (``payload`` and the references to
        set), or a built event. The runtime sets ``event_id`` and, unless given,
        ``causation_id`` (the cause's id), ``source``, ``occurred_at`` (the cause's) and the
        cause's correlation and references (give ``None`` to leave one out).

        ``key`` names the event for this rule whatever caused it: the same key is one event,
        emitted once for ever (its id derives from the rule, the key and ``occurred_at``).
        Without a key, the event is the n-th emit for this cause. A periodic rule, which has
        no cause, must give a key.
        """
        ...


Handler = Callable[[Any, RuleContext], Awaitable[None]]
#: The state keys a handler will read for an event (``@rule(..., state_key=...)``).
StateKeys = Callable[[Any], str | Iterable[str] | None]
PeriodicHandler = Callable[[RuleContext], Awaitable[None]]


@dataclass(frozen=True)
class Rule:
    """An event handler and the event classes it reacts to (made by ``@rule``)."""

    name: str
    handler: Handler
    event_classes: tuple[type[Envelope], ...]
    timeout_s: float | None = None
    state_keys: StateKeys | None = None
    module: str | None = None
    projections: bool = True

    def state_key(self, event: Any) -> list[str]:
        """The state keys declared for ``event`` (none if the rule declares none)."""
        if self.state_keys is None:
            return []
        keys = self.state_keys(event)
        if keys is None:
            return []
        return [keys] if isinstance(keys, str) else [str(k) for k in keys if k is not None]

    async def __call__(self, event: Any, ctx: RuleContext) -> None:
        """Call the handler (so a rule can be called directly in a test)."""
        await self.handler(event, ctx)

    def reacts_to(self, cls: type[Envelope]) -> bool:
        """Whether events of class ``cls`` go to this rule."""
        return issubclass(cls, self.event_classes)


@dataclass(frozen=True)
class PeriodicRule:
    """A handler run every ``interval_s`` seconds (made by ``@every``)."""

    name: str
    handler: PeriodicHandler
    interval_s: float
    timeout_s: float | None = None
    module: str | None = None

    async def __call__(self, ctx: RuleContext) -> None:
        """Call the handler."""
        await self.handler(ctx)


AnyRule = Rule | PeriodicRule


def _checked_name(name: str | None, func: Callable[..., Any]) -> str:
    chosen = name or func.__name__
    if not RULE_NAME.fullmatch(chosen):
        raise RuleError(f"rule name {chosen!r} must match {RULE_NAME.pattern}")
    if not inspect.iscoroutinefunction(func):
        raise RuleError(f"rule {chosen}: the handler must be an `async def` function")
    return chosen


def _checked_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
        raise RuleError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
    return timeout_s


def rule(
    *event_classes: type[Envelope],
    name: str | None = None,
    timeout_s: float | None = None,
    state_key: StateKeys | None = None,
    projections: bool = True,
) -> Callable[[Handler], Rule]:
    """Declare a handler of events of ``event_classes`` (and their subclasses).

    Args:
        name: the rule's name (default: the function's). It keys the rule's state and the
            ids of its derived events: renaming a rule starts it afresh.
        timeout_s: the handler's time limit (default: the ``rules_timeout_s`` setting).
        state_key: what the handler will ``ctx.state.get`` for an event (a key, keys or
            ``None``): the keys of a whole batch are then read in one statement instead of
            one per event. Optional; a key not declared is read when asked for.
        projections: whether the handler reads the projections (``ctx.task()``,
            ``ctx.query()``...). ``False`` lets its events run without waiting for the
            projection writers, a few hundred milliseconds sooner; such a handler must read
            only its state and ``ctx.cost()``, or it may see a state older than its event.
    """
    _checked_timeout(timeout_s)
    if not event_classes:
        raise RuleError("@rule needs at least one event class, e.g. @rule(TaskCompleted)")
    for cls in event_classes:
        if not (isinstance(cls, type) and issubclass(cls, Envelope)):
            raise RuleError(f"@rule takes event classes (from devtrail.schemas.events), got {cls!r}")

    def decorate(func: Handler) -> Rule:
        module = sys._getframe(1).f_globals.get("__name__")  # where the rule is made, not where func is
        return Rule(_checked_name(name, func), func, tuple(event_classes), timeout_s, state_key, module, projections)

    return decorate


def every(
    interval_s: float, *, name: str | None = None, timeout_s: float | None = None
) -> Callable[[PeriodicHandler], PeriodicRule]:
    """Declare a handler run every ``interval_s`` seconds (one worker at a time runs it)."""
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise RuleError(f"@every needs a positive number of seconds, got {interval_s}")
    _checked_timeout(timeout_s)

    def decorate(func: PeriodicHandler) -> PeriodicRule:
        module = sys._getframe(1).f_globals.get("__name__")
        return PeriodicRule(_checked_name(name, func), func, float(interval_s), timeout_s, module)

    return decorate


def rules_in(module: object) -> list[AnyRule]:
    """The rules a module defines at its top level, in definition order, and those it lists in ``RULES``.

    Rules it imports from elsewhere are not its own (the module that defines them is loaded
    for them): listing both modules runs each rule once.
    """
    own = getattr(module, "__name__", None)
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, (Rule, PeriodicRule)) and (value.module or value.handler.__module__) == own
    ]
    provided = getattr(module, "RULES", None)
    if isinstance(provided, Sequence):
        found += [value for value in provided if isinstance(value, (Rule, PeriodicRule)) and value not in found]
    return found
