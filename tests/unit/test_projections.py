"""The projections' reduction in Python: order-independent, idempotent, events read as sent."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtrail.consumers.clean import CLEAN_ROWS, CleanRow, encode_rows, event_to_row
from devtrail.consumers.projections.agents import reduce_agents
from devtrail.consumers.projections.correlations import candidate_issues, linked_entity, reduce_correlations
from devtrail.consumers.projections.merge import EventKey, merged
from devtrail.consumers.projections.requirements import reduce_requirements
from devtrail.consumers.projections.sessions import reduce_sessions
from devtrail.consumers.projections.tasks import TASKS, reduce_tasks
from devtrail.schemas.events import (
    LinkKind,
    LlmCalled,
    LlmCalledPayload,
    RequirementCompleted,
    RequirementCompletedPayload,
    RequirementCreated,
    RequirementCreatedPayload,
    RequirementReopened,
    RequirementReopenedPayload,
    SessionStarted,
    TaskCompleted,
    TaskCreated,
    TaskCreatedPayload,
    TaskStarted,
    TaskStatusChanged,
    TaskStatusChangedPayload,
)
from devtrail.schemas.ids import uuid7

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def clean(events: list[Any]) -> list[CleanRow]:
    """The events as clean rows, as the writers read them from the clean topic."""
    decoded = CLEAN_ROWS.decode("clean", 0, 0, encode_rows([orjson.dumps(event_to_row(e)) for e in events]))
    return [row for row in decoded if isinstance(row, CleanRow)]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def lifecycle() -> list[Any]:
    refs = {"source": "t", "task_id": "T", "project_id": "P"}
    return [
        TaskCreated(**refs, occurred_at=at(0), payload=TaskCreatedPayload(title="t", parent_task_id="PARENT")),
        TaskStarted(**refs, occurred_at=at(1), agent_id="A"),
        TaskStatusChanged(
            **refs, occurred_at=at(2), payload=TaskStatusChangedPayload(from_status="in_progress", to_status="blocked")
        ),
        TaskStarted(**refs, occurred_at=at(3), agent_id="B"),
        TaskCompleted(**refs, occurred_at=at(4)),
        LlmCalled(
            source="t",
            occurred_at=at(5),
            task_id="T",
            payload=LlmCalledPayload(provider="p", model="m", input_tokens=1, output_tokens=1),
        ),
    ]


def task_row(rows: list[CleanRow]) -> dict[str, Any]:
    return reduce_tasks(rows).tasks.rows[("T",)]


def test_a_task_reduces_to_its_latest_status_with_distinct_attempts() -> None:
    row = task_row(clean(lifecycle()))
    assert (row["status"], row["status_at"]) == ("completed", at(4))
    assert len(row["started_event_ids"]) == 2
    assert (row["started_at"], row["completed_at"], row["created_at"]) == (at(1), at(4), at(0))
    assert (row["agent_id"], row["parent_task_id"], row["title"]) == ("B", "PARENT", "t")
    assert (row["first_seen"], row["last_seen"], row["updated_at"]) == (at(0), at(5), at(4))


@given(st.randoms(use_true_random=False), st.integers(min_value=0, max_value=6))
def test_any_order_and_duplicates_reduce_to_the_same_row(rng: random.Random, duplicates: int) -> None:
    rows = clean(lifecycle())
    expected = task_row(rows)
    shuffled = rows + [rng.choice(rows) for _ in range(duplicates)]
    rng.shuffle(shuffled)
    assert task_row(shuffled) == expected


@given(st.randoms(use_true_random=False))
def test_merging_batch_reductions_equals_reducing_the_whole(rng: random.Random) -> None:
    """What the SQL merge does with each batch's patch, in Python: a semilattice join."""
    rows = clean(lifecycle())
    expected = task_row(rows)
    rng.shuffle(rows)
    cut = rng.randint(0, len(rows))
    patches = [task_row(part) for part in (rows[:cut], rows[cut:]) if part]
    assert merged(TASKS, patches + patches[:1]) == expected


@pytest.mark.parametrize("seed", range(40))
def test_a_merge_skips_only_the_rules_a_patch_leaves_alone(seed: int) -> None:
    """``Table.merge`` calls a rule only when the patch holds its trigger column: the same row as
    calling every rule, for every table, with patches setting any mix of its rules."""
    rng = random.Random(seed)
    from devtrail.consumers.projections import PROJECTIONS
    from devtrail.consumers.projections.merge import Column, Rule

    def value(rule: Rule, column: Column) -> Any:
        if column.sql_type == "timestamptz":
            return rng.choice([at(1), at(2)])
        if column.sql_type == "uuid":
            return rng.choice(["018f0000-0000-7000-8000-000000000001", "018f0000-0000-7000-8000-000000000002"])
        if column.sql_type == "uuid[]":
            return frozenset({str(uuid7())})
        if hasattr(rule, "order"):
            return rng.choice(rule.order)
        ranks = getattr(rule, "rank", ())
        if ranks and column == rule.columns[0]:
            return rng.choice([v for v, _ in ranks] + ["other"])
        return rng.choice(["a", "b", None])

    for projection in PROJECTIONS:
        for table in projection.tables:
            assert all(rule.trigger in rule.column_names for rule in table.rules), table.name
            row_fast: dict[str, Any] = {}
            row_every: dict[str, Any] = {}
            for _ in range(8):
                patch: dict[str, Any] = {}
                for rule in table.rules:
                    if rng.random() < 0.4:
                        columns = list(rule.columns)
                        if len(columns) > 1 and rng.random() < 0.5:
                            # Some of a rule's columns: a ``Latest``'s key (time and id) comes
                            # whole or not at all; its values may come without it (a no-op).
                            key = [c for c in columns if c.name in (rule.trigger, getattr(rule, "id_column", None))]
                            others = [c for c in columns if c not in key]
                            columns = rng.sample(others, rng.randint(0, len(others)))
                            columns += key if rng.random() < 0.5 else []
                        patch |= {column.name: value(rule, column) for column in columns}
                table.merge(row_fast, dict(patch))
                for rule in table.rules:
                    rule.merge(row_every, dict(patch))
            assert row_fast == row_every, table.name


def test_completed_before_started_gives_completed() -> None:
    created, started, completed = clean(lifecycle()[:2] + lifecycle()[4:5])
    assert task_row([completed, started, created])["status"] == "completed"
    assert task_row([created, completed, started])["status"] == "completed"


@given(st.randoms(use_true_random=False))
def test_a_requirement_reopened_after_its_completion_is_open_whatever_the_order(rng: random.Random) -> None:
    """``requirement.reopened`` sets the status back to open; the latest of the three wins."""
    refs = {"source": "devtrail-rules:requirement_rollup", "requirement_id": "R"}
    created = RequirementCreated(**refs, occurred_at=at(0), payload=RequirementCreatedPayload(title="r"))
    completed = RequirementCompleted(**refs, occurred_at=at(5), payload=RequirementCompletedPayload(tasks_completed=2))
    reopened = RequirementReopened(
        **refs, occurred_at=at(5) + timedelta(microseconds=1), payload=RequirementReopenedPayload(reason="T-3 created")
    )
    again = RequirementCompleted(**refs, occurred_at=at(9), payload=RequirementCompletedPayload(tasks_completed=3))
    for events, status in (
        ([created, completed, reopened], "open"),
        ([created, completed, reopened, again], "completed"),
    ):
        rows = clean(events)
        rng.shuffle(rows)
        row = reduce_requirements(rows).rows[("R",)]
        assert row["status"] == status
        assert row["completed_at"] == (at(5) if status == "open" else at(9))  # the last completion stays


def test_references_correlation_filled_in_are_not_evidence() -> None:
    call = LlmCalled(
        source="t",
        occurred_at=at(1),
        session_id="S",
        payload=LlmCalledPayload(provider="p", model="m", input_tokens=1, output_tokens=1),
    )
    (row,) = clean([call])
    filled = row._replace(task_id="T", project_id="P", attribution='{"task_id":"session","project_id":"task"}')
    assert reduce_tasks([filled]).tasks.rows == {}
    links = reduce_correlations([filled]).reduction.rows
    assert links == {}
    session = reduce_sessions([filled]).rows[("S",)]
    assert "task_id" not in session
    sent = row._replace(task_id="T", project_id="P")
    assert set(reduce_correlations([sent]).reduction.rows) == {
        ("session", "S", "task", "T"),
        ("session", "S", "project", "P"),
        ("task", "T", "project", "P"),
    }


def test_a_link_keeps_the_strongest_match_and_the_first_event() -> None:
    events = [
        SessionStarted(source="t", occurred_at=at(3), session_id="S", task_id="T"),
        SessionStarted(source="t", occurred_at=at(1), session_id="S", task_id="T"),
    ]
    rows = clean(events)
    link = reduce_correlations(rows).reduction.rows[("session", "S", "task", "T")]
    assert (link["matched_by"], link["first_seen"], link["first_event_id"]) == ("explicit", at(1), rows[1].event_id)
    assert EventKey(at(1), rows[1].event_id) < EventKey(at(3), rows[0].event_id)


def test_agents_span_every_event_naming_them() -> None:
    rows = clean([TaskStarted(source="t", occurred_at=at(m), task_id="T", agent_id="A") for m in (4, 2, 9)])
    assert reduce_agents(rows).rows[("A",)] == {"first_seen": at(2), "last_seen": at(9)}
    assert reduce_agents(rows).events[("A",)] == 3


def test_linear_keys_and_pull_request_links_are_normalised() -> None:
    assert candidate_issues("alice/eng-42-login") == ["ENG-42"]
    assert candidate_issues("[ENG-42] ENG-42 and OPS-7") == ["ENG-42", "OPS-7"]
    assert linked_entity(LinkKind.GITHUB_PR, "https://github.com/acme/web/pull/7") == ("pull_request", "acme/web#7")
    assert linked_entity(LinkKind.LINEAR_ISSUE, "ENG-42") == ("linear_issue", "ENG-42")


def _same_instant(order: str) -> list[CleanRow]:
    """A task created, started and completed at one instant; ``order`` says which event id is greatest."""
    refs = {"source": "t", "task_id": "T", "project_id": "P", "occurred_at": at(0)}
    ids = sorted(str(uuid7()) for _ in range(3))
    rank = {name: ids[i] for i, name in enumerate(order.split(","))}
    return clean(
        [
            TaskCreated(**refs, event_id=rank["created"], payload=TaskCreatedPayload(title="t")),
            TaskStarted(**refs, event_id=rank["started"]),
            TaskCompleted(**refs, event_id=rank["completed"]),
        ]
    )


@given(
    st.sampled_from(["created,started,completed", "completed,started,created", "started,completed,created"]),
    st.randoms(use_true_random=False),
)
def test_a_task_done_at_the_instant_it_started_is_done_whatever_its_event_ids(order: str, rng: random.Random) -> None:
    """Status events at one instant (a clock with milliseconds, a fast agent) are ordered by the
    lifecycle, not by event ids that are random within a millisecond."""
    rows = _same_instant(order)
    rng.shuffle(rows)
    assert task_row(rows)["status"] == "completed"
    cut = rng.randint(1, len(rows) - 1)
    assert merged(TASKS, [task_row(rows[:cut]), task_row(rows[cut:])])["status"] == "completed"
