from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

import devtrail.schemas as schemas
import devtrail.schemas.events
from devtrail.schemas.codec import decode_message, encode_bundle, encode_event, has_nul_escape, validate_event
from devtrail.schemas.envelope import Envelope, Family
from devtrail.schemas.errors import EventValidationError
from devtrail.schemas.events import (
    EVENT_ADAPTER,
    EVENT_CLASSES,
    EVENT_CLASSES_BY_TYPE,
    EVENT_LIST_ADAPTER,
    AgentAction,
    AgentActionPayload,
    DeploymentStarted,
    GithubPullRequestLink,
    LinearIssueLink,
    LinkCreated,
    TaskStatus,
)
from devtrail.schemas.examples import example_event, example_types
from devtrail.schemas.topics import TopicMap

EVENT_TYPES = list(EVENT_CLASSES_BY_TYPE)


def raw_event(event_type: str, **payload_changes: Any) -> dict[str, Any]:
    raw = example_event(event_type)
    raw["payload"].update(payload_changes)
    return raw


def rejection(raw: Any) -> EventValidationError:
    with pytest.raises(EventValidationError) as caught:
        validate_event(raw)
    return caught.value


def locs(error: EventValidationError) -> set[tuple[object, ...]]:
    return {tuple(e["loc"]) for e in error.errors}  # type: ignore[arg-type]


# ---- the catalog ----------------------------------------------------------------------


def test_catalog_covers_every_family_and_every_type_has_an_example() -> None:
    assert {cls.family for cls in EVENT_CLASSES} == set(Family)
    assert set(example_types()) == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == len(EVENT_CLASSES) == 42


def test_event_types_are_named_after_their_family() -> None:
    for event_type, cls in EVENT_CLASSES_BY_TYPE.items():
        prefix = event_type.split(".", 1)[0]
        expected = Family.SESSION if prefix == "chat" else Family(prefix)
        assert cls.family is expected, event_type


def test_every_family_has_its_input_topic() -> None:
    topics = TopicMap("devtrail")
    assert {topics.input_topic(cls.family) for cls in EVENT_CLASSES} == set(topics.input_topics)
    assert "devtrail.deployment" in topics.input_topics


def test_public_classes_have_docstrings_and_are_exported() -> None:
    for name in devtrail.schemas.events.__all__:
        value = getattr(devtrail.schemas.events, name)
        if isinstance(value, type):
            assert value.__doc__ and value.__doc__.strip(), name
        assert getattr(schemas, name) is value, name


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_type_round_trips_through_the_codec(event_type: str) -> None:
    event = validate_event(example_event(event_type))
    assert type(event) is EVENT_CLASSES_BY_TYPE[event_type]
    [raw] = decode_message(encode_event(event))
    assert validate_event(raw) == event
    assert [validate_event(r) for r in decode_message(encode_bundle([event, event]))] == [event, event]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_the_discriminator_picks_the_class(event_type: str) -> None:
    cls = EVENT_CLASSES_BY_TYPE[event_type]
    assert type(EVENT_ADAPTER.validate_python(example_event(event_type))) is cls
    assert type(EVENT_ADAPTER.validate_json(orjson.dumps(example_event(event_type)))) is cls
    assert cls.model_fields["event_type"].default == event_type


def test_an_unknown_event_type_is_a_validation_error() -> None:
    raw = example_event("task.created") | {"event_type": "task.exploded"}
    error = rejection(raw)
    assert "unknown event_type 'task.exploded'" in str(error)
    assert "task.exploded" in str(error)


def test_a_missing_event_type_is_a_validation_error() -> None:
    raw = example_event("task.created")
    del raw["event_type"]
    assert "event_type" in str(rejection(raw))


# ---- bad values are rejected with the field path ---------------------------------------


@pytest.mark.parametrize(
    ("event_type", "change", "path", "message"),
    [
        ("llm.called", {"input_tokens": -1}, ("payload", "input_tokens"), "greater than or equal to 0"),
        ("llm.called", {"cost_usd": -0.5}, ("payload", "cost_usd"), "greater than or equal to 0"),
        ("llm.called", {"temperature": -1}, ("payload", "temperature"), "greater than or equal to 0"),
        ("tool.called", {"duration_ms": -5}, ("payload", "duration_ms"), "greater than or equal to 0"),
        ("session.ended", {"cost_usd": -1}, ("payload", "cost_usd"), "greater than or equal to 0"),
        ("deployment.started", {"commit_sha": "xyz1234"}, ("payload", "commit_sha"), "should match pattern"),
        ("deployment.started", {"commit_sha": "abc12"}, ("payload", "commit_sha"), "should match pattern"),
        ("deployment.started", {"commit_sha": "a" * 41}, ("payload", "commit_sha"), "should match pattern"),
        ("deployment.started", {"branch": "has space"}, ("payload", "branch"), "should match pattern"),
        ("deployment.started", {"pr_number": 0}, ("payload", "pr_number"), "greater than or equal to 1"),
        ("deployment.started", {"environment": "Prod!"}, ("payload", "environment"), "should match pattern"),
        ("deployment.build_result", {"outcome": "meh"}, ("payload", "outcome"), "'success', 'failure'"),
        ("task.status_changed", {"to_status": "exploded"}, ("payload", "to_status"), "'pending', 'in_progress'"),
        ("chat.message", {"role": "narrator"}, ("payload", "role"), "'user', 'assistant', 'system' or 'tool'"),
        ("task.created", {"title": "t" * 201}, ("payload", "title"), "at most 200 characters"),
        ("task.created", {"title": ""}, ("payload", "title"), "at least 1 character"),
        ("task.failed", {"error": "e" * 10_001}, ("payload", "error"), "at most 10000 characters"),
        ("chat.message", {"content": "c" * 100_001}, ("payload", "content"), "at most 100000 characters"),
        ("context.stored", {"version": 0}, ("payload", "version"), "greater than or equal to 1"),
        ("context.stored", {"sha256": "abc"}, ("payload", "sha256"), "should match pattern"),
        ("metric.recorded", {"value": "fast"}, ("payload", "value"), "valid number"),
        ("metric.recorded", {"attributes": {"k": {"x": 1}}}, ("payload", "attributes", "k", "bool"), "valid boolean"),
        ("requirement.complexity_scored", {"score": 11}, ("payload", "score"), "less than or equal to 10"),
        ("validation.result", {"score": 1.5}, ("payload", "score"), "less than or equal to 1"),
        ("agent.registered", {"capabilities": ["x"] * 101}, ("payload", "capabilities"), "at most 100 items"),
        ("task.created", {"surprise": 1}, ("payload", "surprise"), "unknown field"),
    ],
)
def test_bad_values_are_rejected_with_the_field_path(
    event_type: str, change: dict[str, Any], path: tuple[str, ...], message: str
) -> None:
    error = rejection(raw_event(event_type, **change))
    assert (event_type, *path) in locs(error)
    assert message in str(error)
    assert ".".join((event_type, *path)) in str(error)


@pytest.mark.parametrize(
    ("external_id", "accepted"),
    [("ABC-123", True), ("A1-9", True), ("abc-123", False), ("ABC123", False), ("ABC-", False), ("-123", False)],
)
def test_linear_issue_ids(external_id: str, accepted: bool) -> None:
    raw = raw_event("link.created", external_id=external_id)
    if accepted:
        assert validate_event(raw).payload.external_id == external_id  # type: ignore[union-attr]
    else:
        assert ("link.created", "payload", "linear_issue", "external_id") in locs(rejection(raw))


@pytest.mark.parametrize(
    ("external_id", "accepted"),
    [
        ("acme/web#318", True),
        ("https://github.com/acme/web/pull/318", True),
        ("acme/web", False),
        ("acme#318", False),
        ("https://github.com/acme/web/issues/318", False),
        ("https://gitlab.com/acme/web/pull/318", False),
    ],
)
def test_github_pull_request_refs(external_id: str, accepted: bool) -> None:
    raw = raw_event("link.created", kind="github_pr", external_id=external_id)
    if accepted:
        assert type(validate_event(raw).payload) is GithubPullRequestLink
    else:
        assert ("link.created", "payload", "github_pr", "external_id") in locs(rejection(raw))


def test_each_link_kind_checks_its_own_id_format() -> None:
    kinds = {
        "claude_session": ("session_01AbCdEf", "has space"),
        "codegen_request": ("req:2026-05-04.17", "no/slash"),
        "deployment": ("dpl-1842", "-leading-dash"),
    }
    for kind, (good, bad) in kinds.items():
        assert validate_event(raw_event("link.created", kind=kind, external_id=good))
        assert ("link.created", "payload", kind, "external_id") in locs(
            rejection(raw_event("link.created", kind=kind, external_id=bad))
        )
    assert "kind" in str(rejection(raw_event("link.created", kind="jira_issue")))


def test_link_url_is_optional_but_must_be_http() -> None:
    raw = raw_event("link.created")
    del raw["payload"]["url"]
    assert validate_event(raw)
    assert ("link.created", "payload", "linear_issue", "url") in locs(
        rejection(raw_event("link.created", url="javascript:alert(1)"))
    )


def test_commit_shas_are_stored_lower_case() -> None:
    event = validate_event(raw_event("deployment.started", commit_sha="ABCDEF1"))
    assert isinstance(event, DeploymentStarted)
    assert event.payload.commit_sha == "abcdef1"


def test_entity_events_require_their_entity_reference() -> None:
    cases = {
        "agent.registered": "agent_id",
        "agent.action": "agent_id",
        "tool.called": "agent_id",
        "session.started": "session_id",
        "chat.message": "session_id",
        "task.created": "task_id",
        "task.completed": "task_id",
        "task.status_changed": "task_id",
        "requirement.updated": "requirement_id",
    }
    for event_type, reference in cases.items():
        raw = example_event(event_type)
        del raw[reference]
        assert (event_type, reference) in locs(rejection(raw))


def test_semantic_checks_say_what_is_wrong() -> None:
    same = rejection(raw_event("task.status_changed", from_status="blocked", to_status="blocked"))
    assert "nothing changed" in str(same)
    itself = rejection(raw_event("task.dependency_added", depends_on_task_id="T-42"))
    assert "cannot depend on itself" in str(itself)
    counts = rejection(raw_event("deployment.test_result", tests_total=3))
    assert "more than tests_total 3" in str(counts)
    empty = example_event("requirement.updated")
    empty["payload"] = {"reason": "nothing"}
    assert "set at least one of" in str(rejection(empty))


def test_task_status_enum_is_the_lifecycle() -> None:
    assert [s.value for s in TaskStatus] == ["pending", "in_progress", "blocked", "completed", "failed", "cancelled"]


def test_non_finite_numbers_are_rejected_when_built_in_python() -> None:
    with pytest.raises(ValidationError, match="finite"):
        EVENT_ADAPTER.validate_python(raw_event("metric.recorded", value=float("inf")))
    with pytest.raises(ValidationError, match="finite"):
        EVENT_ADAPTER.validate_python(raw_event("llm.called", cost_usd=float("nan")))


def test_link_payload_can_be_built_by_kind_in_python() -> None:
    event = LinkCreated(source="s", task_id="T-1", payload=LinearIssueLink(external_id="ABC-1"))
    assert orjson.loads(encode_event(event))["payload"]["kind"] == "linear_issue"


# ---- NUL characters -------------------------------------------------------------------


def nul_message(raw: dict[str, Any]) -> bytes:
    value = orjson.dumps(raw)
    assert b"\\u0000" in value
    return value


@pytest.mark.parametrize(
    ("place", "path"),
    [
        (("payload", "model"), ("payload", "model")),
        (("source",), ("source",)),
        (("project_id",), ("project_id",)),
        (("payload", "response_id"), ("payload", "response_id")),
    ],
)
def test_a_nul_character_is_rejected_with_its_path(place: tuple[str, ...], path: tuple[str, ...]) -> None:
    raw = example_event("llm.called")
    target = raw
    for key in place[:-1]:
        target = target[key]
    target[place[-1]] = "a\x00b"
    [decoded] = decode_message(nul_message(raw))
    error = rejection(decoded)
    assert ("llm.called", *path) in locs(error)
    assert {e["type"] for e in error.errors} == {"string_contains_nul"}
    assert "NUL character" in str(error)


def test_a_nul_character_deep_in_free_form_detail_is_rejected_in_keys_and_values() -> None:
    raw = raw_event("agent.action", detail={"steps": [{"note": "x\x00"}], "k\x00ey": 1})
    [decoded] = decode_message(nul_message(raw))
    assert {
        ("agent.action", "payload", "detail", "steps", 0, "note"),
        ("agent.action", "payload", "detail", "k\\u0000ey"),
    } <= locs(rejection(decoded))


def test_only_the_event_holding_a_nul_is_rejected_in_a_bundle() -> None:
    good, bad = example_event("task.created"), example_event("task.started")
    bad["payload"]["assignee"] = "\x00"
    raws = decode_message(nul_message([good, bad]))  # type: ignore[arg-type]
    assert type(validate_event(raws[0])).__name__ == "TaskCreated"
    assert ("task.started", "payload", "assignee") in locs(rejection(raws[1]))
    assert orjson.loads(orjson.dumps(raws[1])) == bad  # a dead letter keeps the original


def test_a_backslash_followed_by_u0000_text_is_not_a_nul() -> None:
    raw = raw_event("task.failed", error="path C:\\u0000 is odd")
    value = orjson.dumps(raw)
    assert has_nul_escape(value)
    [decoded] = decode_message(value)
    assert validate_event(decoded).payload.error == "path C:\\u0000 is odd"  # type: ignore[union-attr]


def test_has_nul_escape_is_false_for_ordinary_events() -> None:
    assert not has_nul_escape(orjson.dumps([example_event(t) for t in EVENT_TYPES]))
    assert not has_nul_escape(b'{"text": "line\\nbreak and \\"quotes\\""}')


def test_a_nul_and_another_error_are_both_reported() -> None:
    raw = raw_event("llm.called", model="m\x00", output_tokens=-1)
    [decoded] = decode_message(nul_message(raw))
    assert {("llm.called", "payload", "model"), ("llm.called", "payload", "output_tokens")} <= locs(rejection(decoded))


def test_encoding_an_event_holding_a_nul_fails_at_the_producer() -> None:
    event = AgentAction(source="s", agent_id="A", payload=AgentActionPayload(action="plan", detail={"note": "\x00"}))
    with pytest.raises(EventValidationError, match=r"agent\.action\.payload\.detail\.note: .*NUL") as caught:
        encode_event(event)
    assert caught.value.errors[0]["type"] == "string_contains_nul"
    with pytest.raises(EventValidationError, match="NUL"):
        encode_bundle([event])


def test_every_event_class_is_an_envelope_with_a_literal_type() -> None:
    for cls in EVENT_CLASSES:
        assert issubclass(cls, Envelope)
        assert cls.model_config.get("extra") == "forbid"
        assert cls.model_fields["payload"].annotation is not None


def test_the_adapters_reject_a_nul_in_json_bytes_before_parsing() -> None:
    good, bad = example_event("task.created"), example_event("llm.called")
    bad["payload"]["model"] = "m\x00"
    with pytest.raises(ValidationError) as one:
        EVENT_ADAPTER.validate_json(nul_message(bad))
    assert [(e["type"], e["loc"]) for e in one.value.errors()] == [
        ("string_contains_nul", ("llm.called", "payload", "model"))
    ]
    with pytest.raises(ValidationError) as bundle:
        EVENT_LIST_ADAPTER.validate_json(nul_message([good, bad]))  # type: ignore[arg-type]
    assert [e["loc"] for e in bundle.value.errors()] == [(1, "llm.called", "payload", "model")]
    with pytest.raises(ValidationError, match="NUL"):
        EVENT_ADAPTER.validate_json(nul_message(bad).decode())
    with pytest.raises(ValidationError, match="NUL"):
        EVENT_ADAPTER.validate_json(bytearray(nul_message(bad)), strict=False)
    assert EVENT_ADAPTER.validate_json(orjson.dumps(good), strict=False).event_type == "task.created"
    literal = orjson.dumps(raw_event("task.failed", error="C:\\u0000"))
    assert EVENT_ADAPTER.validate_json(literal).payload.error == "C:\\u0000"  # type: ignore[union-attr]
    assert isinstance(EVENT_ADAPTER, TypeAdapter)
