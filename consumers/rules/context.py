"""What the handlers of one batch share (``Batch``), and the ``RuleContext`` of one call.

Reads are made for the whole batch: the first ``ctx.task()`` of a batch loads every task the
batch's events name, the first ``ctx.tasks_of_requirement()`` every task of every requirement
they name, and a rule that declares ``state_key`` has its keys for the batch loaded in one
statement. State needs no lock of its own: a batch holds its group's lock. The projections
include the whole batch before any rule runs (``devtrail.consumers.rules.app``), so one snapshot
serves every event of it.

Reads never run in a savepoint: they cannot fail by themselves, and they are shielded from
a handler's time limit (the read finishes, then the handler's effects are dropped), so a
cancelled handler never leaves the transaction aborted. ``ctx.query`` (anyone's SQL) runs in
a savepoint of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import orjson

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.rules.api import Cost, Requirement, RuleError, Session, Task

if TYPE_CHECKING:
    from devtrail.consumers.rules.engine import Emitter

T = TypeVar("T")
_DELETED = b""  # a deleted key, in ``BatchState.values`` (stored values are never empty JSON)
_TASKS = (
    "SELECT task_id, title, status, status_at, project_id, requirement_id, parent_task_id, agent_id, assignee, "
    "created_at, started_at, completed_at, completed_event_id, failed_at, cancelled_at, cancelled_event_id, "
    "status_event_id, first_seen, last_seen FROM projections.tasks "
)
_REQUIREMENTS = (
    "SELECT requirement_id, title, status, project_id, created_at, completed_at FROM projections.requirements "
    "WHERE requirement_id = ANY($1::text[])"
)
_SESSIONS = (
    "SELECT session_id, project_id, agent_id, task_id, requirement_id, started_at, ended_at, cost_usd "
    "FROM projections.sessions WHERE session_id = ANY($1::text[])"
)
_STATE = (
    "SELECT k.key, s.value::text AS value FROM unnest($2::text[]) AS k(key) "
    "LEFT JOIN rules.state s ON s.rule = $1 AND s.key = k.key"
)


class BatchState:
    """The rules' state as this transaction sees it, as JSON text: read once per key, written at the end.

    Values are kept encoded, so a handler never holds an object another handler sees: what
    it reads is a copy, what it writes is copied when written.
    """

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], bytes] = {}
        self.dirty: set[tuple[str, str]] = set()

    async def load(self, conn: asyncpg.Connection, rule: str, keys: Iterable[str]) -> None:
        """Read the keys of ``rule`` not read yet (the batch holds the group's lock: nobody else writes them)."""
        wanted = sorted({key for key in keys if (rule, key) not in self.values})
        if not wanted:
            return
        for row in await conn.fetch(_STATE, rule, wanted):
            value = row["value"]
            self.values[(rule, row["key"])] = _DELETED if value is None else value.encode()

    def write(self, updates: Mapping[tuple[str, str], bytes]) -> None:
        """Take the writes of a handler that returned."""
        self.values.update(updates)
        self.dirty.update(updates)

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Store the written keys.

        In no particular order: only the rules worker writes ``rules.state``, under its group's
        lock, so no two transactions lock its rows in opposite orders. (Sorting the keys of a
        large batch took a tenth of the rules' time, measured.)
        """
        upserts = [(slot, value) for slot in self.dirty if (value := self.values[slot]) != _DELETED]
        deletes = [slot for slot in self.dirty if self.values[slot] == _DELETED]
        if upserts:
            await conn.execute(
                "INSERT INTO rules.state (rule, key, value) "
                "SELECT r, k, v::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS u(r, k, v) "
                "ON CONFLICT (rule, key) DO UPDATE SET value = excluded.value, updated_at = now()",
                [slot[0] for slot, _ in upserts],
                [slot[1] for slot, _ in upserts],
                [value.decode() for _, value in upserts],
            )
        if deletes:
            await conn.execute(
                "DELETE FROM rules.state s USING unnest($1::text[], $2::text[]) AS d(r, k) "
                "WHERE s.rule = d.r AND s.key = d.k",
                [slot[0] for slot in deletes],
                [slot[1] for slot in deletes],
            )
        self.dirty.clear()


def _scoped(row: CleanRow) -> list[tuple[str, str]]:
    """The (scope, id) keys of ``rules.llm_cost`` a row counts towards."""
    named = (("task", row.task_id), ("requirement", row.requirement_id), ("project", row.project_id))
    return [(scope, value) for scope, value in named if value is not None]


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
        """Read the totals of every task, requirement and project ``rows`` name."""
        keys: set[tuple[str, str]] = set()
        for row in rows:
            figures = _figures(row)
            if figures is None:
                continue
            self._figures[row.event_id] = figures
            keys.update(_scoped(row))
        if not keys:
            return
        ordered = sorted(keys)
        found = await conn.fetch(
            "SELECT scope, id, calls, input_tokens, output_tokens, cost_usd FROM rules.llm_cost "
            "WHERE (scope, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [k[0] for k in ordered],
            [k[1] for k in ordered],
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

    def get(self, scope: str, entity: str) -> Cost | None:
        """The batch's running total, if the batch touches that key."""
        total = self.totals.get((scope, entity))
        return None if total is None else Cost(int(total[0]), int(total[1]), int(total[2]), float(total[3]))

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
        self.dirty.clear()


class Batch:
    """What the handler calls of one transaction share: the connection, state, costs, reads.

    Args:
        conn: the transaction's connection.
        rows: the batch's rows that go to a rule: what the batch-wide reads load.
    """

    def __init__(self, conn: asyncpg.Connection, rows: Sequence[CleanRow] = ()) -> None:
        self.conn = conn
        self.rows = rows
        self.state = BatchState()
        self.costs = CostBook()
        self._lock = asyncio.Lock()
        self._tasks: dict[str, Task | None] = {}
        self._requirement_tasks: dict[str, list[Task]] = {}
        self._requirements: dict[str, Requirement | None] = {}
        self._sessions: dict[str, Session | None] = {}

    async def read(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on the connection, one at a time, finished even if the caller is cancelled."""

        async def alone() -> T:
            async with self._lock:
                return await work(self.conn)

        return await asyncio.shield(asyncio.ensure_future(alone()))

    async def settle(self) -> None:
        """Wait for any read a cancelled handler left running."""
        async with self._lock:
            pass

    def _named(self, field: str) -> set[str]:
        return {value for row in self.rows if (value := getattr(row, field)) is not None}

    async def task(self, task_id: str) -> Task | None:
        if task_id not in self._tasks:
            wanted = (self._named("task_id") | {task_id}) - self._tasks.keys()
            rows = await self.read(lambda c: c.fetch(_TASKS + "WHERE task_id = ANY($1::text[])", list(wanted)))
            self._tasks.update(dict.fromkeys(wanted))
            self._tasks.update({row["task_id"]: Task(**dict(row)) for row in rows})
        return self._tasks[task_id]

    async def tasks_of_requirement(self, requirement_id: str) -> list[Task]:
        if requirement_id not in self._requirement_tasks:
            named = self._named("requirement_id") | {
                t.requirement_id for t in self._tasks.values() if t and t.requirement_id
            }
            wanted = (named | {requirement_id}) - self._requirement_tasks.keys()
            rows = await self.read(lambda c: c.fetch(_TASKS + "WHERE requirement_id = ANY($1::text[])", list(wanted)))
            for key in wanted:
                self._requirement_tasks[key] = []
            for row in rows:
                task = Task(**dict(row))
                self._requirement_tasks[str(task.requirement_id)].append(task)
                self._tasks.setdefault(task.task_id, task)
        return list(self._requirement_tasks[requirement_id])

    async def requirement(self, requirement_id: str) -> Requirement | None:
        if requirement_id not in self._requirements:
            wanted = (self._named("requirement_id") | {requirement_id}) - self._requirements.keys()
            rows = await self.read(lambda c: c.fetch(_REQUIREMENTS, list(wanted)))
            self._requirements.update(dict.fromkeys(wanted))
            self._requirements.update({row["requirement_id"]: Requirement(**dict(row)) for row in rows})
        return self._requirements[requirement_id]

    async def session(self, session_id: str) -> Session | None:
        if session_id not in self._sessions:
            wanted = (self._named("session_id") | {session_id}) - self._sessions.keys()
            rows = await self.read(lambda c: c.fetch(_SESSIONS, list(wanted)))
            self._sessions.update(dict.fromkeys(wanted))
            self._sessions.update({row["session_id"]: Session(**dict(row)) for row in rows})
        return self._sessions[session_id]

    async def cost(self, scope: str, entity: str) -> Cost:
        running = self.costs.get(scope, entity)
        if running is not None:
            return running
        row = await self.read(
            lambda c: c.fetchrow(
                "SELECT calls, input_tokens, output_tokens, cost_usd FROM rules.llm_cost WHERE scope = $1 AND id = $2",
                scope,
                entity,
            )
        )
        return Cost(**dict(row)) if row is not None else Cost()

    async def query(self, sql: str, args: Sequence[Any]) -> list[Mapping[str, Any]]:
        async def in_savepoint(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            async with conn.transaction():  # a failing query fails its handler only
                return list(await conn.fetch(sql, *args))

        return [dict(row) for row in await self.read(in_savepoint)]


class _State:
    """``RuleContext.state`` of one call: its writes wait for the handler to return."""

    def __init__(self, batch: Batch, rule: str) -> None:
        self._batch = batch
        self._rule = rule
        self.writes: dict[tuple[str, str], bytes] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        slot = (self._rule, str(key))
        value = self.writes.get(slot)
        if value is None:
            if slot not in self._batch.state.values:
                await self._batch.read(lambda c: self._batch.state.load(c, self._rule, [slot[1]]))
            value = self._batch.state.values[slot]
        return default if value == _DELETED else orjson.loads(value)

    def set(self, key: str, value: Any) -> None:
        self.writes[(self._rule, str(key))] = orjson.dumps(value)  # refuses what cannot be stored, here

    def delete(self, key: str) -> None:
        self.writes[(self._rule, str(key))] = _DELETED


class Invocation:
    """The ``RuleContext`` of one handler call on one event (``cause``), or of one periodic run."""

    def __init__(self, batch: Batch, rule: str, emitter: Emitter, cause: Any = None, depth: int = 0) -> None:
        self.batch = batch
        self._rule = rule
        self._emitter = emitter
        self.cause = cause
        self.depth = depth
        self.emitted: list[Any] = []
        self._state = _State(batch, rule)

    @property
    def rule(self) -> str:
        return self._rule

    @property
    def state(self) -> _State:
        return self._state

    def now(self) -> datetime:
        return datetime.now(UTC)

    def _default(self, name: str, given: str | None) -> str | None:
        if given is not None:
            return given
        return getattr(self.cause, name, None) if self.cause is not None else None

    async def task(self, task_id: str | None = None) -> Task | None:
        wanted = self._default("task_id", task_id)
        return None if wanted is None else await self.batch.task(wanted)

    async def requirement(self, requirement_id: str | None = None) -> Requirement | None:
        wanted = self._default("requirement_id", requirement_id)
        return None if wanted is None else await self.batch.requirement(wanted)

    async def tasks_of_requirement(self, requirement_id: str | None = None) -> list[Task]:
        wanted = self._default("requirement_id", requirement_id)
        return [] if wanted is None else await self.batch.tasks_of_requirement(wanted)

    async def session(self, session_id: str | None = None) -> Session | None:
        wanted = self._default("session_id", session_id)
        return None if wanted is None else await self.batch.session(wanted)

    async def cost(
        self, *, task_id: str | None = None, requirement_id: str | None = None, project_id: str | None = None
    ) -> Cost:
        given = (("task", task_id), ("requirement", requirement_id), ("project", project_id))
        named = [(scope, value) for scope, value in given if value is not None]
        if len(named) != 1:
            raise RuleError("ctx.cost takes exactly one of task_id, requirement_id, project_id")
        return await self.batch.cost(*named[0])

    async def query(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        return await self.batch.query(sql, args)

    def emit(self, event: Any, /, *, key: str | None = None, **fields: Any) -> Any:
        return self._emitter.emit(self, event, key, fields)

    async def finish(self, succeeded: bool) -> None:
        """Let any read the handler left running finish; keep the handler's writes if it succeeded."""
        await self.batch.settle()
        if succeeded:
            self.keep()

    def keep(self) -> None:
        """Keep the writes of a handler that returned (``finish``, for one known to have left no read running)."""
        self.batch.state.write(self._state.writes)
