"""Development stories (``devtrail.producers.stories``): valid events, in causal order, whose truth is what the
events imply and what the processor's correlation makes of them."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtrail.consumers.processor.correlate import Correlator, Enrichment
from devtrail.consumers.processor.dedup import DedupIndex
from devtrail.consumers.processor.pipeline import SourceMessage, process_batch
from devtrail.producers.stories import Stories, StoryTruth, event_types, shuffled_with_duplicates
from devtrail.producers.story_truth import DeploymentStatus, PullRequestStatus, RequirementStatus
from devtrail.schemas.codec import decode_message, encode_event, validate_event
from devtrail.schemas.envelope import EARLIEST_OCCURRED_AT, LATEST_OCCURRED_AT, Envelope
from devtrail.schemas.ids import uuid7_millis
from devtrail.schemas.references import ENVELOPE_REFERENCES
from devtrail.schemas.task_events import TaskStatus

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CALL_TYPES = {"llm.called", "tool.called"}
CODE_TYPES = {"pr.opened", "pr.merged", "pr.closed", "commit.pushed"}
STATUS_OF = {
    "task.created": TaskStatus.PENDING,
    "task.started": TaskStatus.IN_PROGRESS,
    "task.completed": TaskStatus.COMPLETED,
    "task.failed": TaskStatus.FAILED,
    "task.cancelled": TaskStatus.CANCELLED,
}


def type_of(event: Envelope) -> str:
    return str(getattr(event, "event_type"))  # noqa: B009 - every catalog class has it, Envelope does not


def of_type(events: list[Envelope], *types: str) -> list[Any]:
    return [event for event in events if type_of(event) in types]


@pytest.fixture(scope="module")
def written() -> tuple[list[Envelope], StoryTruth]:
    stories = Stories("st", seed=11, start=START)
    events = stories.events(6_000)
    return events, stories.truth


@pytest.fixture(scope="module")
def events(written: tuple[list[Envelope], StoryTruth]) -> list[Envelope]:
    return written[0]


@pytest.fixture(scope="module")
def truth(written: tuple[list[Envelope], StoryTruth]) -> StoryTruth:
    return written[1]


@pytest.fixture(scope="module")
def enriched(events: list[Envelope]) -> dict[str, Enrichment | None]:
    """What one correlator fills in, events observed in causal order, by event id."""
    correlator = Correlator()
    return {str(event.event_id): correlator.observe(event) for event in events}  # type: ignore[arg-type]


def attributed(enriched: dict[str, Enrichment | None], event: Envelope) -> tuple[str | None, str | None]:
    enrichment = enriched[str(event.event_id)]
    if enrichment is None:
        return None, None
    return enrichment.values.get("task_id"), enrichment.matched_by.get("task_id")


# ---- the stream -------------------------------------------------------------------------


def test_the_same_prefix_seed_and_start_give_the_same_events_and_truth() -> None:
    one, two = Stories("same", seed=4, start=START), Stories("same", seed=4, start=START)
    assert [encode_event(e) for e in one.events(1_500)] == [encode_event(e) for e in two.events(1_500)]
    assert one.truth == two.truth
    other = Stories("same", seed=5, start=START).events(1_500)
    assert [encode_event(e) for e in other] != [encode_event(e) for e in Stories("same", 4, start=START).events(1_500)]


def test_another_prefix_gives_other_ids_and_the_same_shape() -> None:
    one, two = Stories("aa", seed=4, start=START).events(1_000), Stories("bb", seed=4, start=START).events(1_000)
    assert [type_of(e) for e in one] == [type_of(e) for e in two]
    assert not {e.event_id for e in one} & {e.event_id for e in two}


def test_whole_stories_of_at_least_the_count_and_a_truth_of_exactly_them(
    events: list[Envelope], truth: StoryTruth
) -> None:
    assert len(events) >= 6_000
    assert truth.events == len(events)
    assert truth.event_counts == dict(event_types(events))
    assert len({event.event_id for event in events}) == len(events)


def test_a_second_call_continues_and_leaves_the_first_truth_as_it_was() -> None:
    stories = Stories("again", seed=2, start=START)
    first = stories.events(500)
    before = stories.truth
    second = stories.events(500)
    after = stories.truth
    assert not {e.event_id for e in first} & {e.event_id for e in second}
    assert before.events == len(first) and after.events == len(first) + len(second)
    assert set(before.tasks) < set(after.tasks)


def test_every_event_round_trips_and_the_processor_takes_them_all(events: list[Envelope]) -> None:
    for event in events:
        [raw] = decode_message(encode_event(event))
        assert validate_event(raw) == event
    messages = [SourceMessage("in", 0, offset, encode_event(event)) for offset, event in enumerate(events)]
    outcome = process_batch(messages, DedupIndex(60), 0.0, correlator=Correlator())
    assert outcome.dead_letters == []
    assert (outcome.accepted, outcome.duplicates) == (len(events), 0)
    assert sum(outcome.received.values()) == len(events)
    assert outcome.enriched >= len(of_type(events, *CALL_TYPES, *CODE_TYPES))


def test_times_are_in_causal_order_in_range_and_in_the_ids(events: list[Envelope]) -> None:
    times = [event.occurred_at for event in events]
    assert times == sorted(times)
    assert times[0] >= EARLIEST_OCCURRED_AT and times[-1] < LATEST_OCCURRED_AT
    assert times[0] > START and times[-1] < START + timedelta(days=7)
    for event in events:
        assert event.event_id.version == 7
        assert uuid7_millis(event.event_id) == int(event.occurred_at.timestamp() * 1000)


def test_by_default_the_stories_happened_in_the_last_days() -> None:
    events = Stories("recent", seed=1).events(10_000)
    now = datetime.now(UTC)
    assert now - timedelta(days=7) < events[0].occurred_at and events[-1].occurred_at < now


# ---- references -------------------------------------------------------------------------


def test_calls_name_only_their_session_and_agent(events: list[Envelope]) -> None:
    calls = of_type(events, *CALL_TYPES)
    assert calls
    for call in calls:
        named = {field for field in ENVELOPE_REFERENCES if getattr(call, field) is not None}
        assert named == {"session_id", "agent_id"}


def test_each_event_names_what_it_is_about(events: list[Envelope]) -> None:
    for event in events:
        kind = type_of(event)
        named = {field for field in ENVELOPE_REFERENCES if getattr(event, field) is not None}
        if kind.startswith("task.") or kind == "link.created":
            assert {"task_id", "requirement_id", "project_id"} <= named, kind
        elif kind.startswith("session."):
            assert named == {"session_id", "task_id", "agent_id", "project_id"}, kind
        elif kind.startswith("requirement."):
            assert named == {"requirement_id", "project_id"}, kind
        elif kind == "agent.registered":
            assert named == {"agent_id", "project_id"}
        elif kind not in CALL_TYPES:  # code, deployments, incidents: the pipeline finds the task
            assert "project_id" in named and "task_id" not in named and "session_id" not in named, kind


def test_sub_tasks_name_their_parent_and_tasks_their_requirement(events: list[Envelope], truth: StoryTruth) -> None:
    created = {event.task_id: event for event in of_type(events, "task.created")}
    assert created.keys() == truth.tasks.keys()
    for task_id, task in truth.tasks.items():
        event = created[task_id]
        assert (event.payload.parent_task_id, event.requirement_id, event.project_id) == (
            task.parent_task_id,
            task.requirement_id,
            task.project_id,
        )
    assert any(task.parent_task_id for task in truth.tasks.values())


def test_linear_links_are_the_truth_s_keys(events: list[Envelope], truth: StoryTruth) -> None:
    links = {event.task_id: event.payload.external_id for event in of_type(events, "link.created")}
    assert links == {task_id: task.linear_key for task_id, task in truth.tasks.items() if task.linear_key}


# ---- lifecycles and requirements ---------------------------------------------------------


def test_a_task_s_status_is_that_of_its_latest_lifecycle_event(events: list[Envelope], truth: StoryTruth) -> None:
    latest: dict[str, tuple[datetime, TaskStatus]] = {}
    starts: Counter[str] = Counter()
    for event in of_type(events, *STATUS_OF):
        now = (event.occurred_at, STATUS_OF[type_of(event)])
        latest[event.task_id] = max(latest.get(event.task_id, now), now, key=lambda pair: pair[0])
        starts[event.task_id] += type_of(event) == "task.started"
    assert {task_id: status for task_id, (_, status) in latest.items()} == {
        task_id: task.status for task_id, task in truth.tasks.items()
    }
    assert dict(starts) == {task_id: task.attempts for task_id, task in truth.tasks.items()}
    assert {2, 1, 0} <= {task.attempts for task in truth.tasks.values()}
    assert set(TaskStatus) - {TaskStatus.PENDING, TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED} == {
        task.status for task in truth.tasks.values()
    }


def test_lifecycle_times_are_the_events_times(events: list[Envelope], truth: StoryTruth) -> None:
    times: defaultdict[tuple[str, str], list[datetime]] = defaultdict(list)
    for event in of_type(events, *STATUS_OF):
        times[(event.task_id, type_of(event))].append(event.occurred_at)
    for task_id, task in truth.tasks.items():
        started = times.get((task_id, "task.started"), [])
        assert (task.started_at, task.last_started_at) == (min(started, default=None), max(started, default=None))
        assert task.completed_at == max(times.get((task_id, "task.completed"), []), default=None)
        assert task.failed_at == max(times.get((task_id, "task.failed"), []), default=None)
        assert task.cancelled_at == max(times.get((task_id, "task.cancelled"), []), default=None)
        assert task.created_at == times[(task_id, "task.created")][0]


def test_requirements_complete_once_all_their_tasks_do(events: list[Envelope], truth: StoryTruth) -> None:
    completed = {event.requirement_id for event in of_type(events, "requirement.completed")}
    tasks_of: defaultdict[str, list[str]] = defaultdict(list)
    for task in truth.tasks.values():
        tasks_of[task.requirement_id].append(task.task_id)
    for requirement_id, requirement in truth.requirements.items():
        statuses = [truth.tasks[task_id].status for task_id in tasks_of[requirement_id]]
        all_done = all(status is TaskStatus.COMPLETED for status in statuses)
        assert (requirement_id in completed) == all_done == (requirement.status is RequirementStatus.COMPLETED)
        assert requirement.tasks_total == len(statuses)
        assert requirement.tasks_completed == statuses.count(TaskStatus.COMPLETED)
    assert 0 < len(completed) < len(truth.requirements)
    scores = {event.requirement_id: event.payload.score for event in of_type(events, "requirement.complexity_scored")}
    assert scores == {key: requirement.complexity for key, requirement in truth.requirements.items()}


def test_exactly_the_truth_s_dependency_cycles_exist(events: list[Envelope], truth: StoryTruth) -> None:
    edges: defaultdict[str, list[str]] = defaultdict(list)
    for event in of_type(events, "task.dependency_added"):
        edges[event.task_id].append(event.payload.depends_on_task_id)
    assert {_canonical(cycle) for cycle in _cycles(edges)} == {_canonical(cycle) for cycle in truth.cycles}
    assert len(truth.cycles) == -(-truth.stories // 5)
    assert {len(cycle) for cycle in truth.cycles} == {2, 3}
    assert {task_id: tuple(on) for task_id, on in edges.items()} == {
        task_id: task.depends_on for task_id, task in truth.tasks.items() if task.depends_on
    }


# ---- attribution ---------------------------------------------------------------------------


def test_the_correlator_attributes_every_call_to_the_truth_s_task(
    events: list[Envelope], truth: StoryTruth, enriched: dict[str, Enrichment | None]
) -> None:
    for call in of_type(events, *CALL_TYPES):
        expected = (truth.llm_calls if type_of(call) == "llm.called" else truth.tool_calls)[str(call.event_id)]
        enrichment = enriched[str(call.event_id)]
        assert enrichment is not None
        assert enrichment.values == {
            "task_id": expected.task_id,
            "requirement_id": expected.requirement_id,
            "project_id": expected.project_id,
        }
        assert set(enrichment.matched_by.values()) == {"session"}
    assert len(truth.llm_calls) + len(truth.tool_calls) == len(of_type(events, *CALL_TYPES))


def test_pull_requests_are_matched_by_branch_or_title_as_the_truth_says(
    events: list[Envelope], truth: StoryTruth, enriched: dict[str, Enrichment | None]
) -> None:
    for opened in of_type(events, "pr.opened"):
        pr = truth.pull_requests[f"{opened.payload.repository}#{opened.payload.number}"]
        assert attributed(enriched, opened) == (pr.task_id, pr.matched_by)
        assert (pr.linear_key.lower() in opened.payload.branch) == (pr.matched_by == "branch")
        assert pr.linear_key in opened.payload.title or pr.matched_by == "branch"
        assert truth.tasks[pr.task_id].linear_key == pr.linear_key
    for later in of_type(events, "pr.merged", "pr.closed"):
        pr = truth.pull_requests[f"{later.payload.repository}#{later.payload.number}"]
        assert attributed(enriched, later) == (pr.task_id, pr.matched_by)  # how the pull request was matched
        assert pr.status is (PullRequestStatus.MERGED if type_of(later) == "pr.merged" else PullRequestStatus.CLOSED)
    assert {pr.matched_by for pr in truth.pull_requests.values()} == {"branch", "title"}
    assert {pr.author_kind.value for pr in truth.pull_requests.values()} == {"person", "agent"}


def test_commits_deployments_and_incidents_reach_the_truth_s_task(
    events: list[Envelope], truth: StoryTruth, enriched: dict[str, Enrichment | None]
) -> None:
    pr_of_sha = {sha: pr for pr in truth.pull_requests.values() for sha in pr.commits}
    for commit in of_type(events, "commit.pushed"):
        assert attributed(enriched, commit) == (pr_of_sha[commit.payload.sha].task_id, "commit")
    for deployment in of_type(events, "deployment.started", "deployment.failed", "deployment.completed"):
        deployed = truth.deployments[deployment.payload.deployment_id]
        assert attributed(enriched, deployment) == (deployed.task_id, "commit")
    for incident in of_type(events, "incident.opened", "incident.resolved"):
        assert attributed(enriched, incident) == (truth.incidents[incident.payload.incident_id].task_id, "deployment")


def test_each_story_deploys_a_failing_change_then_its_fix_with_one_incident(
    events: list[Envelope], truth: StoryTruth
) -> None:
    endings = of_type(events, "deployment.failed", "deployment.completed")
    ended = {event.payload.deployment_id: type_of(event) for event in endings}
    assert len(truth.incidents) == truth.stories and len(truth.deployments) == 2 * truth.stories
    opened = {event.payload.incident_id: event.payload for event in of_type(events, "incident.opened")}
    resolved = {event.payload.incident_id: event.payload for event in of_type(events, "incident.resolved")}
    for incident in truth.incidents.values():
        failed, fixed = truth.deployments[incident.deployment_id], truth.deployments[incident.fixed_by_deployment_id]
        assert (ended[failed.deployment_id], failed.status) == ("deployment.failed", DeploymentStatus.FAILED)
        assert (ended[fixed.deployment_id], fixed.status) == ("deployment.completed", DeploymentStatus.COMPLETED)
        assert failed.ended_at < incident.opened_at < fixed.started_at < fixed.ended_at < incident.resolved_at
        assert opened[incident.incident_id].deployment_id == failed.deployment_id
        assert resolved[incident.incident_id].fixed_by_deployment_id == fixed.deployment_id
        assert truth.pull_requests[failed.pull_request].merge_sha == failed.commit_sha
        assert truth.tasks[fixed.task_id].title.startswith("Hotfix: ")


# ---- tokens and cost -------------------------------------------------------------------------


def test_calls_and_sessions_carry_the_truth_s_tokens_and_cost(events: list[Envelope], truth: StoryTruth) -> None:
    for call in of_type(events, "llm.called"):
        expected = truth.llm_calls[str(call.event_id)]
        assert (call.payload.model, call.payload.input_tokens, call.payload.output_tokens, call.payload.cost_usd) == (
            expected.model,
            expected.input_tokens,
            expected.output_tokens,
            expected.cost_usd,
        )
    for ended in of_type(events, "session.ended"):
        session = truth.sessions[ended.session_id]
        totals = (ended.payload.input_tokens, ended.payload.output_tokens, ended.payload.cost_usd)
        assert totals == (session.input_tokens, session.output_tokens, session.cost_usd)
    by_task = truth.cost_by_task()
    for task_id, task in truth.tasks.items():
        assert by_task.get(task_id, 0.0) == pytest.approx(task.llm_cost_usd)
    assert sum(by_task.values()) == pytest.approx(sum(call.payload.cost_usd for call in of_type(events, "llm.called")))
    assert sum(truth.cost_by_project().values()) == pytest.approx(sum(truth.cost_by_requirement().values()))


# ---- shuffled with duplicates -----------------------------------------------------------------


def test_shuffled_with_duplicates_repeats_some_events_identically() -> None:
    events = Stories("shuffle", seed=3, start=START).events(1_000)
    mixed = shuffled_with_duplicates(events, seed=9, duplicate_rate=0.1)
    assert len(mixed) == len(events) + round(len(events) * 0.1)
    assert mixed != events
    copies = Counter(event.event_id for event in mixed)
    assert set(copies) == {event.event_id for event in events} and set(copies.values()) == {1, 2}
    by_id: dict[Any, bytes] = {}
    for event in mixed:
        assert by_id.setdefault(event.event_id, encode_event(event)) == encode_event(event)
    assert shuffled_with_duplicates(events, seed=9, duplicate_rate=0.1) == mixed
    with pytest.raises(ValueError, match="duplicate_rate"):
        shuffled_with_duplicates(events, seed=9, duplicate_rate=1.5)


def test_a_prefix_that_cannot_name_a_repository_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Stories("has space")


# ---- helpers -------------------------------------------------------------------------------


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Every elementary cycle of a small graph (each found from its smallest node)."""
    found: list[list[str]] = []

    def walk(origin: str, node: str, path: list[str]) -> None:
        for nxt in edges.get(node, []):
            if nxt == origin:
                found.append(list(path))
            elif nxt > origin and nxt not in path:
                walk(origin, nxt, [*path, nxt])

    for origin in sorted(edges):
        walk(origin, origin, [origin])
    return found


def _canonical(cycle: list[str]) -> tuple[str, ...]:
    start = cycle.index(min(cycle))
    return tuple(cycle[start:] + cycle[:start])


def test_the_check_expects_what_the_requirement_rollup_completes() -> None:
    """With the rules worker's ``requirement_rollup``, a requirement whose tasks are all completed
    or cancelled (one completed at least) ends completed; a story completes it only when all
    completed."""
    from devtrail.consumers.rules.builtin import rolls_up as _rolled_up
    from devtrail.schemas.task_events import TaskStatus

    completed, cancelled = TaskStatus.COMPLETED, TaskStatus.CANCELLED
    assert _rolled_up([completed, cancelled, completed])
    assert _rolled_up([completed])
    assert not _rolled_up([cancelled, cancelled])
    assert not _rolled_up([completed, TaskStatus.FAILED])
    assert not _rolled_up([completed, TaskStatus.IN_PROGRESS])
    assert not _rolled_up([])
