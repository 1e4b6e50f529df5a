"""Running rules on a batch of clean events, in one PostgreSQL transaction.

Guarantees (docs/rules.md):

* **Each event reaches each rule's effects once.** The batch's offsets (``consumer_offsets``,
  the rules group) are locked, events below them skipped, and the rules' state writes, the
  derived events they emit (``rules.emitted``, an outbox) and the new offsets commit in one
  transaction. A crash before the commit leaves nothing; after it, the outbox is published
  (again, if need be) under the same event ids, which the processor's dedup and every
  store's keys absorb.
* **Derived ids are deterministic**: a UUIDv7 of the event's time whose other bits hash the
  rule and the emit's ``key`` (or the cause and the emit's rank). A keyed emit is recorded
  as ``(rule, emit_key)`` in ``rules.emitted``, unique: the same key is one event whichever
  cause gets there first (while the row is kept: ``rules_emitted_retention_days``).
* **A failing rule costs only its own effects**: a handler that raises or passes its time
  limit has its state writes and emits dropped and the event is dead-lettered for that rule
  (``error_kind`` ``rule``); the other rules and the rest of the batch go on.
* **Chains are bounded**: an event's causation depth is read back from ``rules.emitted``;
  emitting past ``rules_max_depth`` fails the handler (dead-lettered as above).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import types
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Coroutine, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from devtrail.consumers import metrics
from devtrail.consumers.clean import CleanRow, MalformedRowError, row_as_object
from devtrail.consumers.deadletter import DeadLetter
from devtrail.consumers.errors import is_retriable_db_error
from devtrail.consumers.rules.api import AnyRule, PeriodicRule, Rule, RuleError
from devtrail.consumers.rules.context import Batch, Invocation
from devtrail.schemas.codec import encode_event
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import EVENT_CLASSES
from devtrail.schemas.ids import uuid7_from
from devtrail.schemas.topics import TopicMap

log = logging.getLogger(__name__)

#: ``source`` of derived events: ``devtrail-rules:<rule>``.
SOURCE_PREFIX = "devtrail-rules:"
_REFERENCES = ("correlation_id", "project_id", "agent_id", "session_id", "task_id", "requirement_id")


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
    emit_key: str | None = None


@dataclass
class Message:
    """One clean-topic message: where it was read, and the rows of it the rules read.

    ``indices`` are the rows' positions in the message (dead letters name them); rows of
    types nothing reads are left out (``RulesEngine.reads``). By default, every row.
    """

    partition: int
    offset: int
    rows: Sequence[CleanRow]
    indices: Sequence[int] | None = None

    def positioned(self) -> Iterable[tuple[int, CleanRow]]:
        """(position in the message, row) of each row."""
        return zip(self.indices, self.rows, strict=True) if self.indices is not None else enumerate(self.rows)


@dataclass
class BatchResult:
    """What a batch did: the rows to publish, and counts for metrics and logs."""

    emitted: list[Emitted] = field(default_factory=list)
    skipped_messages: int = 0
    invocations: int = 0
    failures: int = 0
    #: Handler seconds per rule (counted once per batch: a metric update per call costs more
    #: than many handlers).
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))


def derived_id(rule: str, cause_id: str | None, key: str, when: datetime) -> uuid.UUID:
    """The id of an event ``rule`` derives: a UUIDv7 of ``when`` whose other bits hash the rest.

    ``key`` given to ``emit`` names the event for the rule whatever its cause (``cause_id``
    is then ``None``); without one, the event is the emit's rank among its cause's.
    """
    digest = hashlib.sha256(f"{rule}\0{cause_id or ''}\0{key}".encode()).digest()
    return uuid7_from(int(when.timestamp() * 1000), int.from_bytes(digest[:10], "big"))


class Emitter:
    """Builds derived events for ``Invocation.emit``: defaults from the cause, ids, depth."""

    def __init__(self, topics: TopicMap, max_depth: int) -> None:
        self.topics = topics
        self.max_depth = max_depth

    def emit(self, call: Invocation, event: Any, key: str | None, fields: dict[str, Any]) -> Any:
        depth = call.depth + 1
        if depth > self.max_depth:
            raise CausationDepthError(
                f"emitting would make a chain of {depth} derived events (rules_max_depth is {self.max_depth}): "
                "two rules may be feeding each other"
            )
        cause = call.cause
        if cause is None and key is None:
            raise RuleError(f"rule {call.rule}: a periodic rule must emit with key=... (what makes it unique)")
        if key is not None and any(e.emit_key == key for e in call.emitted):
            return next(e.built for e in call.emitted if e.emit_key == key)
        built = self._build(call, event, fields)
        cause_id = str(cause.event_id) if cause is not None and key is None else None
        rank = key if key is not None else f"#{len(call.emitted)}"
        built = built.model_copy(update={"event_id": derived_id(call.rule, cause_id, rank, built.occurred_at)})
        call.emitted.append(
            _Pending(
                built,
                Emitted(
                    event_id=built.event_id,
                    rule=call.rule,
                    kind="event",
                    event_type=str(getattr(built, "event_type", "")),
                    cause_id=built.causation_id,
                    depth=depth,
                    topic=self.topics.input_topic(type(built).family),
                    key=built.partition_key(),
                    value=encode_event(built),
                    emit_key=key,
                ),
            )
        )
        return built

    def _build(self, call: Invocation, event: Any, fields: dict[str, Any]) -> Envelope:
        cause = call.cause
        if isinstance(event, Envelope):
            if fields:
                raise RuleError(f"ctx.emit got an event and fields {sorted(fields)}: set them on the event")
            given = event.model_fields_set
            update: dict[str, Any] = {}
            if cause is not None:
                if "occurred_at" not in given:
                    update["occurred_at"] = cause.occurred_at
                if "causation_id" not in given:
                    update["causation_id"] = cause.event_id
                for name in _REFERENCES:
                    if name not in given and getattr(cause, name, None) is not None:
                        update[name] = getattr(cause, name)
            return event.model_copy(update=update)
        if isinstance(event, type) and issubclass(event, Envelope):
            values = dict(fields)
            values.setdefault("source", (SOURCE_PREFIX + call.rule)[:200])
            if cause is not None:
                values.setdefault("occurred_at", cause.occurred_at)
                values.setdefault("causation_id", cause.event_id)
                for name in _REFERENCES:
                    if name not in values and getattr(cause, name, None) is not None:
                        values[name] = getattr(cause, name)
            else:
                values.setdefault("occurred_at", call.now())
            return event(**values)  # validates: a bad derived event fails the handler here
        raise RuleError(f"ctx.emit takes an event class or an event, got {event!r}")


@dataclass(frozen=True)
class _Pending:
    """An emit of a running handler: the event as built, and its outbox row."""

    built: Any
    row: Emitted

    @property
    def emit_key(self) -> str | None:
        return self.row.emit_key


class RulesEngine:
    """Dispatches events to rules and runs them inside the caller's transaction.

    Args:
        rules: event rules and periodic rules (names unique).
        topics: where derived events (input topics) and dead letters go.
        group: the consumer group whose offsets guard the batches.
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
        self.emitter = Emitter(topics, max_depth)
        self.dispatch: dict[str, tuple[Rule, ...]] = {}
        for cls in EVENT_CLASSES:
            chosen = tuple(r for r in self.event_rules if r.reacts_to(cls))
            if chosen:
                self.dispatch[str(cls.model_fields["event_type"].default)] = chosen
        #: Event types that go to a rule reading the projections.
        self.reading = {name for name, chosen in self.dispatch.items() if any(r.projections for r in chosen)}

    def reads(self, event_type: str) -> bool:
        """Whether rows of ``event_type`` matter to the rules (a rule's, or an ``llm.called`` for the costs)."""
        return event_type in self.dispatch or event_type == "llm.called"

    def wants(self, rows: Iterable[CleanRow]) -> bool:
        """Whether any of ``rows`` goes to a rule that reads the projections (so must wait for them)."""
        return any(row.event_type in self.reading for row in rows)

    async def apply(self, conn: asyncpg.Connection, messages: Sequence[Message]) -> BatchResult:
        """Run the rules of ``messages`` in one transaction; return what it emitted (committed)."""
        result = BatchResult()
        async with conn.transaction():
            # One batch of the group at a time, whichever worker runs it: rules' state is shared
            # across partitions (a requirement's tasks are spread out), and a lock per key ran
            # out of PostgreSQL's lock table on large batches (``max_locks_per_transaction``).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 13))", self.group)
            partitions = sorted({m.partition for m in messages})
            stored = await self._lock_offsets(conn, partitions)
            fresh = [m for m in messages if m.offset >= stored.get(m.partition, 0)]
            result.skipped_messages = len(messages) - len(fresh)
            if not fresh:
                return result
            work = self._parsed(fresh)
            batch = Batch(conn, [row for _, _, row, _ in work])
            await batch.costs.load(conn, [row for m in fresh for row in m.rows])
            depths = await self._depths(conn, [row for _, _, row, _ in work])
            await self._load_declared_state(batch, work)
            pending = iter(work)
            upcoming = next(pending, None)
            for message in fresh:
                for index, row in message.positioned():
                    batch.costs.add(row)
                    if upcoming is not None and upcoming[2] is row:
                        await self._run_event(batch, message, index, row, upcoming[3], depths, result)
                        upcoming = next(pending, None)
            await batch.state.flush(conn)
            await batch.costs.flush(conn)
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

    def _parsed(self, messages: Sequence[Message]) -> list[tuple[Message, int, CleanRow, Envelope]]:
        """The rows that go to a rule, with their typed event (rows that hold none are skipped)."""
        work = []
        for message in messages:
            for index, row in message.positioned():
                if row.event_type not in self.dispatch:
                    continue
                try:
                    work.append((message, index, row, row.event()))
                except MalformedRowError:
                    log.warning(
                        "rules: clean row %s at %d/%d is not an event; skipped",
                        row.event_id,
                        message.partition,
                        message.offset,
                    )
        return work

    async def _load_declared_state(self, batch: Batch, work: Sequence[tuple[Any, Any, CleanRow, Envelope]]) -> None:
        """Load, in one statement per rule, the state keys the rules declare for the batch's events."""
        keys: dict[str, set[str]] = defaultdict(set)
        for _, _, row, event in work:
            for chosen in self.dispatch[row.event_type]:
                try:
                    keys[chosen.name].update(chosen.state_key(event))
                except Exception:  # noqa: BLE001, S112 - the handler meets the same problem and is judged for it
                    continue
        for name in sorted(keys):
            await batch.state.load(batch.conn, name, keys[name])

    async def run_periodic(self, conn: asyncpg.Connection, periodic: PeriodicRule) -> list[Emitted] | None:
        """Run ``periodic`` once, alone across workers; ``None`` if another worker is running it."""
        async with conn.transaction():
            locked = await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 11))", periodic.name)
            if not locked:
                return None
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 13))", self.group)
            batch = Batch(conn)
            call = Invocation(batch, periodic.name, self.emitter)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(_limit(periodic.timeout_s, self.timeout_s)):
                    await periodic.handler(call)
            except Exception as exc:
                if _database_away(exc, conn):
                    raise
                await call.finish(False)
                metrics.RULE_FAILURES.labels(periodic.name).inc()
                log.exception(
                    "rules: periodic rule %s failed; it runs again in %.0fs", periodic.name, periodic.interval_s
                )
                return []
            finally:
                metrics.RULE_SECONDS.labels(periodic.name).inc(time.perf_counter() - started)
                metrics.RULE_CALLS.labels(periodic.name).inc()
            await call.finish(True)
            await batch.state.flush(conn)
            emitted = [p.row for p in call.emitted]
            await _insert_emitted(conn, emitted)
            return emitted

    async def _run_event(
        self,
        batch: Batch,
        message: Message,
        index: int,
        row: CleanRow,
        event: Envelope,
        depths: Mapping[str, int],
        result: BatchResult,
    ) -> None:
        depth = depths.get(row.event_id, 0)
        for chosen in self.dispatch[row.event_type]:
            call = Invocation(batch, chosen.name, self.emitter, event, depth)
            result.invocations += 1
            result.calls[chosen.name] += 1
            started = time.perf_counter()
            try:
                waited = await _within(chosen.handler(event, call), _limit(chosen.timeout_s, self.timeout_s))
            except Exception as exc:
                if _database_away(exc, batch.conn):
                    raise  # not the rule's fault: the batch is tried again once the database is back
                await call.finish(False)
                result.failures += 1
                metrics.RULE_FAILURES.labels(chosen.name).inc()
                result.emitted.append(self._dead_letter(chosen, exc, message, index, row, depth))
                log.warning(
                    "rules: %s failed on %s %s: %s", chosen.name, row.event_type, row.event_id, _reason(chosen, exc)
                )
                continue
            finally:
                result.seconds[chosen.name] += time.perf_counter() - started
            if waited:
                await call.finish(True)
            else:
                call.keep()  # it never waited: no read of it can still be running
            result.emitted.extend(p.row for p in call.emitted)

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

    async def _depths(self, conn: asyncpg.Connection, rows: Sequence[CleanRow]) -> dict[str, int]:
        """The causation depth of each row (0 for an event no rule emitted)."""
        if not rows:
            return {}
        found = await conn.fetch(
            "SELECT event_id::text AS id, depth FROM rules.emitted WHERE event_id = ANY($1::uuid[]) AND kind = 'event'",
            [row.event_id for row in rows],
        )
        depths = {row["id"]: row["depth"] for row in found}
        for row in rows:
            if row.event_id not in depths and row.source.startswith(SOURCE_PREFIX):
                # Derived, published longer ago than the retention: its chain is unknown, so it ends here.
                depths[row.event_id] = self.max_depth
        return depths


async def _within(handler: Awaitable[Any], limit: float) -> bool:
    """Run a handler's coroutine with a time limit of ``limit`` seconds; return whether it ever waited.

    Most handlers finish without waiting (the batch's reads are loaded once, then served from
    memory): run to its first wait here, such a handler costs no timer (``asyncio.timeout``
    cost ~4 % of the rules' time, measured). One that waits goes on under a deadline counted
    from its start. Same limit as a timeout around the whole call: a limit can only stop a
    coroutine where it waits.
    """
    deadline = asyncio.get_running_loop().time() + limit
    if type(handler) is not types.CoroutineType:  # an ``async def`` gives one; anything else is awaited
        async with asyncio.timeout_at(deadline):
            await handler
        return True
    try:
        waiting = handler.send(None)
    except StopIteration:
        return False
    async with asyncio.timeout_at(deadline):
        await _Resumed(handler, waiting)
    return True


class _Resumed:
    """Awaitable: the rest of a coroutine that was stepped by hand and is waiting on ``waiting``.

    What it yields goes to the task running it, which resumes it (sends the result, or throws
    the cancellation of a timeout) as it would the coroutine itself.
    """

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - the coroutine's to handle, as if it had waited itself
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


_SETTLED = """
SELECT (SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = $1)
         >= (SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = $2)
   AND NOT EXISTS (SELECT 1 FROM rules.emitted WHERE published_at IS NULL)
   AND (SELECT count(*) FROM rules.emitted WHERE kind = 'event')
         <= (SELECT count(*) FROM events WHERE source LIKE 'devtrail-rules:%')
   AND (SELECT coalesce(sum(count), 0) FROM event_counts_hourly) >= (SELECT count(*) FROM events)
"""


async def settled(conn: asyncpg.Connection, rules_group: str, writers_group: str) -> bool:
    """Whether the rules worker has settled: read as far as the writers, its derived events all
    published and stored, and everything stored counted. (Ask twice in a row: a derived event
    on its way between the outbox and the sink makes the writers' offsets move again.)"""
    return bool(await conn.fetchval(_SETTLED, rules_group, writers_group))


def _limit(declared: float | None, default: float) -> float:
    return default if declared is None else declared


def _database_away(exc: BaseException, conn: asyncpg.Connection) -> bool:
    """Whether a handler failed because the database went away (or a deadlock), not by its own fault."""
    if conn.is_closed():
        return True
    return not isinstance(exc, TimeoutError) and is_retriable_db_error(exc)


def _reason(failed: Rule, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"rule {failed.name} did not finish within its time limit"
    return f"rule {failed.name} raised {type(exc).__name__}: {exc}"


async def _insert_emitted(conn: asyncpg.Connection, emitted: list[Emitted]) -> None:
    """Insert the rows; drop from ``emitted`` those already there (an id, or a rule's key, seen before)."""
    if not emitted:
        return
    emitted[:] = list({e.event_id: e for e in reversed(emitted)}.values())[::-1]  # the first of each id
    inserted = await conn.fetch(
        "INSERT INTO rules.emitted (event_id, rule, kind, event_type, cause_id, depth, topic, key, value, emit_key) "
        "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::smallint[], "
        "$7::text[], $8::bytea[], $9::bytea[], $10::text[]) ON CONFLICT DO NOTHING RETURNING event_id",
        [e.event_id for e in emitted],
        [e.rule for e in emitted],
        [e.kind for e in emitted],
        [e.event_type for e in emitted],
        [e.cause_id for e in emitted],
        [e.depth for e in emitted],
        [e.topic for e in emitted],
        [e.key for e in emitted],
        [e.value for e in emitted],
        [e.emit_key for e in emitted],
    )
    new = {row["event_id"] for row in inserted}
    emitted[:] = [e for e in emitted if e.event_id in new]
