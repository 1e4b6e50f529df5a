"""Running rules on a batch of clean events, in one PostgreSQL transaction.

Guarantees (docs/rules.md):

* **Each event reaches each rule's effects once.** The batch's offsets (``consumer_offsets``,
  the rules group) are locked, events below them skipped, and the rules' state writes, the
  derived events they emit (``rules.emitted``, an outbox) and the new offsets commit in one
  transaction. A crash before the commit leaves nothing; after it, the outbox is published
  (again, if need be) under the same event ids, which the processor's dedup and every
  store's keys absorb.
* **Derived ids are deterministic**: ``UUIDv7(cause time, hash(rule, cause, key))``. An id
  already in ``rules.emitted`` is not emitted again, so a rule that emits by ``key`` (the
  requirement rollup emits ``requirement.completed`` keyed by the requirement and its round)
  emits once whichever cause gets there first.
* **A failing rule costs only its own effects**: a handler that raises or passes its time
  limit has its state writes and emits dropped (its database reads ran in a savepoint) and
  the event is dead-lettered for that rule (``error_kind`` ``rule``); the other rules and
  the rest of the batch go on.
* **Chains are bounded**: an event's causation depth is read back from ``rules.emitted``;
  emitting past ``rules_max_depth`` fails the handler (dead-lettered as above).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from consumers import metrics
from consumers.clean import CleanRow, MalformedRowError, row_as_object
from consumers.deadletter import DeadLetter
from consumers.errors import is_retriable_db_error
from consumers.rules.api import (
    AnyRule,
    Cost,
    PeriodicRule,
    Requirement,
    Rule,
    RuleError,
    Session,
    Task,
)
from schemas.codec import encode_event
from schemas.envelope import Envelope
from schemas.events import EVENT_CLASSES
from schemas.ids import uuid7_from
from schemas.topics import TopicMap

log = logging.getLogger(__name__)

#: ``source`` of derived events: ``devtrail-rules:<rule>``.
SOURCE_PREFIX = "devtrail-rules:"
_REFERENCES = ("correlation_id", "project_id", "agent_id", "session_id", "task_id", "requirement_id")
_DELETED = object()
_TASK_COLUMNS = (
    "SELECT task_id, title, status, project_id, requirement_id, parent_task_id, agent_id, assignee, created_at, "
    "started_at, completed_at, completed_event_id, failed_at, cancelled_at, cancelled_event_id, first_seen, "
    "last_seen FROM projections.tasks "
)
_TASK_BY_ID = _TASK_COLUMNS + "WHERE task_id = $1"
_TASKS_BY_REQUIREMENT = _TASK_COLUMNS + "WHERE requirement_id = $1"


class CausationDepthError(RuleError):
    """A rule emitted past ``rules_max_depth``: a chain of rules that may not end."""


@dataclass(frozen=True)
class Emitted:
    """A row of ``rules.emitted``: a derived event or a rule dead letter, to publish."""

    event_id: uuid.UUID
    rule: str
    kind: str
    event_type: str | None
    cause_id: uuid.UUID | None
    depth: int
    topic: str
    key: bytes | None
    value: bytes


@dataclass
class Message:
    """One clean-topic message: where it was read and its rows."""

    partition: int
    offset: int
    rows: Sequence[CleanRow]


@dataclass
class BatchResult:
    """What a batch did: the rows to publish, and counts for metrics and logs."""

    emitted: list[Emitted] = field(default_factory=list)
    skipped_messages: int = 0
    invocations: int = 0
    failures: int = 0


def derived_id(rule: str, cause_id: str | None, key: str, when: datetime) -> uuid.UUID:
    """The id of an event ``rule`` derives: a UUIDv7 of ``when`` whose other bits hash the rest.

    ``key`` given to ``emit`` names the event for the rule whatever its cause (``cause_id``
    is then ``None``); without one, the event is the emit's rank among its cause's.
    """
    digest = hashlib.sha256(f"{rule}\0{cause_id or ''}\0{key}".encode()).digest()
    return uuid7_from(int(when.timestamp() * 1000), int.from_bytes(digest[:10], "big"))


class BatchState:
    """The rules' state as this transaction sees it: read once per key, written at the end."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}
        self.dirty: set[tuple[str, str]] = set()

    async def read(self, conn: asyncpg.Connection, rule: str, key: str) -> Any:
        """The value of ``(rule, key)``, locked for this transaction (other workers wait)."""
        slot = (rule, key)
        if slot not in self.values:
            text = await conn.fetchval(
                "SELECT value::text FROM (SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(1) || $2, 7))) l "
                "LEFT JOIN rules.state ON rule = $1 AND key = $2",
                rule,
                key,
            )
            self.values[slot] = _DELETED if text is None else orjson.loads(text)
        return self.values[slot]

    def write(self, updates: Mapping[tuple[str, str], Any]) -> None:
        """Take the writes of a handler that returned."""
        self.values.update(updates)
        self.dirty.update(updates)

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Store the written keys."""
        upserts = [(r, k, orjson.dumps(self.values[(r, k)]).decode()) for r, k in self.dirty]
        upserts = [
            (r, k, v) for (r, k, v), slot in zip(upserts, self.dirty, strict=True) if self.values[slot] is not _DELETED
        ]
        deletes = [slot for slot in self.dirty if self.values[slot] is _DELETED]
        if upserts:
            await conn.execute(
                "INSERT INTO rules.state (rule, key, value) "
                "SELECT r, k, v::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS u(r, k, v) "
                "ON CONFLICT (rule, key) DO UPDATE SET value = excluded.value, updated_at = now()",
                [u[0] for u in upserts],
                [u[1] for u in upserts],
                [u[2] for u in upserts],
            )
        if deletes:
            await conn.execute(
                "DELETE FROM rules.state s USING unnest($1::text[], $2::text[]) AS d(r, k) "
                "WHERE s.rule = d.r AND s.key = d.k",
                [d[0] for d in deletes],
                [d[1] for d in deletes],
            )
        self.dirty.clear()


class _State:
    """``RuleContext.state`` of one invocation: its writes wait for the handler to return."""

    def __init__(self, invocation: Invocation) -> None:
        self._invocation = invocation
        self.writes: dict[tuple[str, str], Any] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        slot = (self._invocation.rule, str(key))
        if slot in self.writes:
            value = self.writes[slot]
        else:
            conn = await self._invocation.connection()
            value = await self._invocation.batch_state.read(conn, *slot)
        return default if value is _DELETED else value

    def set(self, key: str, value: Any) -> None:
        orjson.dumps(value)  # refuse what cannot be stored now, in the handler that wrote it
        self.writes[(self._invocation.rule, str(key))] = value

    def delete(self, key: str) -> None:
        self.writes[(self._invocation.rule, str(key))] = _DELETED


class Invocation:
    """The ``RuleContext`` of one handler call on one event (or one periodic run)."""

    def __init__(
        self,
        engine: RulesEngine,
        conn: asyncpg.Connection,
        rule: str,
        batch_state: BatchState,
        cause: Envelope | None = None,
        depth: int = 0,
        costs: CostBook | None = None,
    ) -> None:
        self._engine = engine
        self._conn = conn
        self._rule = rule
        self.batch_state = batch_state
        self.cause = cause
        self.depth = depth
        self._costs = costs
        self.emitted: list[Emitted] = []
        self._state = _State(self)
        self._savepoint: Any = None
        self._keys: set[str] = set()

    @property
    def rule(self) -> str:
        return self._rule

    @property
    def state(self) -> _State:
        return self._state

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def connection(self) -> asyncpg.Connection:
        """The batch's connection, inside a savepoint of this invocation (opened on first use)."""
        if self._savepoint is None:
            self._savepoint = self._conn.transaction()
            await self._savepoint.start()
        return self._conn

    async def finish(self, succeeded: bool) -> None:
        """Release or roll back this invocation's savepoint; keep its writes if it succeeded."""
        if self._savepoint is not None:
            if succeeded:
                await self._savepoint.commit()
            else:
                await self._savepoint.rollback()
        if succeeded:
            self.batch_state.write(self._state.writes)

    def _default(self, name: str, given: str | None) -> str | None:
        if given is not None:
            return given
        return getattr(self.cause, name, None) if self.cause is not None else None

    async def task(self, task_id: str | None = None) -> Task | None:
        wanted = self._default("task_id", task_id)
        if wanted is None:
            return None
        row = await (await self.connection()).fetchrow(_TASK_BY_ID, wanted)
        return Task(**dict(row)) if row is not None else None

    async def requirement(self, requirement_id: str | None = None) -> Requirement | None:
        wanted = self._default("requirement_id", requirement_id)
        if wanted is None:
            return None
        row = await (await self.connection()).fetchrow(
            "SELECT requirement_id, title, status, project_id, created_at, completed_at "
            "FROM projections.requirements WHERE requirement_id = $1",
            wanted,
        )
        return Requirement(**dict(row)) if row is not None else None

    async def tasks_of_requirement(self, requirement_id: str | None = None) -> list[Task]:
        wanted = self._default("requirement_id", requirement_id)
        if wanted is None:
            return []
        rows = await (await self.connection()).fetch(_TASKS_BY_REQUIREMENT, wanted)
        return [Task(**dict(row)) for row in rows]

    async def session(self, session_id: str | None = None) -> Session | None:
        wanted = self._default("session_id", session_id)
        if wanted is None:
            return None
        row = await (await self.connection()).fetchrow(
            "SELECT session_id, project_id, agent_id, task_id, requirement_id, started_at, ended_at, cost_usd "
            "FROM projections.sessions WHERE session_id = $1",
            wanted,
        )
        return Session(**dict(row)) if row is not None else None

    async def cost(
        self, *, task_id: str | None = None, requirement_id: str | None = None, project_id: str | None = None
    ) -> Cost:
        named = [
            (scope, value)
            for scope, value in (("task", task_id), ("requirement", requirement_id), ("project", project_id))
            if value is not None
        ]
        if len(named) != 1:
            raise RuleError("ctx.cost takes exactly one of task_id, requirement_id, project_id")
        scope, wanted = named[0]
        running = self._costs.get(scope, wanted) if self._costs is not None else None
        if running is not None:
            return Cost(int(running[0]), int(running[1]), int(running[2]), float(running[3]))
        row = await (await self.connection()).fetchrow(
            "SELECT calls, input_tokens, output_tokens, cost_usd FROM rules.llm_cost WHERE scope = $1 AND id = $2",
            scope,
            wanted,
        )
        return Cost(**dict(row)) if row is not None else Cost()

    async def query(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        conn = await self.connection()
        async with conn.transaction():  # a savepoint: a failing query fails only this handler
            rows = await conn.fetch(sql, *args)
        return [dict(row) for row in rows]

    def emit(self, event: Any, /, *, key: str | None = None, **fields: Any) -> Any:
        depth = self.depth + 1
        limit = self._engine.max_depth
        if depth > limit:
            raise CausationDepthError(
                f"emitting would make a chain of {depth} derived events (rules_max_depth is {limit}): "
                "two rules may be feeding each other"
            )
        if self.cause is None and key is None:
            raise RuleError(f"rule {self._rule}: a periodic rule must emit with key=... (what makes it unique)")
        cause_id = str(self.cause.event_id) if self.cause is not None and key is None else None
        rank = key if key is not None else f"#{len(self.emitted)}"
        if isinstance(event, Envelope):
            built: Envelope = event
            when = built.occurred_at
            event_id = derived_id(self._rule, cause_id, rank, when)
            update: dict[str, Any] = {"event_id": event_id}
            if self.cause is not None and built.causation_id is None:
                update["causation_id"] = self.cause.event_id
            built = built.model_copy(update=update)
        elif isinstance(event, type) and issubclass(event, Envelope):
            values = dict(fields)
            values.setdefault("source", (SOURCE_PREFIX + self._rule)[:200])
            if self.cause is not None:
                values.setdefault("occurred_at", self.cause.occurred_at)
                for name in _REFERENCES:
                    if name not in values and getattr(self.cause, name, None) is not None:
                        values[name] = getattr(self.cause, name)
                values.setdefault("causation_id", self.cause.event_id)
            else:
                values.setdefault("occurred_at", self.now())
            probe = event(**values)  # validates: a bad derived event fails the handler here
            event_id = derived_id(self._rule, cause_id, rank, probe.occurred_at)
            built = probe.model_copy(update={"event_id": event_id})
        else:
            raise RuleError(f"ctx.emit takes an event class or an event, got {event!r}")
        if any(e.event_id == event_id for e in self.emitted):
            return built
        self.emitted.append(
            Emitted(
                event_id=event_id,
                rule=self._rule,
                kind="event",
                event_type=str(getattr(built, "event_type", "")),
                cause_id=built.causation_id,
                depth=depth,
                topic=self._engine.topics.input_topic(type(built).family),
                key=built.partition_key(),
                value=encode_event(built),
            )
        )
        return built


class RulesEngine:
    """Dispatches events to rules and runs them inside the caller's transaction.

    Args:
        rules: event rules and periodic rules (names unique).
        topics: where derived events (input topics) and dead letters go.
        group: the consumer group whose offsets guard the batches.
        clean_topic: the topic the events are read from.
        timeout_s: default time limit of a handler.
        max_depth: longest chain of derived events.
    """

    def __init__(
        self,
        rules: Sequence[AnyRule],
        topics: TopicMap,
        group: str,
        timeout_s: float = 5.0,
        max_depth: int = 4,
    ) -> None:
        names = [r.name for r in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RuleError(f"rule names must be unique; loaded twice: {', '.join(duplicates)}")
        self.rules = tuple(rules)
        self.event_rules = tuple(r for r in rules if isinstance(r, Rule))
        self.periodic_rules = tuple(r for r in rules if isinstance(r, PeriodicRule))
        self.topics = topics
        self.group = group
        self.clean_topic = topics.clean
        self.timeout_s = timeout_s
        self.max_depth = max_depth
        self.dispatch: dict[str, tuple[Rule, ...]] = {}
        for cls in EVENT_CLASSES:
            chosen = tuple(r for r in self.event_rules if r.reacts_to(cls))
            if chosen:
                self.dispatch[str(cls.model_fields["event_type"].default)] = chosen

    def wants(self, rows: Iterable[CleanRow]) -> bool:
        """Whether any of ``rows`` goes to a rule."""
        return any(row.event_type in self.dispatch for row in rows)

    async def apply(self, conn: asyncpg.Connection, messages: Sequence[Message]) -> BatchResult:
        """Run the rules of ``messages`` in one transaction; return what it emitted (committed)."""
        result = BatchResult()
        async with conn.transaction():
            partitions = sorted({m.partition for m in messages})
            stored = await self._lock_offsets(conn, partitions)
            fresh = [m for m in messages if m.offset >= stored.get(m.partition, 0)]
            result.skipped_messages = len(messages) - len(fresh)
            if not fresh:
                return result
            costs = CostBook()
            await costs.load(conn, [row for m in fresh for row in m.rows])
            depths = await self._depths(conn, fresh)
            state = BatchState()
            for message in fresh:
                for index, row in enumerate(message.rows):
                    costs.add(row)
                    chosen = self.dispatch.get(row.event_type)
                    if chosen:
                        await self._run_event(conn, state, costs, message, index, row, chosen, depths, result)
            await state.flush(conn)
            await costs.flush(conn)
            await _insert_emitted(conn, result.emitted)
            ends: dict[int, int] = defaultdict(int)
            for m in fresh:
                ends[m.partition] = max(ends[m.partition], m.offset + 1)
            await conn.execute(
                "UPDATE consumer_offsets SET next_offset = n, updated_at = now() FROM unnest($3::int[], $4::bigint[]) "
                "AS u(p, n) WHERE consumer_group = $1 AND topic = $2 AND partition = u.p",
                self.group,
                self.clean_topic,
                list(ends),
                list(ends.values()),
            )
        return result

    async def run_periodic(self, conn: asyncpg.Connection, periodic: PeriodicRule) -> list[Emitted] | None:
        """Run ``periodic`` once, alone across workers; ``None`` if another worker is running it."""
        async with conn.transaction():
            locked = await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 11))", periodic.name)
            if not locked:
                return None
            state = BatchState()
            invocation = Invocation(self, conn, periodic.name, state)
            started = time.perf_counter()
            try:
                await asyncio.wait_for(periodic.handler(invocation), periodic.timeout_s or self.timeout_s)
            except Exception as exc:
                if _database_away(exc, conn):
                    raise
                await invocation.finish(False)
                metrics.RULE_FAILURES.labels(periodic.name).inc()
                log.exception(
                    "rules: periodic rule %s failed; it runs again in %.0fs", periodic.name, periodic.interval_s
                )
                return []
            finally:
                metrics.RULE_SECONDS.labels(periodic.name).observe(time.perf_counter() - started)
            await invocation.finish(True)
            await state.flush(conn)
            emitted = _unique(invocation.emitted)
            await _insert_emitted(conn, emitted)
            return emitted

    async def _run_event(
        self,
        conn: asyncpg.Connection,
        state: BatchState,
        costs: CostBook,
        message: Message,
        index: int,
        row: CleanRow,
        chosen: tuple[Rule, ...],
        depths: Mapping[str, int],
        result: BatchResult,
    ) -> None:
        try:
            event = row.event()
        except MalformedRowError:
            log.warning(
                "rules: clean row %s at %d/%d is not an event; skipped", row.event_id, message.partition, message.offset
            )
            return
        depth = depths.get(row.event_id, 0)
        for chosen_rule in chosen:
            invocation = Invocation(self, conn, chosen_rule.name, state, event, depth, costs)
            result.invocations += 1
            started = time.perf_counter()
            try:
                await asyncio.wait_for(chosen_rule.handler(event, invocation), chosen_rule.timeout_s or self.timeout_s)
            except Exception as exc:
                if _database_away(exc, conn):
                    raise  # not the rule's fault: the batch is tried again once the database is back
                await invocation.finish(False)
                result.failures += 1
                metrics.RULE_FAILURES.labels(chosen_rule.name).inc()
                result.emitted.append(self._dead_letter(chosen_rule, exc, message, index, row, depth))
                log.warning(
                    "rules: %s failed on %s %s: %s",
                    chosen_rule.name,
                    row.event_type,
                    row.event_id,
                    _reason(chosen_rule, exc),
                )
                continue
            finally:
                metrics.RULE_SECONDS.labels(chosen_rule.name).observe(time.perf_counter() - started)
            await invocation.finish(True)
            result.emitted.extend(
                e for e in invocation.emitted if all(e.event_id != o.event_id for o in result.emitted)
            )

    def _dead_letter(
        self, failed: Rule, exc: BaseException, message: Message, index: int, row: CleanRow, depth: int
    ) -> Emitted:
        letter = DeadLetter(
            error_kind="rule",
            error=_reason(failed, exc),
            source_topic=self.clean_topic,
            source_partition=message.partition,
            source_offset=message.offset,
            original=orjson.dumps(row_as_object(list(row))),
            event_index=index,
            errors=[{"loc": ["rule"], "msg": failed.name, "type": type(exc).__name__}],
            errors_total=1,
            event_id=row.event_id,
            event_type=row.event_type,
        )
        return Emitted(
            event_id=derived_id(failed.name, row.event_id, "dead-letter", row.occurred_at),
            rule=failed.name,
            kind="dead_letter",
            event_type=None,
            cause_id=uuid.UUID(row.event_id),
            depth=depth,
            topic=self.topics.dead_letters,
            key=f"{self.clean_topic}:{message.partition}".encode(),
            value=letter.to_json(),
        )

    async def _lock_offsets(self, conn: asyncpg.Connection, partitions: list[int]) -> dict[int, int]:
        await conn.execute(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) "
            "SELECT $1, $2, p, 0 FROM unnest($3::int[]) AS p ON CONFLICT DO NOTHING",
            self.group,
            self.clean_topic,
            partitions,
        )
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 "
            "AND partition = ANY($3::int[]) ORDER BY partition FOR UPDATE",
            self.group,
            self.clean_topic,
            partitions,
        )
        return {row["partition"]: row["next_offset"] for row in rows}

    async def _depths(self, conn: asyncpg.Connection, messages: Sequence[Message]) -> dict[str, int]:
        derived = [
            row.event_id
            for m in messages
            for row in m.rows
            if row.source.startswith(SOURCE_PREFIX) and row.event_type in self.dispatch
        ]
        if not derived:
            return {}
        rows = await conn.fetch(
            "SELECT event_id::text AS id, depth FROM rules.emitted WHERE event_id = ANY($1::uuid[])", derived
        )
        found = {row["id"]: row["depth"] for row in rows}
        # Published longer ago than the retention: its chain is unknown, so it ends here.
        return {event_id: found.get(event_id, self.max_depth) for event_id in derived}


def _database_away(exc: BaseException, conn: asyncpg.Connection) -> bool:
    """Whether a handler failed because the database went away (or a deadlock), not by its own fault."""
    if conn.is_closed():
        return True
    return not isinstance(exc, TimeoutError) and is_retriable_db_error(exc)


def _reason(failed: Rule, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"rule {failed.name} did not finish within its time limit"
    return f"rule {failed.name} raised {type(exc).__name__}: {exc}"


def _unique(emitted: Sequence[Emitted]) -> list[Emitted]:
    return list({e.event_id: e for e in emitted}.values())


async def _insert_emitted(conn: asyncpg.Connection, emitted: list[Emitted]) -> None:
    """Insert the rows; drop from ``emitted`` those already there (emitted by an earlier batch)."""
    if not emitted:
        return
    inserted = await conn.fetch(
        "INSERT INTO rules.emitted (event_id, rule, kind, event_type, cause_id, depth, topic, key, value) "
        "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::smallint[], "
        "$7::text[], $8::bytea[], $9::bytea[]) ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        [e.event_id for e in emitted],
        [e.rule for e in emitted],
        [e.kind for e in emitted],
        [e.event_type for e in emitted],
        [e.cause_id for e in emitted],
        [e.depth for e in emitted],
        [e.topic for e in emitted],
        [e.key for e in emitted],
        [e.value for e in emitted],
    )
    new = {row["event_id"] for row in inserted}
    emitted[:] = [e for e in emitted if e.event_id in new]


def _scoped(row: CleanRow) -> list[tuple[str, str]]:
    """The (scope, id) keys of ``rules.llm_cost`` a row counts towards."""
    named = (("task", row.task_id), ("requirement", row.requirement_id), ("project", row.project_id))
    return [(scope, value) for scope, value in named if value is not None]


class CostBook:
    """``rules.llm_cost`` for the keys of one batch, added to event by event.

    A rule reacting to an ``llm.called`` sees the cost up to and including that call, not
    the calls after it in the same batch.
    """

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], list[float]] = {}
        self.dirty: set[tuple[str, str]] = set()
        self._figures: dict[str, tuple[int, int, int, float]] = {}

    async def load(self, conn: asyncpg.Connection, rows: Sequence[CleanRow]) -> None:
        """Read (and lock) the totals of every task, requirement and project ``rows`` name."""
        keys: set[tuple[str, str]] = set()
        for row in rows:
            figures = _figures(row)
            if figures is None:
                continue
            self._figures[row.event_id] = figures
            keys.update(_scoped(row))
        if not keys:
            return
        found = await conn.fetch(
            "SELECT scope, id, calls, input_tokens, output_tokens, cost_usd FROM rules.llm_cost "
            "WHERE (scope, id) IN (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY scope, id FOR UPDATE",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        for key in keys:
            self.totals[key] = [0, 0, 0, 0.0]
        for r in found:
            self.totals[(r["scope"], r["id"])] = [r["calls"], r["input_tokens"], r["output_tokens"], r["cost_usd"]]

    def add(self, row: CleanRow) -> None:
        """Count one ``llm.called`` (before its rules run)."""
        figures = self._figures.get(row.event_id)
        if figures is None:
            return
        for key in _scoped(row):
            total = self.totals[key]
            for i, figure in enumerate(figures):
                total[i] += figure
            self.dirty.add(key)

    def get(self, scope: str, entity: str) -> list[float] | None:
        """The batch's running total, if the batch touches that key."""
        return self.totals.get((scope, entity))

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Store the totals the batch changed."""
        keys = sorted(self.dirty)
        if not keys:
            return
        await conn.execute(
            "INSERT INTO rules.llm_cost AS c (scope, id, calls, input_tokens, output_tokens, cost_usd) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::float8[]) "
            "ON CONFLICT (scope, id) DO UPDATE SET calls = excluded.calls, input_tokens = excluded.input_tokens, "
            "output_tokens = excluded.output_tokens, cost_usd = excluded.cost_usd",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [int(self.totals[k][0]) for k in keys],
            [int(self.totals[k][1]) for k in keys],
            [int(self.totals[k][2]) for k in keys],
            [float(self.totals[k][3]) for k in keys],
        )


def _figures(row: CleanRow) -> tuple[int, int, int, float] | None:
    if row.event_type != "llm.called":
        return None
    try:
        payload = orjson.loads(row.payload)
        return (
            1,
            int(payload.get("input_tokens", 0)),
            int(payload.get("output_tokens", 0)),
            float(payload.get("cost_usd", 0.0)),
        )
    except (ValueError, TypeError, AttributeError):
        return None
