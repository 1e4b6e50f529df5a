"""The rules API and engine, from the outside, without a broker or a database.

The engine's database calls go to ``FakeConn`` (canned answers, every statement recorded, and
an error if two overlap, as asyncpg would raise); ``Invocation`` and ``Batch`` are used
directly where a handler's context is what is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import math
import os
import sys
import textwrap
import types
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from devtrail.consumers.clean import CleanRow, clean_row, event_to_row
from devtrail.consumers.rules.api import (
    Cost,
    PeriodicRule,
    Requirement,
    Rule,
    RuleContext,
    RuleError,
    Session,
    Task,
    every,
    rule,
    rules_in,
)
from devtrail.consumers.rules.app import load_rules
from devtrail.consumers.rules.builtin import BUILTIN, builtin_rules
from devtrail.consumers.rules.context import Batch, BatchState, CostBook, Invocation
from devtrail.consumers.rules.engine import (
    SOURCE_PREFIX,
    CausationDepthError,
    Emitted,
    Emitter,
    Message,
    RulesEngine,
    _within,
    derived_id,
)
from devtrail.consumers.settings import RulesSettings
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import (
    EVENT_CLASSES,
    EVENT_CLASSES_BY_TYPE,
    AgentErrorPayload,
    AgentErrorReported,
    AlertRaised,
    AlertRaisedPayload,
    AlertSubject,
    LlmCalledPayload,
    SystemNotice,
    SystemNoticePayload,
    TaskCompleted,
    TaskCreated,
    TaskCreatedPayload,
    TaskFailed,
    TaskFailedPayload,
    TaskStarted,
    TaskStatus,
    TaskStatusChanged,
    TaskStatusChangedPayload,
)
from devtrail.schemas.ids import uuid7_millis
from devtrail.schemas.task_events import TaskEnvelope
from devtrail.schemas.topics import TopicMap
from tests.factories import llm_called

T0 = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TOPICS = TopicMap("tp")
NOTICE = SystemNoticePayload(component="rules-test", message="derived")
EMITTER = Emitter(TOPICS, 4)
#: A fragment of the statement that reads (and locks) state keys, and only of it.
STATE_READ = "LEFT JOIN rules.state"
TASKS_READ = "FROM projections.tasks"


# ---- helpers ----------------------------------------------------------------------------------


def unix_ms(when: datetime) -> int:
    """Milliseconds since the epoch, in integer arithmetic."""
    return (when - EPOCH) // timedelta(milliseconds=1)


def task_completed(task_id: str = "T-1", at: datetime = T0, **overrides: Any) -> TaskCompleted:
    fields: dict[str, Any] = {
        "source": "agent",
        "task_id": task_id,
        "project_id": "P",
        "agent_id": "A",
        "session_id": "S",
        "requirement_id": "R",
        "correlation_id": "C",
        "occurred_at": at,
    }
    fields.update(overrides)
    return TaskCompleted(**fields)


def task_created(task_id: str = "T-1", at: datetime = T0) -> TaskCreated:
    return TaskCreated(source="planner", task_id=task_id, occurred_at=at, payload=TaskCreatedPayload(title="t"))


def notice(source: str = "ops", at: datetime = T0) -> SystemNotice:
    return SystemNotice(source=source, occurred_at=at, payload=NOTICE)


def clean(event: Envelope) -> CleanRow:
    """The event as the rules worker reads it from the clean topic."""
    row = clean_row(orjson.loads(orjson.dumps(event_to_row(event))))
    assert isinstance(row, CleanRow)
    return row


def _llm(tokens_in: int, usd: float) -> LlmCalledPayload:
    return LlmCalledPayload(provider="p", model="m", input_tokens=tokens_in, output_tokens=5, cost_usd=usd)


def make_engine(*rules: Rule | PeriodicRule, max_depth: int = 4, timeout_s: float = 5.0) -> RulesEngine:
    return RulesEngine(list(rules), TOPICS, "g-rules", timeout_s, max_depth)


def invocation(
    cause: Envelope | None = None,
    depth: int = 0,
    name: str = "r",
    batch: Batch | None = None,
    max_depth: int = 4,
) -> Invocation:
    """A handler's context; with no ``batch``, one with no connection: any database access would fail."""
    return Invocation(batch or Batch(None), name, Emitter(TOPICS, max_depth), cause, depth)


def rows_of(ctx: Invocation) -> list[Emitted]:
    """The outbox rows of a handler's emits so far."""
    return [pending.row for pending in ctx.emitted]


def writes_of(ctx: Invocation) -> dict[tuple[str, str], Any]:
    """A handler's pending state writes, decoded."""
    return {slot: orjson.loads(value) for slot, value in ctx.state.writes.items()}


class FakeTransaction:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    async def start(self) -> None:
        self.conn.savepoints += 1

    async def commit(self) -> None:
        self.conn.commits += 1

    async def rollback(self) -> None:
        self.conn.rollbacks += 1

    async def __aenter__(self) -> FakeTransaction:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            await self.commit()
        else:
            await self.rollback()


class FakeConn:
    """Just enough of an asyncpg connection for the rules runtime, with canned answers.

    Args:
        offsets: the stored ``next_offset`` of each partition (``consumer_offsets``).
        depths: ``rules.emitted`` depth by event id.
        state: ``rules.state`` by (rule, key).
        already_emitted: event ids already in ``rules.emitted`` (the insert skips them).
        already_keyed: ``(rule, emit_key)`` already in ``rules.emitted`` (its unique index).
        tasks, requirements, sessions: the projections' rows.
        answers: rows (or an exception to raise) of other statements, by a fragment of their SQL.
        slow_on: statements containing it wait ``delay`` seconds, or for ``gate``.
    """

    def __init__(
        self,
        offsets: dict[int, int] | None = None,
        depths: dict[str, int] | None = None,
        state: dict[tuple[str, str], Any] | None = None,
        already_emitted: set[uuid.UUID] | None = None,
        already_keyed: set[tuple[str, str]] | None = None,
        tasks: list[Task] | None = None,
        requirements: list[Requirement] | None = None,
        sessions: list[Session] | None = None,
        answers: dict[str, list[dict[str, Any]] | Exception] | None = None,
        slow_on: str | None = None,
        delay: float = 0.0,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.offsets = offsets or {}
        self.depths = depths or {}
        self.state = state or {}
        self.already_emitted = already_emitted or set()
        self.already_keyed = already_keyed or set()
        self.tasks = tasks or []
        self.requirements = requirements or []
        self.sessions = sessions or []
        self.answers = answers or {}
        self.slow_on, self.delay, self.gate = slow_on, delay, gate
        self.statements: list[tuple[str, tuple[Any, ...]]] = []
        self.finished: list[str] = []
        self.savepoints = self.commits = self.rollbacks = 0
        self._busy = False

    def transaction(self) -> FakeTransaction:
        return FakeTransaction(self)

    def is_closed(self) -> bool:
        return False

    def ran(self, fragment: str) -> list[tuple[Any, ...]]:
        """The arguments of each statement that contains ``fragment``."""
        return [args for sql, args in self.statements if fragment in sql]

    async def _run(self, sql: str, args: tuple[Any, ...]) -> None:
        """Record a statement; refuse one while another runs (asyncpg's InterfaceError); be slow if asked."""
        self.statements.append((sql, args))
        if self._busy:
            raise AssertionError(f"another operation is in progress: {sql}")
        self._busy = True
        try:
            if self.slow_on is not None and self.slow_on in sql:
                if self.gate is not None:
                    await self.gate.wait()
                await asyncio.sleep(self.delay)
        finally:
            self._busy = False
        self.finished.append(sql)

    async def execute(self, sql: str, *args: Any) -> str:
        await self._run(sql, args)
        return "OK"

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        await self._run(sql, args)
        if "FROM consumer_offsets" in sql:
            return [{"partition": p, "next_offset": self.offsets.get(p, 0)} for p in args[2]]
        if "FROM rules.emitted" in sql:
            return [{"id": i, "depth": self.depths[i]} for i in args[0] if i in self.depths]
        if "INSERT INTO rules.emitted" in sql:
            return self._insert_emitted(args)
        if "rules.llm_cost" in sql:
            return []
        if STATE_READ in sql:
            rule_, keys = args
            return [
                {
                    "key": k,
                    "value": None if (rule_, k) not in self.state else orjson.dumps(self.state[(rule_, k)]).decode(),
                }
                for k in keys
            ]
        if TASKS_READ in sql and "WHERE task_id" in sql:
            return [dataclasses.asdict(t) for t in self.tasks if t.task_id in args[0]]
        if TASKS_READ in sql and "WHERE requirement_id" in sql:
            return [dataclasses.asdict(t) for t in self.tasks if t.requirement_id in args[0]]
        if "FROM projections.requirements" in sql:
            return [dataclasses.asdict(r) for r in self.requirements if r.requirement_id in args[0]]
        if "FROM projections.sessions" in sql:
            return [dataclasses.asdict(s) for s in self.sessions if s.session_id in args[0]]
        for fragment, answer in self.answers.items():
            if fragment in sql:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        raise AssertionError(f"unexpected fetch: {sql}")

    def _insert_emitted(self, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Like PostgreSQL's ``ON CONFLICT DO NOTHING``: a row whose id or (rule, emit_key) is there is skipped."""
        inserted = []
        for event_id, rule_, emit_key in zip(args[0], args[1], args[9], strict=True):
            keyed = (rule_, emit_key) if emit_key is not None else None
            if event_id in self.already_emitted or keyed in self.already_keyed:
                continue
            self.already_emitted.add(event_id)
            if keyed is not None:
                self.already_keyed.add(keyed)
            inserted.append({"event_id": event_id})
        return inserted

    async def fetchval(self, sql: str, *args: Any) -> Any:
        await self._run(sql, args)
        if "pg_try_advisory_xact_lock" in sql:
            return True
        raise AssertionError(f"unexpected fetchval: {sql}")

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        await self._run(sql, args)
        return None


def upserted_state(conn: FakeConn) -> dict[tuple[str, str], Any]:
    """What the batch wrote to ``rules.state``."""
    written: dict[tuple[str, str], Any] = {}
    for rules_, keys, values in conn.ran("INSERT INTO rules.state"):
        for r, k, v in zip(rules_, keys, values, strict=True):
            written[(r, k)] = orjson.loads(v)
    return written


def events_of(result: list[Emitted]) -> list[Envelope]:
    out: list[Envelope] = []
    for e in result:
        if e.kind == "event":
            assert e.event_type is not None
            out.append(EVENT_CLASSES_BY_TYPE[e.event_type].model_validate_json(e.value))
    return out


def own_handler(module: str) -> Any:
    """An event handler defined, as far as ``rules_in`` can tell, in ``module``."""

    async def handler(event: Any, ctx: RuleContext) -> None:
        return None

    handler.__module__ = module
    return handler


def own_periodic(module: str) -> Any:
    async def periodic(ctx: RuleContext) -> None:
        return None

    periodic.__module__ = module
    return periodic


@pytest.fixture(autouse=True)
def _no_devtrail_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built here take their defaults, whatever the environment says."""
    for name in list(os.environ):
        if name.startswith("DEVTRAIL_"):
            monkeypatch.delenv(name)


# ---- declarations -----------------------------------------------------------------------------


async def _handler(event: Any, ctx: RuleContext) -> None:
    return None


async def _periodic(ctx: RuleContext) -> None:
    return None


def test_rule_needs_at_least_one_event_class() -> None:
    with pytest.raises(RuleError, match="at least one event class"):
        rule()


@pytest.mark.parametrize(
    "bad", [int, "task.completed", TaskCompleted(source="s", task_id="T"), object, TaskCreatedPayload]
)
def test_rule_refuses_what_is_not_an_event_class(bad: Any) -> None:
    with pytest.raises(RuleError, match="takes event classes"):
        rule(TaskCompleted, bad)


def test_rule_and_every_refuse_a_sync_handler() -> None:
    def sync(event: Any, ctx: RuleContext) -> None:
        return None

    def sync_periodic(ctx: RuleContext) -> None:
        return None

    with pytest.raises(RuleError, match="async def"):
        rule(TaskCompleted)(sync)  # type: ignore[arg-type]
    with pytest.raises(RuleError, match="async def"):
        every(10)(sync_periodic)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["1abc", "has space", "x" * 101, "semi;colon", "ünï", "a/b", "-lead"])
def test_bad_rule_names_are_refused(name: str) -> None:
    with pytest.raises(RuleError, match="must match"):
        rule(TaskCompleted, name=name)(_handler)
    with pytest.raises(RuleError, match="must match"):
        every(5, name=name)(_periodic)


@pytest.mark.parametrize("name", ["requirement_rollup\n", "a\nb", "\nlead"])
def test_a_name_with_a_newline_is_refused(name: str) -> None:
    # `$` matches before a final newline: the whole name must match (fullmatch).
    with pytest.raises(RuleError, match="must match"):
        rule(TaskCompleted, name=name)(_handler)
    with pytest.raises(RuleError, match="must match"):
        every(5, name=name)(_periodic)


def test_an_empty_name_means_the_function_s_name() -> None:
    assert rule(TaskCompleted, name="")(_handler).name == "_handler"


@pytest.mark.parametrize("name", ["a", "_x", "rule.v2", "my-rule", "A" * 100])
def test_good_rule_names_are_kept(name: str) -> None:
    assert rule(TaskCompleted, name=name)(_handler).name == name
    assert every(1, name=name)(_periodic).name == name


def test_the_default_name_is_the_function_name() -> None:
    @rule(TaskCompleted, timeout_s=2.5)
    async def close_requirement(event: TaskCompleted, ctx: RuleContext) -> None:
        return None

    assert isinstance(close_requirement, Rule)
    assert close_requirement.name == "close_requirement"
    assert close_requirement.event_classes == (TaskCompleted,)
    assert close_requirement.timeout_s == 2.5
    assert close_requirement.state_keys is None
    assert close_requirement.state_key(task_completed()) == []


@pytest.mark.parametrize("interval", [0, -1, -0.001, 0.0])
def test_every_refuses_a_non_positive_interval(interval: float) -> None:
    with pytest.raises(RuleError, match="positive number of seconds"):
        every(interval)


def test_every_makes_a_periodic_rule_with_a_float_interval() -> None:
    made = every(2, name="tick", timeout_s=1.0)(_periodic)
    assert isinstance(made, PeriodicRule)
    assert made.interval_s == 2.0 and isinstance(made.interval_s, float)
    assert (made.name, made.timeout_s) == ("tick", 1.0)


@pytest.mark.parametrize("interval", [math.nan, math.inf, -math.inf])
def test_every_refuses_an_interval_that_is_not_finite(interval: float) -> None:
    # The runner's `elapsed >= interval` would never be true.
    with pytest.raises(RuleError, match="positive number of seconds"):
        every(interval)


@pytest.mark.parametrize("timeout", [0.0, -1.0, math.nan, math.inf])
def test_a_timeout_that_is_not_a_positive_finite_number_is_refused(timeout: float) -> None:
    with pytest.raises(RuleError, match="timeout_s must be a positive number"):
        rule(TaskCompleted, timeout_s=timeout)
    with pytest.raises(RuleError, match="timeout_s must be a positive number"):
        every(1, timeout_s=timeout)


def test_a_small_positive_timeout_is_kept() -> None:
    assert rule(TaskCompleted, timeout_s=0.001)(_handler).timeout_s == 0.001
    assert every(1, timeout_s=0.5)(_periodic).timeout_s == 0.5


async def test_a_rule_can_be_called_directly() -> None:
    seen: list[tuple[Any, Any]] = []

    @rule(TaskCompleted)
    async def record(event: TaskCompleted, ctx: RuleContext) -> None:
        seen.append((event, ctx))

    @every(1)
    async def tick(ctx: RuleContext) -> None:
        seen.append((None, ctx))

    event, ctx = task_completed(), invocation()
    await record(event, ctx)
    await tick(ctx)
    assert seen == [(event, ctx), (None, ctx)]


def test_state_key_declares_a_key_keys_or_none() -> None:
    one = rule(TaskCompleted, state_key=lambda e: e.task_id)(_handler)
    many = rule(TaskCompleted, state_key=lambda e: [e.task_id, None, 7, f"r:{e.requirement_id}"])(_handler)
    none = rule(TaskCompleted, state_key=lambda e: None)(_handler)
    event = task_completed()
    assert one.state_key(event) == ["T-1"]
    assert many.state_key(event) == ["T-1", "7", "r:R"]  # None left out, the rest as text
    assert none.state_key(event) == []
    assert one.state_key(task_completed("T-2")) == ["T-2"]


def test_a_rule_on_a_base_class_reacts_to_its_subclasses() -> None:
    on_tasks = rule(TaskEnvelope)(_handler)
    task_classes = [cls for cls in EVENT_CLASSES if issubclass(cls, TaskEnvelope)]
    assert len(task_classes) >= 8
    assert all(on_tasks.reacts_to(cls) for cls in task_classes)
    assert not on_tasks.reacts_to(SystemNotice)
    assert not on_tasks.reacts_to(AlertRaised)
    on_all = rule(Envelope)(_handler)
    assert all(on_all.reacts_to(cls) for cls in EVENT_CLASSES)
    only_completed = rule(TaskCompleted)(_handler)
    assert [cls for cls in EVENT_CLASSES if only_completed.reacts_to(cls)] == [TaskCompleted]


def test_the_dispatch_table_maps_each_event_type_to_its_rules_in_registration_order() -> None:
    a = rule(TaskCompleted, name="a")(_handler)
    b = rule(TaskEnvelope, name="b")(_handler)
    c = rule(TaskCreated, TaskCompleted, name="c")(_handler)
    d = rule(SystemNotice, name="d")(_handler)
    tick = every(1, name="tick")(_periodic)
    engine = make_engine(c, tick, a, b, d)
    assert engine.dispatch["task.completed"] == (c, a, b)
    assert engine.dispatch["task.created"] == (c, b)
    assert engine.dispatch["task.started"] == (b,)
    assert engine.dispatch["system.notice"] == (d,)
    task_types = {str(cls.model_fields["event_type"].default) for cls in EVENT_CLASSES if issubclass(cls, TaskEnvelope)}
    assert set(engine.dispatch) == task_types | {"system.notice"}
    assert engine.event_rules == (c, a, b, d)
    assert engine.periodic_rules == (tick,)
    assert engine.rules == (c, tick, a, b, d)
    assert engine.clean_topic == "tp.clean"


def test_wants_says_whether_any_row_goes_to_a_rule() -> None:
    engine = make_engine(rule(TaskCompleted)(_handler))
    assert engine.wants([clean(task_created()), clean(task_completed())])
    assert not engine.wants([clean(task_created()), clean(notice())])
    assert not engine.wants([])
    assert not make_engine().wants([clean(task_completed())])


def test_duplicate_rule_names_are_refused_whatever_their_kind() -> None:
    with pytest.raises(RuleError, match=r"loaded twice: x$"):
        make_engine(rule(TaskCompleted, name="x")(_handler), rule(TaskCreated, name="x")(_handler))
    with pytest.raises(RuleError, match="loaded twice: a, b"):
        make_engine(
            every(1, name="b")(_periodic),
            rule(TaskCompleted, name="a")(_handler),
            rule(TaskCompleted, name="b")(_handler),
            every(2, name="a")(_periodic),
        )


def test_rules_in_finds_the_rules_of_a_module_in_definition_order() -> None:
    module = types.ModuleType("my_rules")
    # As if decorated in my_rules itself: the module a rule is made in is recorded then.
    first = dataclasses.replace(rule(TaskCompleted, name="first")(own_handler("my_rules")), module="my_rules")
    second = dataclasses.replace(every(3, name="second")(own_periodic("my_rules")), module="my_rules")
    made_elsewhere = rule(TaskCreated, name="made_elsewhere")(_handler)
    imported = rule(TaskCreated, name="imported")(_handler)
    module.first = first  # type: ignore[attr-defined]
    module.helper = _handler  # type: ignore[attr-defined]
    module.constant = 3  # type: ignore[attr-defined]
    module.imported = imported  # type: ignore[attr-defined]
    module.second = second  # type: ignore[attr-defined]
    module.RULES = [first, made_elsewhere, "not a rule"]  # type: ignore[attr-defined]
    assert rules_in(module) == [first, second, made_elsewhere]  # `imported` is another module's, not listed
    assert rules_in(types.ModuleType("empty")) == []


def test_the_public_facade_exports_the_api() -> None:
    import devtrail.rules as facade

    assert facade.rule is rule and facade.every is every and facade.RuleError is RuleError
    assert set(facade.__all__) >= {"rule", "every", "RuleContext", "RuleError", "alert", "State", "Task", "Cost"}
    assert all(hasattr(facade, name) for name in facade.__all__)


# ---- derived ids ------------------------------------------------------------------------------


def test_derived_id_is_deterministic_and_changes_with_each_input() -> None:
    cause = str(uuid.uuid4())
    base = derived_id("r", cause, "k", T0)
    assert derived_id("r", cause, "k", T0) == base
    others = [
        derived_id("r2", cause, "k", T0),
        derived_id("r", str(uuid.uuid4()), "k", T0),
        derived_id("r", None, "k", T0),
        derived_id("r", cause, "k2", T0),
        derived_id("r", cause, "k", T0 + timedelta(milliseconds=1)),
    ]
    assert base not in others
    assert len(set(others)) == len(others)


def test_derived_id_does_not_mix_up_its_parts() -> None:
    # The parts are joined with NUL: moving text from one part to the next is another id.
    assert derived_id("a", "b", "c", T0) != derived_id("a", "bc", "", T0)
    assert derived_id("ab", None, "c", T0) != derived_id("a", None, "bc", T0)


def test_derived_id_is_a_uuid7_of_the_given_time() -> None:
    made = derived_id("r", str(uuid.uuid4()), "k", T0)
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert uuid7_millis(made) == unix_ms(T0)
    # The same instant in another offset is the same id.
    assert derived_id("r", None, "k", T0.astimezone(timezone(timedelta(hours=-5)))) == derived_id("r", None, "k", T0)


@given(
    when=st.datetimes(
        # hypothesis takes naive bounds, and then a time zone
        min_value=datetime(2000, 1, 1, tzinfo=UTC).replace(tzinfo=None),
        max_value=datetime(2099, 12, 31, tzinfo=UTC).replace(tzinfo=None),
        timezones=st.just(UTC),
    ),
    key=st.text(max_size=20),
)
def test_derived_id_carries_the_millisecond_of_when(when: datetime, key: str) -> None:
    made = derived_id("rule", None, key, when)
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    assert uuid7_millis(made) == unix_ms(when)


# ---- emit ---------------------------------------------------------------------------------------


def test_an_emit_takes_the_cause_s_references_time_and_correlation() -> None:
    cause = task_completed()
    ctx = invocation(cause, name="closer")
    made = ctx.emit(SystemNotice, payload=NOTICE)
    assert isinstance(made, SystemNotice)
    assert made.causation_id == cause.event_id
    assert made.correlation_id == "C"
    assert (made.project_id, made.agent_id, made.session_id, made.task_id, made.requirement_id) == (
        "P",
        "A",
        "S",
        "T-1",
        "R",
    )
    assert made.occurred_at == cause.occurred_at
    assert made.source == "devtrail-rules:closer" == SOURCE_PREFIX + "closer"
    assert made.event_id == derived_id("closer", str(cause.event_id), "#0", cause.occurred_at)
    # The same handler on the same cause makes the same event.
    again = invocation(cause, name="closer").emit(SystemNotice, payload=NOTICE)
    assert again == made
    (row,) = rows_of(ctx)
    assert row.emit_key is None


def test_given_fields_win_and_an_explicit_none_clears_a_reference() -> None:
    cause = task_completed()
    later = T0 + timedelta(hours=1)
    made = invocation(cause).emit(
        SystemNotice,
        payload=NOTICE,
        task_id=None,
        session_id=None,
        project_id="other",
        correlation_id="C2",
        source="my-source",
        occurred_at=later,
    )
    assert made.task_id is None and made.session_id is None
    assert (made.project_id, made.correlation_id, made.agent_id, made.requirement_id) == ("other", "C2", "A", "R")
    assert made.source == "my-source"
    assert made.occurred_at == later
    assert made.causation_id == cause.event_id
    assert made.event_id == derived_id("r", str(cause.event_id), "#0", later)


def test_a_causation_id_given_to_emit_is_kept() -> None:
    cause = task_completed()
    other = uuid.uuid4()
    ctx = invocation(cause)
    made = ctx.emit(SystemNotice, payload=NOTICE, causation_id=other)
    assert made.causation_id == other
    assert rows_of(ctx)[0].cause_id == other  # rules.emitted names the cause the event names
    assert invocation(cause).emit(SystemNotice, payload=NOTICE, causation_id=None).causation_id is None


def test_the_same_key_twice_is_one_event_and_unkeyed_emits_are_distinct() -> None:
    cause = task_completed()
    ctx = invocation(cause)
    first = ctx.emit(SystemNotice, key="k", payload=NOTICE)
    other_payload = SystemNoticePayload(component="rules-test", message="something else")
    second = ctx.emit(SystemNotice, key="k", payload=other_payload)
    assert second is first  # the first event, as built: the second emit's fields are not used
    assert first.event_id == derived_id("r", None, "k", T0)  # a key: whatever the cause
    assert len(ctx.emitted) == 1
    a = ctx.emit(SystemNotice, payload=NOTICE)
    b = ctx.emit(SystemNotice, payload=NOTICE)
    assert len({first.event_id, a.event_id, b.event_id}) == 3
    assert [e.event_id for e in rows_of(ctx)] == [first.event_id, a.event_id, b.event_id]
    assert [e.emit_key for e in rows_of(ctx)] == ["k", None, None]


def test_an_emit_may_pass_a_built_event() -> None:
    cause = task_completed()
    built = AlertRaised(
        source="mine",
        occurred_at=T0 + timedelta(seconds=5),
        task_id="T-9",
        payload=AlertRaisedPayload(rule="r", subject_kind=AlertSubject.TASK, subject_id="T-9", summary="look"),
    )
    ctx = invocation(cause)
    made = ctx.emit(built, key="alert")
    assert isinstance(made, AlertRaised)
    assert made.event_id == derived_id("r", None, "alert", built.occurred_at)
    assert made.event_id != built.event_id
    assert made.causation_id == cause.event_id
    assert (made.source, made.task_id, made.payload, made.occurred_at) == (
        "mine",
        "T-9",
        built.payload,
        built.occurred_at,
    )
    (row,) = rows_of(ctx)
    assert row.topic == "tp.alert" and row.event_type == "alert.raised" and row.key == b"T-9"
    assert row.emit_key == "alert"
    assert AlertRaised.model_validate_json(row.value) == made
    unkeyed = ctx.emit(built)
    assert unkeyed.event_id == derived_id("r", str(cause.event_id), "#1", built.occurred_at)
    own_cause = uuid.uuid4()
    kept = invocation(cause).emit(built.model_copy(update={"causation_id": own_cause}))
    assert kept.causation_id == own_cause


def test_an_emit_of_a_built_event_refuses_fields_beside_it() -> None:
    ctx = invocation(task_completed())
    with pytest.raises(RuleError, match=r"got an event and fields \['task_id'\]"):
        ctx.emit(notice(), task_id="T-2")
    assert ctx.emitted == []


def test_a_keyed_emit_is_the_same_event_whatever_its_cause() -> None:
    first, second = task_completed("T-1"), task_completed("T-2")
    a = invocation(first).emit(SystemNotice, key="k", occurred_at=T0, payload=NOTICE)
    b = invocation(second).emit(SystemNotice, key="k", occurred_at=T0, payload=NOTICE)
    assert a.event_id == b.event_id == derived_id("r", None, "k", T0)
    assert (a.causation_id, b.causation_id) == (first.event_id, second.event_id)
    # Without a key, each cause has its own events.
    c = invocation(first).emit(SystemNotice, payload=NOTICE)
    d = invocation(second).emit(SystemNotice, payload=NOTICE)
    assert c.event_id != d.event_id
    # Another rule's key is another event.
    assert invocation(first, name="other").emit(SystemNotice, key="k", payload=NOTICE).event_id != a.event_id


def test_a_keyed_emit_s_id_does_not_depend_on_the_cause() -> None:
    # Causes of other types, ids, references and depths; a periodic run (no cause): at one time, one id.
    causes: list[Envelope | None] = [
        task_completed("T-1"),
        task_completed("T-2", project_id="Q", correlation_id=None),
        notice(),
        None,
    ]
    made = [
        invocation(cause, depth=i).emit(SystemNotice, key="k", occurred_at=T0, payload=NOTICE)
        for i, cause in enumerate(causes)
    ]
    assert {m.event_id for m in made} == {derived_id("r", None, "k", T0)}
    # A built event too.
    assert invocation(notice()).emit(notice(at=T0), key="k").event_id == derived_id("r", None, "k", T0)
    # The rule, the key and the time still make the id.
    assert (
        invocation(notice()).emit(SystemNotice, key="k2", occurred_at=T0, payload=NOTICE).event_id != made[0].event_id
    )
    assert invocation(notice(), name="r2").emit(notice(at=T0), key="k").event_id != made[0].event_id


def test_a_built_event_gets_the_cause_s_defaults_for_what_it_was_not_given() -> None:
    cause = task_completed()
    built = SystemNotice(source="mine", payload=NOTICE)  # occurred_at: its default, the wall clock
    made = invocation(cause).emit(built)
    assert made.correlation_id == "C"
    assert (made.task_id, made.project_id, made.agent_id, made.session_id, made.requirement_id) == (
        "T-1",
        "P",
        "A",
        "S",
        "R",
    )
    assert made.occurred_at == cause.occurred_at  # else the derived id is not deterministic
    assert made.causation_id == cause.event_id
    assert made.source == "mine"
    assert made.event_id == derived_id("r", str(cause.event_id), "#0", cause.occurred_at)
    # What the event was given, None included, is kept.
    given_none = SystemNotice(
        source="mine", payload=NOTICE, task_id=None, project_id="Q", occurred_at=T0 - timedelta(1)
    )
    kept = invocation(cause).emit(given_none)
    assert (kept.task_id, kept.project_id, kept.session_id) == (None, "Q", "S")
    assert kept.occurred_at == T0 - timedelta(1)


def test_emit_refuses_what_is_not_an_event() -> None:
    ctx = invocation(task_completed())
    with pytest.raises(RuleError, match="event class or an event"):
        ctx.emit(NOTICE)
    with pytest.raises(RuleError, match="event class or an event"):
        ctx.emit(dict)
    assert ctx.emitted == []


async def test_an_invalid_derived_event_fails_the_handler() -> None:
    @rule(TaskCompleted)
    async def bad(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.emit(SystemNotice, payload={"component": "", "message": "x"})

    ctx = invocation(task_completed(), name="bad")
    with pytest.raises(ValidationError):
        await bad(task_completed(), ctx)
    with pytest.raises(ValidationError):
        ctx.emit(TaskStarted, task_id=" padded ")
    with pytest.raises(ValidationError):
        ctx.emit(SystemNotice, payload=NOTICE, no_such_field=1)
    assert ctx.emitted == []


def test_emitting_past_the_depth_limit_raises() -> None:
    cause = notice()
    at_limit = invocation(cause, depth=3, max_depth=3)
    with pytest.raises(CausationDepthError, match="rules_max_depth is 3"):
        at_limit.emit(SystemNotice, key="k", payload=NOTICE)
    assert at_limit.emitted == []
    assert issubclass(CausationDepthError, RuleError)
    below = invocation(cause, depth=2, max_depth=3)
    below.emit(SystemNotice, payload=NOTICE)
    assert rows_of(below)[0].depth == 3


def test_a_periodic_emit_needs_a_key_and_takes_the_clock() -> None:
    ctx = invocation(None, name="tick")
    with pytest.raises(RuleError, match="periodic rule must emit with key"):
        ctx.emit(SystemNotice, payload=NOTICE)
    before = datetime.now(UTC)
    made = ctx.emit(SystemNotice, key="k", payload=NOTICE)
    assert before <= made.occurred_at <= datetime.now(UTC)
    assert made.causation_id is None and made.correlation_id is None
    assert made.source == "devtrail-rules:tick"
    assert made.event_id == derived_id("tick", None, "k", made.occurred_at)
    (row,) = rows_of(ctx)
    assert (row.cause_id, row.depth, row.kind, row.rule, row.emit_key) == (None, 1, "event", "tick", "k")


def test_the_emitted_row_goes_to_the_family_s_input_topic() -> None:
    cause = task_completed()
    ctx = invocation(cause, depth=1)
    made = ctx.emit(TaskStarted, task_id="T-7")
    alert = ctx.emit(
        AlertRaised,
        task_id=None,
        session_id=None,
        correlation_id=None,
        payload=AlertRaisedPayload(rule="r", subject_kind=AlertSubject.PROJECT, subject_id="P", summary="s"),
    )
    first, second = rows_of(ctx)
    assert first == Emitted(
        event_id=made.event_id,
        rule="r",
        kind="event",
        event_type="task.started",
        cause_id=cause.event_id,
        depth=2,
        topic=TOPICS.input_topic(TaskStarted.family),
        key=made.partition_key(),
        value=first.value,
    )
    assert first.topic == "tp.task" and first.key == b"T-7"
    assert TaskStarted.model_validate_json(first.value) == made
    assert orjson.loads(first.value)["event_type"] == "task.started"
    assert ctx.emitted[0].built == made
    assert second.topic == "tp.alert"
    assert second.key == str(alert.event_id).encode()  # no task, session or correlation: the event itself
    assert AlertRaised.model_validate_json(second.value) == alert


def test_a_periodic_rule_emitting_one_key_twice_emits_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # docs/rules.md: "the same key is one event, whichever event caused it and however often it is emitted".
    ctx = invocation(None, name="tick")
    clock = iter([T0, T0 + timedelta(milliseconds=3)])
    monkeypatch.setattr(ctx, "now", lambda: next(clock))
    first = ctx.emit(SystemNotice, key="only-once", payload=NOTICE)
    again = ctx.emit(SystemNotice, key="only-once", payload=NOTICE)
    assert len(ctx.emitted) == 1
    assert again is first and first.occurred_at == T0


async def test_a_keyed_emit_from_two_causes_at_different_times_is_one_event() -> None:
    # The documented example (docs/rules.md) emits key=event.task_id and takes the cause's time:
    # the ids differ, and rules.emitted's unique (rule, emit_key) keeps the first only.
    @rule(TaskCompleted, name="keyed")
    async def keyed(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.emit(SystemNotice, key=event.task_id, payload=NOTICE)

    engine = make_engine(keyed)
    first, second = task_completed(at=T0), task_completed(at=T0 + timedelta(minutes=1))
    conn = FakeConn()
    one = await engine.apply(conn, [Message(0, 0, [clean(first)])])
    (row,) = one.emitted
    assert (row.emit_key, row.event_id) == ("T-1", derived_id("keyed", None, "T-1", T0))
    other = await engine.apply(conn, [Message(0, 1, [clean(second)])])
    assert other.emitted == []  # already emitted for that key: not published again
    (inserted,) = conn.ran("INSERT INTO rules.emitted")[1:]
    assert inserted[9] == ["T-1"]  # the insert names the key, for the unique index
    # Both causes in one batch: one event, the first cause's.
    together = await engine.apply(FakeConn(), [Message(0, 0, [clean(first), clean(second)])])
    assert [e.event_id for e in together.emitted] == [row.event_id]


async def test_one_key_emitted_on_two_events_of_a_batch_at_one_time_is_published_once() -> None:
    @rule(TaskCompleted, name="first_done")
    async def first_done(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.emit(SystemNotice, key=f"first_done:{event.requirement_id}", payload=NOTICE)

    conn = FakeConn()
    result = await make_engine(first_done).apply(
        conn, [Message(0, 0, [clean(task_completed("T-1"))]), Message(0, 1, [clean(task_completed("T-2"))])]
    )
    (inserted,) = conn.ran("INSERT INTO rules.emitted")
    assert len(set(inserted[0])) == 1  # the same id twice: PostgreSQL inserts (and returns) it once
    assert len(result.emitted) == 1  # but both rows are kept, to be published


# ---- state ----------------------------------------------------------------------------------------


async def test_state_reads_see_the_handler_s_writes_without_the_database() -> None:
    ctx = invocation(task_completed())
    ctx.state.set("k", {"n": 1})
    assert await ctx.state.get("k") == {"n": 1}
    ctx.state.set(7, [1, 2])  # type: ignore[arg-type]
    assert await ctx.state.get("7") == [1, 2]
    ctx.state.delete("k")
    assert await ctx.state.get("k") is None
    assert await ctx.state.get("k", "fallback") == "fallback"


@pytest.mark.parametrize("value", [object(), {1, 2}, {"x": 1}.keys(), b"bytes", {"nested": [object()]}, {1: "int key"}])
def test_state_refuses_a_value_json_cannot_hold_at_set_time(value: Any) -> None:
    ctx = invocation(task_completed())
    with pytest.raises(TypeError):
        ctx.state.set("k", value)
    assert ctx.state.writes == {}


async def test_state_writes_are_kept_only_if_the_handler_succeeds() -> None:
    conn = FakeConn(state={("r", "k"): "stored before", ("r", "gone"): "stored before"})
    batch = Batch(conn)
    failed = invocation(task_completed(), batch=batch)
    failed.state.set("k", 1)
    await failed.finish(False)
    assert batch.state.values == {} and batch.state.dirty == set()
    succeeded = invocation(task_completed(), batch=batch)
    succeeded.state.set("k", 2)
    succeeded.state.delete("gone")
    await succeeded.finish(True)
    assert batch.state.dirty == {("r", "k"), ("r", "gone")}
    # A later handler of the same rule in the batch reads them without a query.
    later = invocation(task_completed(), batch=batch)
    assert await later.state.get("k") == 2
    assert await later.state.get("gone", "default") == "default"
    assert conn.statements == []


async def test_each_rule_has_its_own_state() -> None:
    conn = FakeConn(state={("b", "k"): "b's"})
    batch = Batch(conn)
    a = invocation(task_completed(), name="a", batch=batch)
    a.state.set("k", "a's")
    await a.finish(True)
    b = invocation(task_completed(), name="b", batch=batch)
    assert await b.state.get("k") == "b's"
    c = invocation(task_completed(), name="c", batch=batch)
    assert await c.state.get("k", 0) == 0
    assert conn.ran(STATE_READ) == [("b", ["k"]), ("c", ["k"])]  # one read each, locked


async def test_state_is_read_once_per_batch_without_a_savepoint() -> None:
    conn = FakeConn(state={("r", "k"): {"n": 1}})
    batch = Batch(conn)
    ctx = invocation(task_completed(), batch=batch)
    assert await ctx.state.get("k") == {"n": 1}
    assert await ctx.state.get("k") == {"n": 1}
    await ctx.finish(True)
    other = invocation(task_completed(), batch=batch)
    assert await other.state.get("k") == {"n": 1}
    assert len(conn.ran(STATE_READ)) == 1
    assert (conn.savepoints, conn.commits, conn.rollbacks) == (0, 0, 0)  # reads cannot fail by themselves


async def test_a_deleted_key_is_deleted_from_the_store() -> None:
    batch = Batch(None)
    ctx = invocation(task_completed(), batch=batch)
    ctx.state.set("kept", 1)
    ctx.state.delete("gone")
    await ctx.finish(True)
    conn = FakeConn()
    await batch.state.flush(conn)
    assert upserted_state(conn) == {("r", "kept"): 1}
    assert conn.ran("DELETE FROM rules.state") == [(["r"], ["gone"])]


async def test_a_rule_that_deletes_a_key_does_not_fail_the_batch() -> None:
    @rule(TaskCompleted, name="forget")
    async def forget(event: TaskCompleted, ctx: RuleContext) -> None:
        assert await ctx.state.get(event.task_id) == {"open": True}
        ctx.state.delete(event.task_id)

    conn = FakeConn(state={("forget", "T-1"): {"open": True}})
    result = await make_engine(forget).apply(conn, [Message(0, 0, [clean(task_completed())])])
    assert result.failures == 0
    assert conn.ran("DELETE FROM rules.state") == [(["forget"], ["T-1"])]
    assert conn.ran("INSERT INTO rules.state") == []


async def test_a_key_set_again_after_a_delete_is_stored() -> None:
    batch = Batch(FakeConn(state={("r", "k"): 1}))
    first = invocation(task_completed(), batch=batch)
    first.state.delete("k")
    await first.finish(True)
    second = invocation(task_completed(), batch=batch)
    assert await second.state.get("k", "none") == "none"
    second.state.set("k", 3)
    await second.finish(True)
    conn = FakeConn()
    await batch.state.flush(conn)
    assert upserted_state(conn) == {("r", "k"): 3}
    assert conn.ran("DELETE FROM rules.state") == []


async def test_flush_upserts_the_written_keys_once() -> None:
    batch = Batch(None)
    ctx = invocation(task_completed(), batch=batch)
    ctx.state.set("a", {"x": [1, "two"]})
    ctx.state.set("b", None)
    await ctx.finish(True)
    conn = FakeConn()
    await batch.state.flush(conn)
    assert upserted_state(conn) == {("r", "a"): {"x": [1, "two"]}, ("r", "b"): None}
    assert batch.state.dirty == set()
    await batch.state.flush(conn)
    assert len(conn.ran("INSERT INTO rules.state")) == 1  # nothing new: no statement


async def test_a_failed_handler_cannot_change_the_state_by_mutating_what_it_read() -> None:
    conn = FakeConn(state={("r", "k"): {"seen": []}})
    batch = Batch(conn)
    failed = invocation(task_completed(), batch=batch)
    seen = await failed.state.get("k")
    seen["seen"].append("from a handler that then raised")
    await failed.finish(False)
    later = invocation(task_completed(), batch=batch)
    assert await later.state.get("k") == {"seen": []}


async def test_what_set_accepted_can_always_be_stored() -> None:
    batch = Batch(None)
    ctx = invocation(task_completed(), batch=batch)
    value: dict[str, Any] = {"n": 1}
    ctx.state.set("k", value)
    value["later"] = object()  # after set: the handler returns normally
    await ctx.finish(True)
    conn = FakeConn()
    await batch.state.flush(conn)
    assert upserted_state(conn) == {("r", "k"): {"n": 1}}


async def test_state_values_are_copies() -> None:
    conn = FakeConn(state={("r", "k"): {"list": [1]}})
    ctx = invocation(task_completed(), batch=Batch(conn))
    got = await ctx.state.get("k")
    got["list"].append(2)
    got["new"] = True
    assert await ctx.state.get("k") == {"list": [1]}  # what is stored did not change
    assert await ctx.state.get("k") is not await ctx.state.get("k")
    written: dict[str, Any] = {"list": [1]}
    ctx.state.set("w", written)
    written["list"].append(2)
    mine = await ctx.state.get("w")
    assert mine == {"list": [1]}  # as it was when set
    mine["list"].append(3)
    assert await ctx.state.get("w") == {"list": [1]}
    await ctx.finish(True)
    assert orjson.loads(ctx.batch.state.values[("r", "w")]) == {"list": [1]}
    assert len(conn.ran(STATE_READ)) == 1


async def test_a_value_stored_as_json_null_is_not_the_default() -> None:
    ctx = invocation(task_completed(), batch=Batch(FakeConn(state={("r", "k"): None})))
    assert await ctx.state.get("k", "default") is None
    assert await ctx.state.get("absent", "default") == "default"


async def test_batch_state_load_reads_and_locks_only_keys_not_read_yet() -> None:
    conn = FakeConn(state={("r", "a"): 1})
    state = BatchState()
    await state.load(conn, "r", ["b", "a", "b"])
    assert conn.ran(STATE_READ) == [("r", ["a", "b"])]  # sorted: locks are taken in key order
    assert state.values == {("r", "a"): b"1", ("r", "b"): b""}
    await state.load(conn, "r", ["a", "b"])
    await state.load(conn, "r", [])
    await state.load(conn, "r", ["c", "a"])
    assert conn.ran(STATE_READ)[1:] == [("r", ["c"])]


async def test_declared_state_keys_are_loaded_in_one_statement_per_rule() -> None:
    @rule(TaskCompleted, name="by_task", state_key=lambda e: e.task_id)
    async def by_task(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.state.set(event.task_id, await ctx.state.get(event.task_id, 0) + 1)

    @rule(TaskCompleted, name="by_pair", state_key=lambda e: [e.task_id, None, "all"])
    async def by_pair(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.state.set("all", [*await ctx.state.get("all", []), await ctx.state.get(event.task_id, event.task_id)])

    @rule(TaskCompleted, name="lazy")
    async def lazy(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.state.set("x", await ctx.state.get("x", 0) + 1)

    @rule(TaskCompleted, name="bad_key", state_key=lambda e: e.payload.no_such_field)
    async def bad_key(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.state.set("y", await ctx.state.get("y", 0) + 1)

    conn = FakeConn(state={("by_task", "T-1"): 5, ("by_pair", "T-2"): "two"})
    events = [task_completed("T-1"), task_completed("T-2"), task_completed("T-1", at=T0 + timedelta(seconds=1))]
    result = await make_engine(by_task, by_pair, lazy, bad_key).apply(
        conn, [Message(0, 0, [clean(events[0]), clean(events[1])]), Message(1, 3, [clean(events[2])])]
    )
    assert result.failures == 0  # a state_key that fails leaves its keys to be read when asked for
    assert conn.ran(STATE_READ) == [
        ("by_pair", ["T-1", "T-2", "all"]),  # one statement per rule, each before any handler runs
        ("by_task", ["T-1", "T-2"]),
        ("lazy", ["x"]),  # undeclared: read when first asked for, then known to the batch
        ("bad_key", ["y"]),
    ]
    assert upserted_state(conn) == {
        ("by_task", "T-1"): 7,
        ("by_task", "T-2"): 1,
        ("by_pair", "all"): ["T-1", "two", "T-1"],
        ("lazy", "x"): 3,
        ("bad_key", "y"): 3,
    }


# ---- context reads ------------------------------------------------------------------------------


def task_row(
    task_id: str,
    status: str,
    at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    requirement_id: str | None = "R",
) -> Task:
    """A ``projections.tasks`` row: ``at``/``event_id`` are the event that set its status (completion, ...)."""
    return Task(
        task_id=task_id,
        title=None,
        status=status,
        status_at=at,
        status_event_id=event_id,
        project_id="P",
        requirement_id=requirement_id,
        parent_task_id=None,
        agent_id=None,
        assignee=None,
        created_at=T0,
        started_at=None,
        completed_at=at if status == "completed" else None,
        completed_event_id=event_id if status == "completed" else None,
        failed_at=at if status == "failed" else None,
        cancelled_at=at if status == "cancelled" else None,
        cancelled_event_id=event_id if status == "cancelled" else None,
        first_seen=T0,
        last_seen=at,
    )


async def test_reads_with_nothing_to_read_do_not_touch_the_database() -> None:
    periodic = invocation(None)
    assert await periodic.task() is None
    assert await periodic.requirement() is None
    assert await periodic.session() is None
    assert await periodic.tasks_of_requirement() == []
    notice_ctx = invocation(notice())  # a notice names no task, requirement or session
    assert await notice_ctx.task() is None
    assert await notice_ctx.tasks_of_requirement() == []


async def test_the_reads_default_to_the_event_s_references() -> None:
    conn = FakeConn()
    ctx = invocation(task_completed(), batch=Batch(conn))  # a batch of no rows: each read names its own id
    assert await ctx.task() is None
    assert await ctx.requirement() is None
    assert await ctx.session("S-other") is None
    assert [args for _, args in conn.statements] == [(["T-1"],), (["R"],), (["S-other"],)]
    assert await ctx.task() is None and await ctx.session("S-other") is None  # not found: known, not read again
    assert len(conn.statements) == 3


async def test_the_first_task_read_loads_every_task_the_batch_names() -> None:
    seen: dict[str, Task | None] = {}

    @rule(TaskCompleted, name="reader")
    async def reader(event: TaskCompleted, ctx: RuleContext) -> None:
        seen[event.task_id] = await ctx.task()
        if event.task_id == "T-2":
            seen["T-9"] = await ctx.task("T-9")  # named by no event of the batch

    tasks = [task_row("T-1", "completed", T0, uuid.uuid4()), task_row("T-3", "in_progress"), task_row("T-9", "failed")]
    conn = FakeConn(tasks=tasks)
    messages = [
        Message(0, 0, [clean(task_completed("T-1")), clean(notice())]),
        Message(1, 0, [clean(task_completed("T-2")), clean(task_created("T-4")), clean(task_completed("T-3"))]),
    ]
    result = await make_engine(reader).apply(conn, messages)
    assert result.failures == 0
    assert seen == {"T-1": tasks[0], "T-2": None, "T-9": tasks[2], "T-3": tasks[1]}
    first, other = conn.ran(TASKS_READ)
    assert sorted(first[0]) == ["T-1", "T-2", "T-3"]  # every task the rules' events name (not T-4's: no rule)
    assert other == (["T-9"],)


async def test_tasks_of_requirement_loads_every_requirement_the_batch_names_at_once() -> None:
    events = [
        task_completed("T-1"),
        task_completed("T-2", requirement_id="R2"),
        task_completed("T-3", requirement_id=None),
    ]
    tasks = [
        task_row("T-1", "completed"),
        task_row("T-5", "pending", requirement_id="R2"),
        task_row("T-6", "pending", requirement_id="R2"),
        task_row("T-7", "pending", requirement_id="R3"),
    ]
    conn = FakeConn(tasks=tasks)
    batch = Batch(conn, [clean(e) for e in events])
    ctx = invocation(events[0], batch=batch)
    assert [t.task_id for t in await ctx.tasks_of_requirement()] == ["T-1"]
    (loaded,) = conn.ran(TASKS_READ)
    assert sorted(loaded[0]) == ["R", "R2"]
    assert sorted(t.task_id for t in await ctx.tasks_of_requirement("R2")) == ["T-5", "T-6"]
    assert await ctx.task("T-5") == tasks[1]  # loaded with its requirement's
    assert len(conn.ran(TASKS_READ)) == 1
    listed = await ctx.tasks_of_requirement("R2")
    listed.clear()  # a copy
    assert len(await ctx.tasks_of_requirement("R2")) == 2
    assert [t.task_id for t in await ctx.tasks_of_requirement("R3")] == ["T-7"]
    assert conn.ran(TASKS_READ)[1:] == [(["R3"],)]


async def test_requirements_and_sessions_are_read_once_for_the_batch() -> None:
    events = [task_completed("T-1"), task_completed("T-2", requirement_id="R2", session_id="S2")]
    requirement = Requirement("R2", "two", "open", "P", T0, None)
    session = Session("S", "P", "A", "T-1", "R", T0, None, 0.5)
    conn = FakeConn(requirements=[requirement], sessions=[session])
    batch = Batch(conn, [clean(e) for e in events])
    first, second = invocation(events[0], batch=batch), invocation(events[1], batch=batch)
    assert await first.requirement() is None
    assert await second.requirement() == requirement
    assert await first.session() == session
    assert await second.session() is None
    (requirements,) = conn.ran("FROM projections.requirements")
    (sessions,) = conn.ran("FROM projections.sessions")
    assert (sorted(requirements[0]), sorted(sessions[0])) == (["R", "R2"], ["S", "S2"])


async def test_a_read_finishes_even_when_its_handler_is_cancelled() -> None:
    gate = asyncio.Event()
    conn = FakeConn(state={("r", "k"): {"n": 1}}, slow_on=STATE_READ, gate=gate)
    batch = Batch(conn)
    ctx = invocation(task_completed(), batch=batch)
    after_read: list[Any] = []

    async def handler() -> None:
        after_read.append(await ctx.state.get("k"))

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handler(), 0.01)
    assert conn.finished == [] and after_read == []  # the handler is gone, its read still runs
    gate.set()
    await batch.settle()
    assert len(conn.finished) == 1  # finished, not cancelled half way (the connection stays usable)
    assert batch.state.values == {("r", "k"): b'{"n":1}'}
    await ctx.finish(False)
    assert await invocation(task_completed(), batch=batch).state.get("k") == {"n": 1}
    assert len(conn.ran(STATE_READ)) == 1 and after_read == []


async def test_a_handler_timed_out_in_a_read_leaves_the_connection_to_the_next_rule() -> None:
    @rule(TaskCompleted, name="slow_reader", timeout_s=0.01)
    async def slow_reader(event: TaskCompleted, ctx: RuleContext) -> None:
        await ctx.task()
        ctx.state.set("never", True)

    @rule(TaskCompleted, name="next_rule")
    async def next_rule(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.state.set("seen", await ctx.state.get("seen", 0) + 1)

    conn = FakeConn(slow_on=TASKS_READ, delay=0.1)
    result = await make_engine(slow_reader, next_rule).apply(conn, [Message(0, 0, [clean(task_completed())])])
    (letter,) = result.emitted
    assert letter.kind == "dead_letter" and letter.rule == "slow_reader"
    assert "did not finish within its time limit" in orjson.loads(letter.value)["error"]
    assert upserted_state(conn) == {("next_rule", "seen"): 1}  # no "another operation is in progress"
    reads = [sql for sql in conn.finished if TASKS_READ in sql or STATE_READ in sql]
    assert [TASKS_READ in sql for sql in reads] == [True, False]  # the slow read finished, then the next one ran


async def test_the_reads_of_a_handler_run_one_at_a_time() -> None:
    event = task_completed()
    conn = FakeConn(tasks=[task_row("T-1", "pending")], slow_on="FROM projections", delay=0.01)
    ctx = invocation(event, batch=Batch(conn, [clean(event)]))
    task, requirement, session, tasks = await asyncio.gather(
        ctx.task(), ctx.requirement(), ctx.session(), ctx.tasks_of_requirement()
    )
    assert task is not None and task.task_id == "T-1"
    assert (requirement, session, [t.task_id for t in tasks]) == (None, None, ["T-1"])
    assert len(conn.finished) == len(conn.statements) == 4  # the fake raises if two overlap


async def test_query_runs_in_a_savepoint_of_its_own() -> None:
    conn = FakeConn(answers={"FROM analytics.good": [{"n": 1}], "FROM analytics.broken": ValueError("no such view")})
    ctx = invocation(task_completed(), batch=Batch(conn))
    assert await ctx.query("SELECT n FROM analytics.good WHERE a = $1", 5) == [{"n": 1}]
    assert conn.ran("FROM analytics.good") == [(5,)]
    with pytest.raises(ValueError, match="no such view"):
        await ctx.query("SELECT * FROM analytics.broken")
    assert (conn.savepoints, conn.commits, conn.rollbacks) == (2, 1, 1)  # the failure rolled back its own only


async def test_cost_names_exactly_one_entity() -> None:
    ctx = invocation(task_completed())
    with pytest.raises(RuleError, match="exactly one"):
        await ctx.cost()
    with pytest.raises(RuleError, match="exactly one"):
        await ctx.cost(task_id="T", project_id="P")


async def test_cost_includes_the_batch_s_calls_up_to_the_event() -> None:
    calls = [
        llm_called(tokens_in=100, task_id="T-1", project_id="P", payload=_llm(100, 0.25)),
        llm_called(tokens_in=50, task_id="T-1", payload=_llm(50, 0.5)),
        llm_called(task_id="T-2", project_id="P", payload=_llm(7, 1.0)),
    ]
    rows = [clean(c) for c in calls]
    conn = FakeConn()
    batch = Batch(conn, rows)
    book = batch.costs
    await book.load(conn, [*rows, clean(task_created())])
    book.add(rows[0])
    ctx = invocation(calls[0], batch=batch)
    cost = await ctx.cost(task_id="T-1")
    assert cost == Cost(1, 100, 5, 0.25)
    book.add(rows[1])
    book.add(rows[2])
    assert await ctx.cost(task_id="T-1") == Cost(2, 150, 10, 0.75)
    assert await ctx.cost(project_id="P") == Cost(2, 107, 10, 1.25)
    assert book.get("project", "P") == Cost(2, 107, 10, 1.25)
    assert book.get("task", "T-9") is None  # not in the batch: read from the store
    assert await ctx.cost(task_id="T-9") == Cost()
    assert conn.ran("FROM rules.llm_cost WHERE scope = $1") == [("task", "T-9")]
    await book.flush(conn)
    (flushed,) = conn.ran("INSERT INTO rules.llm_cost")
    assert list(zip(flushed[0], flushed[1], flushed[2], flushed[5], strict=True)) == [
        ("project", "P", 2, 1.25),
        ("task", "T-1", 2, 0.75),
        ("task", "T-2", 1, 1.0),
    ]


async def test_a_batch_without_llm_calls_loads_no_costs() -> None:
    book = CostBook()
    await book.load(None, [clean(task_created())])  # no database access at all
    assert book.totals == {}
    assert book.get("task", "T-1") is None


# ---- the engine on a batch ------------------------------------------------------------------------


async def test_a_batch_runs_each_rule_on_its_events_and_commits_offsets_with_the_effects() -> None:
    @rule(TaskCompleted, name="count")
    async def count(event: TaskCompleted, ctx: RuleContext) -> None:
        n = await ctx.state.get("n", 0) + 1
        ctx.state.set("n", n)
        ctx.emit(SystemNotice, key=f"n{n}", payload=SystemNoticePayload(component="count", message=str(n)))

    conn = FakeConn(offsets={0: 1, 1: 0})
    engine = make_engine(count)
    old, a, b = task_completed("T-old"), task_completed("T-a"), task_completed("T-b")
    messages = [
        Message(0, 0, [clean(old)]),  # below the stored offset: applied before
        Message(0, 1, [clean(a), clean(task_created())]),
        Message(1, 5, [clean(b)]),
    ]
    result = await engine.apply(conn, messages)
    assert result.skipped_messages == 1
    assert result.invocations == 2 and result.failures == 0
    derived = events_of(result.emitted)
    assert [e.causation_id for e in derived] == [a.event_id, b.event_id]
    assert [e.payload.message for e in derived] == ["1", "2"]  # type: ignore[attr-defined]
    assert upserted_state(conn) == {("count", "n"): 2}
    (offsets,) = conn.ran("UPDATE consumer_offsets")
    assert offsets == ("g-rules", "tp.clean", [0, 1], [2, 6])
    (inserted,) = conn.ran("INSERT INTO rules.emitted")
    assert inserted[0] == [e.event_id for e in result.emitted]
    assert inserted[9] == ["n1", "n2"]
    assert (conn.savepoints, conn.commits, conn.rollbacks) == (1, 1, 0)  # the batch's transaction, no savepoints


async def test_a_batch_already_applied_does_nothing() -> None:
    engine = make_engine(rule(TaskCompleted)(_handler))
    conn = FakeConn(offsets={0: 10})
    result = await engine.apply(conn, [Message(0, 9, [clean(task_completed())])])
    assert (result.skipped_messages, result.invocations, result.emitted) == (1, 0, [])
    assert conn.ran("UPDATE consumer_offsets") == []


async def test_a_row_that_holds_no_event_is_skipped_and_the_batch_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    @rule(TaskCompleted, name="sees")
    async def sees(event: TaskCompleted, ctx: RuleContext) -> None:
        seen.append(event.task_id)

    broken = clean(task_completed("T-0"))._replace(task_id=None)  # a task.completed without its task
    conn = FakeConn()
    with caplog.at_level(logging.WARNING, logger="devtrail.consumers.rules.engine"):
        result = await make_engine(sees).apply(conn, [Message(3, 7, [broken, clean(task_completed("T-1"))])])
    assert seen == ["T-1"] and (result.invocations, result.failures, result.emitted) == (1, 0, [])
    assert f"clean row {broken.event_id} at 3/7 is not an event; skipped" in caplog.text
    (depths,) = conn.ran("FROM rules.emitted")
    assert len(depths[0]) == 1  # only the row that holds an event
    (offsets,) = conn.ran("UPDATE consumer_offsets")
    assert offsets[2:] == ([3], [8])


async def test_a_failing_rule_loses_its_effects_and_is_dead_lettered_alone() -> None:
    @rule(TaskCompleted, name="fails")
    async def fails(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.state.set("k", "never stored")
        ctx.emit(SystemNotice, payload=NOTICE)
        raise ValueError(f"cannot handle {event.task_id}")

    @rule(TaskCompleted, name="works")
    async def works(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.state.set("k", "stored")
        ctx.emit(SystemNotice, payload=NOTICE)

    conn = FakeConn()
    event = task_completed()
    row = clean(event)
    result = await make_engine(fails, works).apply(conn, [Message(2, 40, [clean(task_created()), row])])
    assert (result.invocations, result.failures) == (2, 1)
    letter, derived = result.emitted
    assert letter.kind == "dead_letter" and letter.rule == "fails" and letter.event_type is None
    assert letter.topic == "tp.dead-letters" and letter.key == b"tp.clean:2"
    assert letter.event_id == derived_id("fails", str(event.event_id), "dead-letter", row.occurred_at)
    assert (letter.cause_id, letter.depth, letter.emit_key) == (event.event_id, 0, None)
    body = orjson.loads(letter.value)
    assert body["error_kind"] == "rule"
    assert body["error"] == "rule fails raised ValueError: cannot handle T-1"
    assert (body["source_topic"], body["source_partition"], body["source_offset"]) == ("tp.clean", 2, 40)
    assert body["event_index"] == 1
    assert (body["event_id"], body["event_type"]) == (str(event.event_id), "task.completed")
    assert body["errors"] == [{"loc": ["rule"], "msg": "fails", "type": "ValueError"}]
    assert orjson.loads(body["original"])["event_id"] == str(event.event_id)
    assert derived.rule == "works"
    assert upserted_state(conn) == {("works", "k"): "stored"}


async def test_a_slow_rule_is_dead_lettered_for_its_time_limit() -> None:
    @rule(TaskCompleted, name="slow", timeout_s=0.01)
    async def slow(event: TaskCompleted, ctx: RuleContext) -> None:
        await asyncio.sleep(5)

    @rule(TaskCompleted, name="default_limit")
    async def uses_engine_limit(event: TaskCompleted, ctx: RuleContext) -> None:
        await asyncio.sleep(5)

    result = await make_engine(slow, uses_engine_limit, timeout_s=0.02).apply(
        FakeConn(), [Message(0, 0, [clean(task_completed())])]
    )
    assert result.failures == 2
    errors = [orjson.loads(e.value)["error"] for e in result.emitted]
    assert errors == [
        "rule slow did not finish within its time limit",
        "rule default_limit did not finish within its time limit",
    ]


async def test_a_rule_sees_the_state_its_earlier_invocations_wrote_in_the_batch() -> None:
    @rule(TaskCompleted, name="ids")
    async def ids(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.state.set("ids", [*await ctx.state.get("ids", []), event.task_id])

    conn = FakeConn(state={("ids", "ids"): ["T-0"]})
    await make_engine(ids).apply(
        conn, [Message(0, 0, [clean(task_completed("T-1"))]), Message(0, 1, [clean(task_completed("T-2"))])]
    )
    assert upserted_state(conn) == {("ids", "ids"): ["T-0", "T-1", "T-2"]}
    assert len(conn.ran(STATE_READ)) == 1  # read once


async def test_derived_events_already_in_the_outbox_are_not_published_again() -> None:
    @rule(TaskCompleted, name="once")
    async def once(event: TaskCompleted, ctx: RuleContext) -> None:
        ctx.emit(SystemNotice, key="k", payload=NOTICE)
        ctx.emit(SystemNotice, key="other", payload=NOTICE)
        ctx.emit(SystemNotice, key="taken", payload=NOTICE)

    event = task_completed()
    known = derived_id("once", None, "k", event.occurred_at)
    conn = FakeConn(already_emitted={known}, already_keyed={("once", "taken")})
    result = await make_engine(once).apply(conn, [Message(0, 0, [clean(event)])])
    assert [e.event_id for e in result.emitted] == [derived_id("once", None, "other", T0)]


async def test_a_chain_of_rules_stops_at_the_depth_limit() -> None:
    @rule(SystemNotice, name="ping")
    async def ping(event: SystemNotice, ctx: RuleContext) -> None:
        ctx.emit(SystemNotice, payload=NOTICE)

    engine = make_engine(ping, max_depth=2)
    original = notice()
    first = await engine.apply(FakeConn(), [Message(0, 0, [clean(original)])])
    (d1,) = first.emitted
    assert d1.depth == 1
    e1 = events_of([d1])[0]
    second = await engine.apply(FakeConn(depths={str(e1.event_id): 1}), [Message(0, 1, [clean(e1)])])
    (d2,) = second.emitted
    assert d2.depth == 2
    e2 = events_of([d2])[0]
    third = await engine.apply(FakeConn(depths={str(e2.event_id): 2}), [Message(0, 2, [clean(e2)])])
    (letter,) = third.emitted
    assert letter.kind == "dead_letter" and letter.depth == 2
    assert "rules_max_depth is 2" in orjson.loads(letter.value)["error"]


async def test_a_derived_event_missing_from_the_outbox_ends_its_chain() -> None:
    @rule(SystemNotice, name="ping")
    async def ping(event: SystemNotice, ctx: RuleContext) -> None:
        ctx.emit(SystemNotice, payload=NOTICE)

    pruned = notice(source=SOURCE_PREFIX + "ping")  # derived long ago: its row was pruned
    result = await make_engine(ping, max_depth=3).apply(FakeConn(), [Message(0, 0, [clean(pruned)])])
    assert [e.kind for e in result.emitted] == ["dead_letter"]


async def test_a_derived_event_with_a_source_of_its_own_still_counts_towards_the_depth() -> None:
    # emit(built_event) keeps the built event's source, and emit(cls, source=...) is allowed.
    @rule(SystemNotice, name="ping")
    async def ping(event: SystemNotice, ctx: RuleContext) -> None:
        ctx.emit(SystemNotice(source="pinger", payload=NOTICE))

    engine = make_engine(ping, max_depth=2)
    derived = events_of((await engine.apply(FakeConn(), [Message(0, 0, [clean(notice())])])).emitted)[0]
    assert derived.source == "pinger"
    at_limit = FakeConn(depths={str(derived.event_id): 2})  # rules.emitted knows its depth
    result = await engine.apply(at_limit, [Message(0, 1, [clean(derived)])])
    assert [e.kind for e in result.emitted] == ["dead_letter"]


async def test_the_depths_of_every_dispatched_row_are_read_in_one_statement() -> None:
    @rule(SystemNotice, name="ping")
    async def ping(event: SystemNotice, ctx: RuleContext) -> None:
        ctx.emit(SystemNotice, payload=NOTICE)

    producer, own_source, pruned, known = (
        notice(),
        notice(source="pinger"),  # not in the outbox and not ours by its source: a producer's, depth 0
        notice(source=SOURCE_PREFIX + "ping"),  # ours, not in the outbox (pruned): its chain ends
        notice(source="anything"),
    )
    conn = FakeConn(depths={str(known.event_id): 1})
    rows = [clean(producer), clean(task_created()), clean(own_source), clean(pruned), clean(known)]
    result = await make_engine(ping, max_depth=3).apply(conn, [Message(0, 0, rows)])
    (looked_up,) = conn.ran("FROM rules.emitted")
    assert looked_up == ([str(e.event_id) for e in (producer, own_source, pruned, known)],)  # not the task's
    assert [(e.kind, e.depth) for e in result.emitted] == [("event", 1), ("event", 1), ("dead_letter", 3), ("event", 2)]


async def test_a_periodic_rule_runs_alone_and_keeps_its_effects_only_if_it_succeeds() -> None:
    @every(1, name="tick")
    async def tick(ctx: RuleContext) -> None:
        ctx.state.set("runs", await ctx.state.get("runs", 0) + 1)
        ctx.emit(SystemNotice, key="k", payload=NOTICE)

    @every(1, name="broken")
    async def broken(ctx: RuleContext) -> None:
        ctx.state.set("x", 1)
        ctx.emit(SystemNotice, key="k", payload=NOTICE)
        raise RuntimeError("boom")

    engine = make_engine(tick, broken)
    conn = FakeConn(state={("tick", "runs"): 4})
    emitted = await engine.run_periodic(conn, tick)
    assert emitted is not None and [(e.rule, e.emit_key) for e in emitted] == [("tick", "k")]
    assert upserted_state(conn) == {("tick", "runs"): 5}
    # The next run emits the same key again, at another time: rules.emitted keeps the first.
    assert await engine.run_periodic(conn, tick) == []
    conn = FakeConn()
    assert await engine.run_periodic(conn, broken) == []
    assert conn.ran("INSERT INTO rules.state") == [] and conn.ran("INSERT INTO rules.emitted") == []


# ---- built-in rules ---------------------------------------------------------------------------------

ALL_BUILTIN = ["requirement_rollup", "lifecycle_checks", "lifecycle_orphans", "stalled_tasks", "error_burst"]


def names(rules: list[Rule | PeriodicRule]) -> list[str]:
    return [r.name for r in rules]


@pytest.mark.parametrize("chosen", ["none", "", "  NONE "])
def test_no_builtin_rules(chosen: str) -> None:
    assert builtin_rules(RulesSettings(rules_builtin=chosen)) == []


def test_all_builtin_rules() -> None:
    assert names(builtin_rules(RulesSettings(rules_builtin="all"))) == [*ALL_BUILTIN, "traceability"]
    assert names(builtin_rules(RulesSettings())) == [*ALL_BUILTIN, "traceability"]  # the default
    with_budget = builtin_rules(RulesSettings(rules_builtin=" All ", llm_budget_project_usd=10))
    assert names(with_budget) == [*ALL_BUILTIN, "llm_budget", "traceability"]
    make_engine(*with_budget)  # names unique


def test_builtin_rules_by_name() -> None:
    chosen = builtin_rules(RulesSettings(rules_builtin=" error_burst, Stalled_Tasks ,,"))
    assert names(chosen) == ["stalled_tasks", "error_burst"]


def test_an_unknown_builtin_rule_is_named_with_the_known_ones() -> None:
    with pytest.raises(RuleError, match=r"unknown rules \['nope'\]; known: requirement_rollup, .*traceability"):
        builtin_rules(RulesSettings(rules_builtin="error_burst,nope"))


def test_llm_budget_runs_only_with_a_budget_and_thresholds() -> None:
    assert "llm_budget" not in names(builtin_rules(RulesSettings(rules_builtin="llm_budget")))
    for budget in ("llm_budget_task_usd", "llm_budget_requirement_usd", "llm_budget_project_usd"):
        fields: dict[str, Any] = {budget: 5.0}
        settings = RulesSettings(rules_builtin="llm_budget", **fields)
        assert names(builtin_rules(settings)) == ["llm_budget"]
    no_thresholds = RulesSettings(rules_builtin="all", llm_budget_task_usd=5.0, llm_budget_thresholds=" , ")
    assert "llm_budget" not in names(builtin_rules(no_thresholds))


@pytest.mark.parametrize(
    ("flag", "removed"),
    [
        ("requirement_rollup_enabled", {"requirement_rollup"}),
        ("lifecycle_checks_enabled", {"lifecycle_checks", "lifecycle_orphans"}),
        ("stalled_tasks_enabled", {"stalled_tasks"}),
        ("error_burst_enabled", {"error_burst"}),
        ("traceability_enabled", {"traceability"}),
    ],
)
def test_each_enabled_flag_removes_its_rule(flag: str, removed: set[str]) -> None:
    everything = set(names(builtin_rules(RulesSettings(llm_budget_task_usd=1.0))))
    off: dict[str, Any] = {flag: False}
    without = set(names(builtin_rules(RulesSettings(llm_budget_task_usd=1.0, **off))))
    assert everything - without == removed
    assert without <= everything


def test_builtin_names_are_the_documented_ones() -> None:
    assert BUILTIN == (
        "requirement_rollup",
        "lifecycle_checks",
        "stalled_tasks",
        "error_burst",
        "llm_budget",
        "traceability",
    )


def test_builtin_timers_follow_the_check_interval() -> None:
    rules_ = builtin_rules(RulesSettings(rules_check_interval_s=7.5))
    assert {r.name: r.interval_s for r in rules_ if isinstance(r, PeriodicRule)} == {
        "lifecycle_orphans": 7.5,
        "stalled_tasks": 7.5,
        "traceability": 7.5,
    }


def test_the_builtin_event_rules_declare_their_state_keys() -> None:
    settings: dict[str, Any] = {"llm_budget_task_usd": 1.0, "llm_budget_project_usd": 9.0}
    call = llm_called(task_id="T-1", project_id="P", requirement_id="R")
    assert builtin("requirement_rollup").state_key(task_completed()) == ["R"]
    assert builtin("lifecycle_checks").state_key(task_completed("T-4")) == ["T-4"]
    error = AgentErrorReported(source="a", agent_id="a-7", payload=AgentErrorPayload(error_type="E", message="m"))
    assert builtin("error_burst").state_key(error) == ["a-7"]
    assert builtin("llm_budget", **settings).state_key(call) == ["task:T-1", "project:P"]  # budgets set only


async def test_lifecycle_checks_count_a_completion_read_twice_once() -> None:
    # The rule tolerates the same task.completed twice (a copy the processor's dedup window let
    # through): no alert, and the next completion is the second, keyed completed_twice:T-1:1.
    checks = builtin("lifecycle_checks")
    batch = Batch(FakeConn())
    first, second = task_completed("T-1", at=T0), task_completed("T-1", at=T0 + timedelta(minutes=1))
    alerts: list[AlertRaised] = []
    for event in (first, first, second):
        ctx = invocation(event, name="lifecycle_checks", batch=batch)
        await checks(event, ctx)
        await ctx.finish(True)
        alerts += [a for a in events_of(rows_of(ctx)) if isinstance(a, AlertRaised)]
    (alert,) = alerts
    assert alert.payload.evidence["completions"] == 2
    assert alert.event_id == derived_id("lifecycle_checks", None, "completed_twice:T-1:1", second.occurred_at)


async def test_error_burst_alerts_once_per_window() -> None:
    settings = RulesSettings(rules_builtin="error_burst", error_burst_count=3, error_burst_window_s=60)
    (burst,) = builtin_rules(settings)
    assert isinstance(burst, Rule)
    batch = Batch(FakeConn())
    alerts: list[AlertRaised] = []
    for i in range(7):
        event = AgentErrorReported(
            source="a",
            agent_id="a-7",
            occurred_at=T0 + timedelta(seconds=i),
            payload=AgentErrorPayload(error_type="Boom", message="boom"),
        )
        ctx = invocation(event, name="error_burst", batch=batch)
        await burst(event, ctx)
        await ctx.finish(True)
        alerts += [a for a in events_of(rows_of(ctx)) if isinstance(a, AlertRaised)]
    (only,) = alerts
    assert only.payload.subject_id == "a-7" and only.payload.evidence["errors"] == 3
    assert only.occurred_at == T0 + timedelta(seconds=2)


class Projected(Invocation):
    """An invocation whose projection reads return the rows given (state and costs as usual)."""

    def __init__(
        self,
        name: str,
        cause: Envelope,
        tasks: list[Task],
        requirement: Requirement | None = None,
        batch: Batch | None = None,
    ) -> None:
        super().__init__(batch or Batch(FakeConn()), name, EMITTER, cause)
        self.tasks = tasks
        self.the_requirement = requirement

    async def task(self, task_id: str | None = None) -> Task | None:
        wanted = task_id or getattr(self.cause, "task_id", None)
        return next((t for t in self.tasks if t.task_id == wanted), None)

    async def requirement(self, requirement_id: str | None = None) -> Requirement | None:
        return self.the_requirement

    async def tasks_of_requirement(self, requirement_id: str | None = None) -> list[Task]:
        return list(self.tasks)


def builtin(name: str, **settings: Any) -> Rule:
    (found,) = [r for r in builtin_rules(RulesSettings(**settings)) if r.name == name]
    assert isinstance(found, Rule)
    return found


def t1_failed_an_hour_in() -> TaskFailed:
    return TaskFailed(
        source="ci",
        task_id="T-1",
        requirement_id="R",
        occurred_at=T0 + timedelta(hours=1),
        payload=TaskFailedPayload(error="e"),
    )


async def test_requirement_rollup_completes_at_the_last_task_and_reopens_once_per_round() -> None:
    rollup = builtin("requirement_rollup")
    e1, e2 = uuid.uuid4(), uuid.uuid4()
    done = [
        task_row("T-1", "completed", T0 + timedelta(minutes=1), e1),
        task_row("T-2", "cancelled", T0 + timedelta(minutes=2), e2),
        task_row("T-3", "completed", T0 + timedelta(seconds=30), uuid.uuid4()),
    ]
    batch = Batch(FakeConn())

    async def run(cause: Envelope, tasks: list[Task], requirement: Requirement | None = None) -> list[Envelope]:
        ctx = Projected("requirement_rollup", cause, tasks, requirement, batch)
        await rollup(cause, ctx)
        await ctx.finish(True)
        return events_of(rows_of(ctx))

    cause = task_completed("T-3", at=T0 + timedelta(minutes=5))  # sees the projections with all three done
    (completed,) = await run(cause, done)
    assert completed.event_type == "requirement.completed"  # type: ignore[attr-defined]
    assert completed.occurred_at == T0 + timedelta(minutes=2)  # the last one to finish, a cancellation
    assert completed.causation_id == e2
    assert completed.event_id == derived_id("requirement_rollup", None, "completed:R:0", T0 + timedelta(minutes=2))
    assert (completed.requirement_id, completed.task_id, completed.agent_id, completed.session_id) == (
        "R",
        None,
        None,
        None,
    )
    assert completed.payload.tasks_completed == 2  # type: ignore[attr-defined]
    # Another event seeing the same projections: nothing more.
    assert await run(task_completed("T-1"), done) == []
    # A task fails: reopened, once.
    failing = t1_failed_an_hour_in()
    reopened_tasks = [task_row("T-1", "failed", T0 + timedelta(hours=1)), *done[1:]]
    (reopened,) = await run(failing, reopened_tasks)
    assert reopened.event_type == "requirement.reopened"  # type: ignore[attr-defined]
    assert reopened.payload.task_id == "T-1"  # type: ignore[attr-defined]
    assert "task T-1 is failed after the requirement was completed" in reopened.payload.reason  # type: ignore[attr-defined]
    assert await run(failing, reopened_tasks) == []
    # Done again: a second round, whatever the requirement's status says.
    again = [task_row("T-1", "completed", T0 + timedelta(hours=2), uuid.uuid4()), *done[1:]]
    marked = Requirement("R", None, "completed", "P", T0, T0 + timedelta(minutes=2))
    (second,) = await run(task_completed("T-1", at=T0 + timedelta(hours=2)), again, marked)
    assert second.event_id == derived_id("requirement_rollup", None, "completed:R:1", T0 + timedelta(hours=2))


async def test_requirement_rollup_dates_a_reopening_after_the_completion_it_undoes() -> None:
    """A task created before the completion but read after it (another partition, later): the
    reopening comes just after the completion, and the next completion just after the reopening,
    so the requirements projection (latest ``occurred_at`` wins) ends with the right status."""
    rollup = builtin("requirement_rollup")
    batch = Batch(FakeConn())

    async def run(cause: Envelope, tasks: list[Task]) -> list[Envelope]:
        ctx = Projected("requirement_rollup", cause, tasks, None, batch)
        await rollup(cause, ctx)
        await ctx.finish(True)
        return events_of(rows_of(ctx))

    two_done = [
        task_row("T-1", "completed", T0 + timedelta(minutes=4), uuid.uuid4()),
        task_row("T-2", "completed", T0 + timedelta(minutes=5), uuid.uuid4()),
    ]
    (completed,) = await run(task_completed("T-2", at=T0 + timedelta(minutes=5)), two_done)
    assert completed.occurred_at == T0 + timedelta(minutes=5)
    late = task_created("T-3", at=T0 + timedelta(minutes=1))  # created first, read last
    (reopened,) = await run(late, [*two_done, task_row("T-3", "pending")])
    assert reopened.event_type == "requirement.reopened"  # type: ignore[attr-defined]
    assert reopened.occurred_at == completed.occurred_at + timedelta(microseconds=1)
    # T-3 completed at minute 3, still before the reopening: the second completion follows it.
    three_done = [*two_done, task_row("T-3", "completed", T0 + timedelta(minutes=3), uuid.uuid4())]
    (second,) = await run(task_completed("T-3", at=T0 + timedelta(minutes=3)), three_done)
    assert second.event_type == "requirement.completed"  # type: ignore[attr-defined]
    assert second.occurred_at == reopened.occurred_at + timedelta(microseconds=1)
    assert second.event_id == derived_id("requirement_rollup", None, "completed:R:1", second.occurred_at)
    # A reopening caused by an event later than everything keeps its own time.
    failing = t1_failed_an_hour_in()
    (again,) = await run(failing, [task_row("T-1", "failed", T0 + timedelta(hours=1)), *three_done[1:]])
    assert again.occurred_at == T0 + timedelta(hours=1)


async def test_requirement_rollup_leaves_alone_what_is_not_done_or_already_completed() -> None:
    rollup = builtin("requirement_rollup")
    cause = task_completed("T-1")
    open_ = [task_row("T-1", "completed", T0, uuid.uuid4()), task_row("T-2", "in_progress")]
    ctx = Projected("requirement_rollup", cause, open_)
    await rollup(cause, ctx)
    assert ctx.emitted == []
    only_cancelled = Projected("requirement_rollup", cause, [task_row("T-1", "cancelled", T0, uuid.uuid4())])
    await rollup(cause, only_cancelled)
    assert only_cancelled.emitted == []  # at least one completed
    by_producer = Requirement("R", None, "completed", "P", T0, T0)
    ctx = Projected("requirement_rollup", cause, [task_row("T-1", "completed", T0, uuid.uuid4())], by_producer)
    await rollup(cause, ctx)
    assert ctx.emitted == []
    assert writes_of(ctx) == {("requirement_rollup", "R"): {"round": 0, "completed": True, "at": T0.isoformat()}}
    no_requirement = task_completed("T-9", requirement_id=None)
    ctx = Projected("requirement_rollup", no_requirement, [])
    await rollup(no_requirement, ctx)
    assert ctx.emitted == [] and ctx.state.writes == {}


def by_status_change(task: Task) -> Task:
    """The task as ``task.status_changed`` to its status left it: no completion or cancellation of its own."""
    return dataclasses.replace(
        task, completed_at=None, completed_event_id=None, cancelled_at=None, cancelled_event_id=None
    )


async def test_requirement_rollup_completes_tasks_completed_by_a_status_change() -> None:
    # projections.tasks: a task.status_changed to completed sets the status (and status_at,
    # status_event_id), not completed_at or completed_event_id, and the rollup reacts to it.
    rollup = builtin("requirement_rollup")
    changed = uuid.uuid4()
    cause = TaskStatusChanged(
        source="board",
        task_id="T-2",
        requirement_id="R",
        occurred_at=T0 + timedelta(minutes=3),
        payload=TaskStatusChangedPayload(from_status=TaskStatus.IN_PROGRESS, to_status=TaskStatus.COMPLETED),
    )
    tasks = [
        by_status_change(task_row("T-1", "completed", T0, uuid.uuid4())),
        by_status_change(task_row("T-2", "completed", T0 + timedelta(minutes=3), changed)),
    ]
    ctx = Projected("requirement_rollup", cause, tasks)
    await rollup(cause, ctx)
    (completed,) = events_of(rows_of(ctx))
    assert completed.event_type == "requirement.completed"  # type: ignore[attr-defined]
    assert completed.occurred_at == T0 + timedelta(minutes=3)  # the last status change
    assert completed.causation_id == changed


async def test_requirement_rollup_dates_a_completion_by_status_change_after_a_reopening_at_that_change() -> None:
    rollup = builtin("requirement_rollup")
    first_completion, moved = uuid.uuid4(), uuid.uuid4()
    # Round 0 completed, then T-1 failed: reopened (round 1). Now the board moves T-1 to completed:
    # status_at is that change, completed_at still the task.completed of round 0 (projections keep it).
    reopened = FakeConn(state={("requirement_rollup", "R"): {"round": 1, "completed": False}})
    t1 = dataclasses.replace(
        task_row("T-1", "completed", T0 + timedelta(hours=3), moved),
        completed_at=T0 + timedelta(minutes=1),
        completed_event_id=first_completion,
    )
    tasks = [t1, task_row("T-2", "completed", T0, uuid.uuid4())]
    cause = TaskStatusChanged(
        source="board",
        task_id="T-1",
        requirement_id="R",
        occurred_at=T0 + timedelta(hours=3),
        payload=TaskStatusChangedPayload(from_status=TaskStatus.FAILED, to_status=TaskStatus.COMPLETED),
    )
    ctx = Projected("requirement_rollup", cause, tasks, batch=Batch(reopened))
    await rollup(cause, ctx)
    (completed,) = events_of(rows_of(ctx))
    assert completed.event_id == derived_id("requirement_rollup", None, "completed:R:1", completed.occurred_at)
    assert completed.occurred_at == T0 + timedelta(hours=3)  # is T0 + 1 min: before the reopening (round 0's)
    assert completed.causation_id == moved  # is the round-0 completion's id


async def test_lifecycle_checks_flag_double_completions_and_starts_after_completion() -> None:
    checks = builtin("lifecycle_checks")
    batch = Batch(FakeConn())

    async def run(event: Envelope) -> list[dict[str, Any]]:
        ctx = invocation(event, name="lifecycle_checks", batch=batch)
        await checks(event, ctx)
        await ctx.finish(True)
        return [a.payload.evidence for a in events_of(rows_of(ctx)) if isinstance(a, AlertRaised)]

    start = TaskStarted(source="a", task_id="T-1", occurred_at=T0)
    done = task_completed("T-1", at=T0 + timedelta(minutes=1))
    assert await run(start) == []
    assert await run(done) == []
    (twice,) = await run(task_completed("T-1", at=T0 + timedelta(minutes=2)))
    assert (twice["check"], twice["completions"], twice["first_completion"]) == (
        "completed_twice",
        2,
        str(done.event_id),
    )
    (restarted,) = await run(TaskStarted(source="a", task_id="T-1", occurred_at=T0 + timedelta(minutes=3)))
    assert restarted["check"] == "started_after_completed"
    late_start = TaskStarted(source="a", task_id="T-2", occurred_at=T0 + timedelta(minutes=5))
    assert await run(late_start) == []
    (early,) = await run(task_completed("T-2", at=T0))
    assert early["check"] == "completed_before_started"


async def test_llm_budget_alerts_once_per_threshold_crossed() -> None:
    budget = builtin("llm_budget", llm_budget_task_usd=1.0, llm_budget_thresholds="0.5,1.0")
    calls = [llm_called(task_id="T-s", payload=_llm(10, 0.3)) for _ in range(4)]
    rows = [clean(c) for c in calls]
    batch = Batch(FakeConn(), rows)
    await batch.costs.load(batch.conn, rows)
    crossed: list[tuple[float, str]] = []
    for call, row in zip(calls, rows, strict=True):
        batch.costs.add(row)
        ctx = invocation(call, name="llm_budget", batch=batch)
        await budget(call, ctx)
        await ctx.finish(True)
        crossed += [(a.payload.evidence["threshold"], a.payload.severity) for a in events_of(rows_of(ctx))]  # type: ignore[attr-defined]
    assert crossed == [(0.5, "warning"), (1.0, "error")]


async def test_llm_budget_alerts_only_the_highest_threshold_one_call_crosses() -> None:
    budget = builtin("llm_budget", llm_budget_task_usd=1.0, llm_budget_thresholds="0.5,0.8,1.0")
    call = llm_called(task_id="T-s", payload=_llm(10, 5.0))
    batch = Batch(FakeConn(), [clean(call)])
    await batch.costs.load(batch.conn, [clean(call)])
    batch.costs.add(clean(call))
    ctx = invocation(call, name="llm_budget", batch=batch)
    await budget(call, ctx)
    (alert,) = events_of(rows_of(ctx))
    assert isinstance(alert, AlertRaised) and alert.payload.evidence["threshold"] == 1.0


async def test_builtin_rules_through_the_engine_read_their_declared_keys_once() -> None:
    settings: dict[str, Any] = {"rules_builtin": "lifecycle_checks,error_burst"}
    engine = make_engine(*builtin_rules(RulesSettings(**settings)))
    errors = [
        AgentErrorReported(
            source="a", agent_id=f"a-{i % 2}", occurred_at=T0, payload=AgentErrorPayload(error_type="E", message="m")
        )
        for i in range(4)
    ]
    starts = [TaskStarted(source="a", task_id=f"T-{i}", occurred_at=T0) for i in range(3)]
    conn = FakeConn()
    result = await engine.apply(conn, [Message(0, 0, [clean(e) for e in [*errors, *starts]])])
    assert result.failures == 0
    assert conn.ran(STATE_READ) == [("error_burst", ["a-0", "a-1"]), ("lifecycle_checks", ["T-0", "T-1", "T-2"])]


# ---- loading rules modules ------------------------------------------------------------------------


@pytest.fixture
def fresh_modules() -> Iterator[list[str]]:
    """Module names a test imports; forgotten afterwards."""
    loaded: list[str] = []
    yield loaded
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.fixture
def rules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))  # sys.path is restored afterwards (load_rules may add the cwd)
    return tmp_path


def write_module(directory: Path, text: str) -> str:
    name = f"rules_{uuid.uuid4().hex[:12]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(text))
    importlib.invalidate_caches()
    return name


def test_a_module_that_cannot_be_imported_is_named(rules_dir: Path) -> None:
    settings = RulesSettings(rules_builtin="none", rules="no_such_rules_module_x1")
    with pytest.raises(RuleError, match="'no_such_rules_module_x1', which cannot be imported"):
        load_rules(settings)


def test_a_module_that_fails_to_import_is_named_with_its_error(rules_dir: Path, fresh_modules: list[str]) -> None:
    name = write_module(rules_dir, "raise RuntimeError('broken on purpose')\n")
    fresh_modules.append(name)
    with pytest.raises(RuleError, match=f"{name}.*broken on purpose"):
        load_rules(RulesSettings(rules_builtin="none", rules=name))


def test_a_module_declaring_a_rule_wrongly_is_refused(rules_dir: Path, fresh_modules: list[str]) -> None:
    name = write_module(
        rules_dir,
        """
        from devtrail.rules import rule
        from devtrail.schemas.events import TaskCompleted

        @rule(TaskCompleted)
        def not_async(event, ctx):
            pass
        """,
    )
    fresh_modules.append(name)
    with pytest.raises(RuleError, match="async def"):
        load_rules(RulesSettings(rules_builtin="none", rules=name))


def test_a_module_without_rules_is_refused(rules_dir: Path, fresh_modules: list[str]) -> None:
    name = write_module(rules_dir, "X = 1\n")
    fresh_modules.append(name)
    with pytest.raises(RuleError, match=f"module {name} defines no @rule or @every handler"):
        load_rules(RulesSettings(rules_builtin="none", rules=name))


def test_rules_modules_load_after_the_builtin_ones(rules_dir: Path, fresh_modules: list[str]) -> None:
    one = write_module(
        rules_dir,
        """
        from devtrail.rules import RuleContext, every, rule
        from devtrail.schemas.events import TaskCompleted

        @rule(TaskCompleted)
        async def mine(event: TaskCompleted, ctx: RuleContext) -> None:
            pass

        @every(30, name="my_timer")
        async def timer(ctx: RuleContext) -> None:
            pass
        """,
    )
    two = write_module(
        rules_dir,
        """
        from devtrail.rules import rule
        from devtrail.schemas.events import SystemNotice

        @rule(SystemNotice)
        async def theirs(event, ctx):
            pass
        """,
    )
    fresh_modules += [one, two]
    loaded = load_rules(RulesSettings(rules_builtin="error_burst", rules=f" {one} ,{two},"))
    assert names(loaded) == ["error_burst", "mine", "my_timer", "theirs"]
    engine = make_engine(*loaded)
    assert [r.name for r in engine.dispatch["task.completed"]] == ["mine"]
    assert [r.name for r in engine.periodic_rules] == ["my_timer"]


def test_rules_in_skips_the_rules_a_module_imports(rules_dir: Path, fresh_modules: list[str]) -> None:
    one = write_module(
        rules_dir,
        """
        from devtrail.rules import rule
        from devtrail.schemas.events import TaskCompleted

        @rule(TaskCompleted)
        async def mine(event, ctx):
            pass
        """,
    )
    two = write_module(
        rules_dir,
        f"""
        from devtrail.rules import rule
        from devtrail.schemas.events import SystemNotice
        from {one} import mine

        @rule(SystemNotice)
        async def theirs(event, ctx):
            pass
        """,
    )
    listed = write_module(rules_dir, f"from {one} import mine\nRULES = [mine]\n")
    fresh_modules += [one, two, listed]
    assert names(rules_in(importlib.import_module(two))) == ["theirs"]
    assert names(rules_in(importlib.import_module(listed))) == ["mine"]  # what RULES lists is the module's
    # Both modules listed: each rule once (it would otherwise be loaded twice, and refused).
    assert names(load_rules(RulesSettings(rules_builtin="none", rules=f"{one},{two}"))) == ["mine", "theirs"]
    assert names(load_rules(RulesSettings(rules_builtin="none", rules=two))) == ["theirs"]


def test_rules_in_keeps_a_rule_a_module_makes_from_an_imported_handler(
    rules_dir: Path, fresh_modules: list[str]
) -> None:
    library = write_module(rules_dir, "async def shared(event, ctx):\n    pass\n")
    rules_module = write_module(
        rules_dir,
        f"""
        from devtrail.rules import rule
        from devtrail.schemas.events import SystemNotice, TaskCompleted
        from {library} import shared

        on_completed = rule(TaskCompleted, name="on_completed")(shared)

        @rule(SystemNotice)
        async def native(event, ctx):
            pass
        """,
    )
    fresh_modules += [library, rules_module]
    loaded = load_rules(RulesSettings(rules_builtin="none", rules=rules_module))
    assert names(loaded) == ["on_completed", "native"]  # is ["native"], and no error says so


def test_no_rules_modules_loads_the_builtin_rules_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert load_rules(RulesSettings(rules_builtin="none", rules=" , ")) == []


def test_load_rules_refuses_a_user_rule_named_like_a_builtin(rules_dir: Path, fresh_modules: list[str]) -> None:
    name = write_module(
        rules_dir,
        """
        from devtrail.rules import rule
        from devtrail.schemas.events import SystemNotice

        @rule(SystemNotice, name="error_burst")
        async def clash(event, ctx):
            pass
        """,
    )
    fresh_modules.append(name)
    with pytest.raises(RuleError, match="two rules are named error_burst: give one a name="):
        load_rules(RulesSettings(rules_builtin="error_burst", rules=name))


def test_load_rules_refuses_two_user_rules_of_one_name(rules_dir: Path, fresh_modules: list[str]) -> None:
    text = """
        from devtrail.rules import every

        @every(5)
        async def tick(ctx):
            pass
        """
    one, two = write_module(rules_dir, text), write_module(rules_dir, text)
    fresh_modules += [one, two]
    with pytest.raises(RuleError, match=f"two rules are named tick: .*DEVTRAIL_RULES: {one},{two}"):
        load_rules(RulesSettings(rules_builtin="none", rules=f"{one},{two}"))


async def test_derived_events_are_published_in_bundles_per_partition_and_dead_letters_alone() -> None:
    """A processor pays per Kafka message: the rules worker packs the derived events bound for
    one partition into one message, as the SDK does, each event on its own key's partition."""
    from devtrail.consumers.rules.app import BUNDLE_MAX_EVENTS, RulesRunner
    from devtrail.consumers.rules.engine import Emitted
    from devtrail.consumers.settings import RulesSettings
    from devtrail.producers.bundler import choose_partition

    class Producer:
        async def partitions_for(self, topic: str) -> set[int]:
            return set(range(6))

    app = types.SimpleNamespace(producer=types.SimpleNamespace(_ensure_producer=Producer))
    runner = RulesRunner(RulesSettings(), make_engine(), app)

    def event(n: int, key: str, topic: str = "devtrail.alert") -> Emitted:
        value = orjson.dumps({"n": n})
        return Emitted(uuid.uuid4(), "r", "event", "alert.raised", None, 1, topic, key.encode(), value)

    dead = Emitted(uuid.uuid4(), "r", "dead_letter", None, None, 1, "devtrail.dead-letters", None, b"{}")
    keys = [f"T-{n}" for n in range(40)]
    emitted = [event(n, key) for n, key in enumerate(keys)] + [dead, event(99, "T-0", "devtrail.task")]
    messages = await runner._messages(emitted)

    assert ("devtrail.dead-letters", None, None, b"{}") in messages  # alone, unpartitioned
    sent: dict[int, list[int]] = {}
    for topic, partition, key, value in messages:
        if topic != "devtrail.alert":
            continue
        assert partition is not None and key is not None
        assert choose_partition(key, list(range(6))) == partition  # sent with a key of that partition
        parsed = orjson.loads(value)
        numbers = [e["n"] for e in parsed] if isinstance(parsed, list) else [parsed["n"]]
        assert all(choose_partition(keys[n].encode(), list(range(6))) == partition for n in numbers)
        sent.setdefault(partition, []).extend(numbers)
    assert sorted(n for numbers in sent.values() for n in numbers) == list(range(40))  # each once
    assert all(numbers == sorted(numbers) for numbers in sent.values())  # in the order emitted
    assert len([m for m in messages if m[0] == "devtrail.alert"]) == len(sent) <= 6  # one per partition
    lone = [m for m in messages if m[0] == "devtrail.task"]
    assert len(lone) == 1 and orjson.loads(lone[0][3]) == {"n": 99}  # a lone event stays an object

    many = [event(n, "T-1") for n in range(BUNDLE_MAX_EVENTS + 1)]
    split = await runner._messages(many)
    assert [len(orjson.loads(m[3])) if m[3].startswith(b"[") else 1 for m in split] == [BUNDLE_MAX_EVENTS, 1]


# ---- a handler's time limit, without a timer for those that never wait --------------------


async def test_a_handler_that_never_waits_runs_to_its_end_with_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_timer(*_: Any) -> None:
        raise AssertionError("a timer was armed")

    monkeypatch.setattr(asyncio, "timeout_at", no_timer)
    ran: list[int] = []

    async def handler() -> None:
        ran.append(1)

    assert await _within(handler(), 0.01) is False
    assert ran == [1]


async def test_a_handler_that_waits_goes_on_and_gets_what_it_waited_for() -> None:
    got: list[Any] = []

    async def handler() -> None:
        got.append(await asyncio.sleep(0.001, result="slept"))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.001, future.set_result, 7)
        got.append(await future)
        await asyncio.sleep(0)  # a bare yield to the loop

    assert await _within(handler(), 5.0) is True
    assert got == ["slept", 7]


def _sleeper(stopped: list[str]) -> Callable[[], Coroutine[Any, Any, None]]:
    """A handler that sleeps for long, and records in ``stopped`` being cancelled where it waits."""

    async def handler() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            stopped.append("cancelled")
            raise

    return handler


async def test_a_handler_that_waits_past_its_limit_is_stopped_where_it_waits() -> None:
    stopped: list[str] = []
    handler = _sleeper(stopped)

    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await _within(handler(), 0.02)
    assert stopped == ["cancelled"]
    assert asyncio.get_running_loop().time() - started < 5


async def test_the_limit_counts_from_the_start_not_from_the_first_wait() -> None:
    async def handler() -> None:
        time_spent = asyncio.get_running_loop().time() + 0.05
        while asyncio.get_running_loop().time() < time_spent:  # busy, no wait: cannot be stopped here
            pass
        await asyncio.sleep(0.2)  # stopped here: the limit passed during the busy part

    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await _within(handler(), 0.04)
    assert asyncio.get_running_loop().time() - started < 0.15


async def test_what_a_handler_raises_comes_out_as_it_was_raised() -> None:
    async def before_waiting() -> None:
        raise KeyError("at once")

    async def after_waiting() -> None:
        await asyncio.sleep(0)
        raise ValueError("later")

    with pytest.raises(KeyError, match="at once"):
        await _within(before_waiting(), 1.0)
    with pytest.raises(ValueError, match="later"):
        await _within(after_waiting(), 1.0)


async def test_a_handler_that_swallows_the_cancellation_fares_as_under_asyncio_timeout() -> None:
    async def stubborn(done: list[str]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        await asyncio.sleep(0.001)
        done.append("returned")

    async def under_timeout(done: list[str]) -> str:
        try:
            async with asyncio.timeout(0.02):
                await stubborn(done)
        except TimeoutError:
            return "timed out"
        return "finished"

    async def under_within(done: list[str]) -> str:
        try:
            await _within(stubborn(done), 0.02)
        except TimeoutError:
            return "timed out"
        return "finished"

    old: list[str] = []
    new: list[str] = []
    assert (await under_within(new), new) == (await under_timeout(old), old)


async def test_cancelling_the_caller_cancels_the_handler_where_it_waits() -> None:
    stopped: list[str] = []
    handler = _sleeper(stopped)

    task = asyncio.ensure_future(_within(handler(), 5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped == ["cancelled"]
