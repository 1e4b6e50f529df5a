"""Each event type requires the references of what it is about (since 1.2): an event without
one is dead-lettered by the processor with a reason that names it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from devtrail.consumers.processor.dedup import DedupIndex
from devtrail.consumers.processor.pipeline import BatchOutcome, SourceMessage, process_batch
from devtrail.schemas.events import EVENT_CLASSES_BY_TYPE
from devtrail.schemas.examples import example_event
from devtrail.schemas.jsonschema import event_schema
from devtrail.schemas.references import ENVELOPE_REFERENCES, PAYLOAD_IDENTITIES, UNBOUND_TYPES
from devtrail.schemas.topics import TopicMap


def required_envelope_references(event_type: str) -> list[str]:
    required = event_schema(EVENT_CLASSES_BY_TYPE[event_type])["required"]
    return [name for name in ENVELOPE_REFERENCES if name in required]


def required_payload_identities(event_type: str) -> list[str]:
    payload = EVENT_CLASSES_BY_TYPE[event_type].model_fields["payload"].annotation
    if not (isinstance(payload, type) and issubclass(payload, BaseModel)):
        return []  # a union of payloads (link.created): none names an identity
    fields = payload.model_fields
    return [name for name in PAYLOAD_IDENTITIES if name in fields and fields[name].is_required()]


ENVELOPE_CASES = [(t, ref) for t in EVENT_CLASSES_BY_TYPE for ref in required_envelope_references(t)]
PAYLOAD_CASES = [(t, name) for t in EVENT_CLASSES_BY_TYPE for name in required_payload_identities(t)]


def processed(raw: dict[str, Any], bundle: bool = False) -> BatchOutcome:
    topic = TopicMap().input_topic(EVENT_CLASSES_BY_TYPE[raw["event_type"]].family)
    value = orjson.dumps([example_event("system.notice"), raw] if bundle else raw)
    return process_batch([SourceMessage(topic, 0, 5, value)], DedupIndex(60), 0.0)


def test_the_required_references_are_the_documented_table() -> None:
    envelope = {t: required_envelope_references(t) for t in EVENT_CLASSES_BY_TYPE}
    assert {t for t, refs in envelope.items() if refs == ["task_id"]} == {
        t for t in EVENT_CLASSES_BY_TYPE if t.startswith("task.")
    }
    assert {t for t, refs in envelope.items() if refs == ["agent_id"]} == {
        "agent.registered",
        "agent.action",
        "agent.error",
        "agent.unregistered",
        "tool.called",
    }
    assert {t for t, refs in envelope.items() if refs == ["session_id"]} == {
        "session.started",
        "session.ended",
        "chat.message",
    }
    assert all(envelope[t] == ["requirement_id"] for t in EVENT_CLASSES_BY_TYPE if t.startswith("requirement."))
    assert required_payload_identities("pr.merged") == ["repository", "number"]
    assert required_payload_identities("commit.pushed") == ["repository", "sha"]
    assert required_payload_identities("incident.resolved") == ["incident_id"]


@pytest.mark.parametrize("event_type", list(EVENT_CLASSES_BY_TYPE))
def test_every_type_requires_a_reference_or_says_why_not(event_type: str) -> None:
    bound = required_envelope_references(event_type) or required_payload_identities(event_type)
    assert bool(bound) != (event_type in UNBOUND_TYPES), event_type


@pytest.mark.parametrize(("event_type", "reference"), ENVELOPE_CASES)
def test_an_event_without_its_envelope_reference_is_dead_lettered_with_the_reason(
    event_type: str, reference: str
) -> None:
    raw = example_event(event_type)
    del raw[reference]
    outcome = processed(raw)
    assert outcome.accepted == 0
    [dead] = outcome.dead_letters
    assert dead.error_kind == "validation"
    entity = ENVELOPE_REFERENCES[reference]
    assert dead.error == (
        f"{event_type}.{reference}: required field is missing: every {event_type} event names the {entity} it is about"
    )
    assert dead.errors == [{"loc": [event_type, reference], "msg": dead.error.split(": ", 1)[1], "type": "missing"}]
    assert orjson.loads(dead.original) == raw


@pytest.mark.parametrize(("event_type", "reference"), ENVELOPE_CASES)
def test_a_null_reference_is_no_reference(event_type: str, reference: str) -> None:
    outcome = processed(example_event(event_type) | {reference: None})
    [dead] = outcome.dead_letters
    assert dead.error == f"{event_type}.{reference}: an id must be a string of 1 to 200 characters, " + (
        "without whitespace at either end"
    )


@pytest.mark.parametrize(("event_type", "reference"), ENVELOPE_CASES[:3])
def test_in_a_bundle_only_the_event_without_its_reference_is_dead_lettered(event_type: str, reference: str) -> None:
    raw = example_event(event_type)
    del raw[reference]
    outcome = processed(raw, bundle=True)
    assert outcome.accepted == 1
    [dead] = outcome.dead_letters
    assert dead.event_index == 1
    assert f"{event_type}.{reference}: required field is missing" in dead.error


@pytest.mark.parametrize(("event_type", "name"), PAYLOAD_CASES)
def test_an_event_without_its_payload_identity_is_dead_lettered_with_the_path(event_type: str, name: str) -> None:
    raw = example_event(event_type)
    del raw["payload"][name]
    outcome = processed(raw)
    [dead] = outcome.dead_letters
    assert f"{event_type}.payload.{name}: required field is missing" in dead.error


@pytest.mark.parametrize("event_type", sorted(UNBOUND_TYPES))
def test_types_that_require_no_reference_are_stored_without_any(event_type: str) -> None:
    raw = {k: v for k, v in example_event(event_type).items() if k not in ENVELOPE_REFERENCES}
    outcome = processed(raw)
    assert (outcome.accepted, outcome.dead_letters) == (1, [])
