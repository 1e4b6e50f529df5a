"""The load generator's shapes, and the latency benchmark's fresh laps of its template."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from devtrail.bench.latency import _fresh
from devtrail.producers import Workload, WorkloadShape


def test_tasks_in_requirements_are_all_created_before_any_is_worked() -> None:
    events: list[Any] = list(Workload("r", seed=3, shape=WorkloadShape(tasks_per_requirement=4)).events(2_000))
    types_by_requirement: defaultdict[str, list[str]] = defaultdict(list)
    for event in events:
        if event.requirement_id is not None:
            types_by_requirement[event.requirement_id].append(event.event_type)
    assert all(e.requirement_id is not None for e in events), "every event belongs to a requirement"
    for requirement, types in list(types_by_requirement.items())[:-1]:  # the last may be cut short
        assert types[:5] == ["requirement.created"] + ["task.created"] * 4, requirement
        assert "task.created" not in types[5:], requirement
        finished = Counter(t for t in types if t in ("task.completed", "task.failed"))
        assert sum(finished.values()) == 4, requirement
    tasks = {e.task_id for e in events if e.task_id is not None}
    last = [e for e in events if e.event_type == "task.created" and e.requirement_id == events[-1].requirement_id]
    assert len(tasks) == 4 * (len(types_by_requirement) - 1) + len(last)


def test_without_requirements_the_sequence_is_unchanged() -> None:
    """The drain's workload (no requirements) is the sequence it was before requirements existed
    (the fingerprint was taken from that version), so drains stay comparable across stops."""
    events: list[Any] = list(Workload("s", seed=5).events(500))
    fingerprint = [(e.event_type, e.task_id, e.agent_id, e.session_id, e.payload.model_dump_json()) for e in events]
    assert hashlib.sha256(repr(fingerprint).encode()).hexdigest() == (
        "af5f8a5870e47e553e11581c0af7a82574591dc8cade151967b261f41e3159fc"
    )
    assert all(e.requirement_id is None for e in events)


def test_each_lap_of_the_latency_template_has_its_own_entities() -> None:
    template = list(Workload("l", seed=4, shape=WorkloadShape(tasks_per_requirement=4)).events(100))
    now = datetime.now(UTC)
    first = [_fresh(e, now, 0) for e in template]
    second = [_fresh(e, now, 1) for e in template]
    assert [e.task_id for e in first] == [e.task_id for e in template]
    for name in ("task_id", "session_id", "requirement_id"):
        ids = [{getattr(e, name) for e in lap} - {None} for lap in (first, second)]
        assert ids[0] and ids[1] and not ids[0] & ids[1], name
    assert len({e.event_id for e in first + second}) == 2 * len(template)
    assert {e.occurred_at for e in second} == {now}
    assert [e.project_id for e in second] == [e.project_id for e in template]
