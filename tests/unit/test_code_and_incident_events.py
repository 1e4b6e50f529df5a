"""Pull requests, commits and incidents (contract 1.2): validated from JSON, round-tripped,
stored by the processor; bad values rejected with their paths (the JSON Schemas: test_jsonschema)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from devtrail.consumers.clean import EVENT_COLUMNS, decode_rows
from devtrail.consumers.processor.dedup import DedupIndex
from devtrail.consumers.processor.pipeline import SourceMessage, process_batch
from devtrail.schemas.codec import decode_message, encode_event, validate_event
from devtrail.schemas.envelope import Family
from devtrail.schemas.errors import EventValidationError
from devtrail.schemas.events import (
    EVENT_CLASSES_BY_TYPE,
    AuthorKind,
    CommitPushed,
    CommitPushedPayload,
    IncidentOpened,
    IncidentResolved,
    PullRequestMerged,
    PullRequestMergedPayload,
    Severity,
)
from devtrail.schemas.examples import example_event
from devtrail.schemas.topics import TopicMap
from devtrail.schemas.wire import validate_message

NEW_TYPES = ["pr.opened", "pr.merged", "pr.closed", "commit.pushed", "incident.opened", "incident.resolved"]


def rejection(raw: dict[str, Any]) -> EventValidationError:
    with pytest.raises(EventValidationError) as caught:
        validate_event(raw)
    return caught.value


def test_the_new_families_have_their_topics() -> None:
    topics = TopicMap()
    assert {Family.PR, Family.COMMIT, Family.INCIDENT} <= set(Family)
    assert {"devtrail.pr", "devtrail.commit", "devtrail.incident"} <= set(topics.input_topics)
    assert [topics.input_topic(EVENT_CLASSES_BY_TYPE[t].family) for t in NEW_TYPES] == [
        "devtrail.pr",
        "devtrail.pr",
        "devtrail.pr",
        "devtrail.commit",
        "devtrail.incident",
        "devtrail.incident",
    ]


@pytest.mark.parametrize("event_type", NEW_TYPES)
def test_each_new_type_validates_from_json_and_round_trips(event_type: str) -> None:
    value = orjson.dumps(example_event(event_type))
    [fast] = validate_message(value) or []  # the hot path takes it as sent
    event = validate_event(orjson.loads(value))
    assert type(event) is type(fast) is EVENT_CLASSES_BY_TYPE[event_type]
    assert event == fast
    encoded = encode_event(event)
    [again] = decode_message(encoded)
    assert validate_event(again) == event
    assert {k: v for k, v in orjson.loads(encoded).items() if v is not None} == example_event(event_type)


@pytest.mark.parametrize("event_type", NEW_TYPES)
def test_each_new_type_is_stored_by_the_processor(event_type: str) -> None:
    raw = example_event(event_type)
    message = SourceMessage(f"devtrail.{event_type.split('.')[0]}", 1, 3, orjson.dumps(raw))
    outcome = process_batch([message], DedupIndex(60), 0.0)
    assert outcome.dead_letters == []
    [row] = [dict(zip(EVENT_COLUMNS, r, strict=True)) for b in outcome.bundles[1] for r in decode_rows(b)]
    assert (row["event_type"], row["event_id"]) == (event_type, raw["event_id"])
    assert orjson.loads(row["payload"]) == raw["payload"]


@pytest.mark.parametrize(
    ("event_type", "change", "field", "message"),
    [
        ("pr.opened", {"merge_sha": "4b825dc"}, "merge_sha", "unknown field"),
        ("pr.closed", {"merge_sha": "4b825dc"}, "merge_sha", "unknown field"),
        ("pr.merged", {"merge_sha": "not-a-sha"}, "merge_sha", "should match pattern"),
        ("pr.opened", {"repository": "acme"}, "repository", "should match pattern"),
        ("pr.opened", {"number": 0}, "number", "greater than or equal to 1"),
        ("pr.opened", {"number": "318"}, "number", "valid integer"),
        ("pr.opened", {"branch": "a branch"}, "branch", "should match pattern"),
        ("pr.opened", {"base_branch": "main~1"}, "base_branch", "should match pattern"),
        ("pr.opened", {"title": ""}, "title", "at least 1 character"),
        ("pr.opened", {"author": " u-ada"}, "author", "without whitespace at either end"),
        ("pr.opened", {"author_kind": "bot"}, "author_kind", "'person' or 'agent'"),
        ("pr.opened", {"url": "ftp://example.com/pr"}, "url", "should match pattern"),
        ("commit.pushed", {"sha": "xyz"}, "sha", "should match pattern"),
        ("commit.pushed", {"authored_at": "2026-05-04T09:12:44"}, "authored_at", "RFC 3339"),
        ("commit.pushed", {"authored_at": "1999-12-31T23:59:59Z"}, "authored_at", "2000 <= year < 2100"),
        ("commit.pushed", {"authored_at": 1767225600}, "authored_at", "RFC 3339"),
        ("commit.pushed", {"pr_number": -1}, "pr_number", "greater than or equal to 1"),
        ("commit.pushed", {"message": "m" * 10_001}, "message", "at most 10000 characters"),
        ("incident.opened", {"severity": "sev1"}, "severity", "'info', 'warning', 'error' or 'critical'"),
        ("incident.opened", {"environment": "Prod"}, "environment", "should match pattern"),
        ("incident.opened", {"commit_sha": "abc"}, "commit_sha", "should match pattern"),
        ("incident.resolved", {"fixed_by_deployment_id": "-x"}, "fixed_by_deployment_id", "should match pattern"),
        ("incident.resolved", {"title": "t"}, "title", "unknown field"),
    ],
)
def test_bad_values_are_rejected_with_the_field_path(
    event_type: str, change: dict[str, Any], field: str, message: str
) -> None:
    raw = example_event(event_type)
    raw["payload"].update(change)
    error = rejection(raw)
    assert f"{event_type}.payload.{field}: " in str(error)
    assert message in str(error)


def test_authored_at_keeps_its_offset_like_occurred_at() -> None:
    event = validate_event(example_event("commit.pushed"))
    assert isinstance(event, CommitPushed)
    assert event.payload.authored_at == datetime(2026, 5, 4, 9, 12, 44, tzinfo=timezone(timedelta(hours=2)))
    assert orjson.loads(encode_event(event))["payload"]["authored_at"] == "2026-05-04T09:12:44+02:00"


def test_the_classes_build_the_new_events_in_python() -> None:
    merged = PullRequestMerged(
        source="github",
        payload=PullRequestMergedPayload(
            repository="acme/web",
            number=7,
            branch="fix",
            title="Fix",
            head_sha="ABCDEF1",
            merge_sha="1234567",
            author="agent-coder",
            author_kind=AuthorKind.AGENT,
        ),
    )
    assert merged.payload.head_sha == "abcdef1"  # stored lower-case
    pushed = CommitPushedPayload(
        sha="1234567",
        repository="acme/web",
        branch="main",
        authored_at=datetime(2026, 1, 1, tzinfo=UTC),
        author="u-ada",
        author_kind=AuthorKind.PERSON,
    )
    assert pushed.message is None and pushed.pr_number is None
    opened = validate_event(example_event("incident.opened"))
    assert isinstance(opened, IncidentOpened) and opened.payload.severity is Severity.CRITICAL
    resolved = validate_event(example_event("incident.resolved"))
    assert isinstance(resolved, IncidentResolved) and resolved.payload.fixed_by_deployment_id == "dpl-1845"
