"""Events written by an older minor version keep decoding; 1.x changes stay additive, but for
the references 1.2 made required (docs/events.md, "Evolution")."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from devtrail.consumers.clean import EVENT_ID, OCCURRED_AT, decode_rows, encode_clean, event_to_row
from devtrail.schemas.codec import decode_message, encode_event, validate_event
from devtrail.schemas.envelope import SCHEMA_MAJOR, SCHEMA_VERSION, Envelope
from devtrail.schemas.errors import EventValidationError
from devtrail.schemas.events import EVENT_CLASSES_BY_TYPE, TaskCreated, TaskCreatedPayload

FIXTURES_1_0 = Path(__file__).parent / "fixtures" / "v1.0"
FIXTURE_FILES = sorted(FIXTURES_1_0.glob("*.json"))

#: The 1.0 contract: every field of the envelope and of each payload, with its default
#: (``REQUIRED`` when it had none). Frozen: 1.x may add optional fields, never change these.
REQUIRED = object()
ENVELOPE_1_0 = {
    "event_id": "factory",
    "schema_version": SCHEMA_VERSION,  # the version this code writes
    "source": REQUIRED,
    "occurred_at": "factory",
    "correlation_id": None,
    "causation_id": None,
    "project_id": None,
    "agent_id": None,
    "session_id": None,
    "task_id": None,
    "requirement_id": None,
}
PAYLOADS_1_0: dict[str, dict[str, Any]] = {
    "task.created": {"title": REQUIRED, "description": None, "parent_task_id": None, "priority": 3},
    "task.started": {"assignee": None},
    "task.completed": {"duration_ms": None, "summary": None},
    "task.failed": {"error": REQUIRED, "retriable": False, "duration_ms": None},
    "agent.action": {"action": REQUIRED, "detail": "factory"},
    "tool.called": {"tool_name": REQUIRED, "success": True, "duration_ms": None, "error": None},
    "llm.called": {
        "provider": REQUIRED,
        "model": REQUIRED,
        "input_tokens": REQUIRED,
        "output_tokens": REQUIRED,
        "cached_tokens": 0,
        "cost_usd": 0.0,
        "latency_ms": None,
    },
}
#: Types whose payload could be left out in 1.0.
OPTIONAL_PAYLOAD_1_0 = {"task.started", "task.completed"}
#: The one tightening of 1.x: 1.2 requires the reference of what these 1.0 types are about.
TIGHTENED_1_2 = {
    "task.created": "task_id",
    "task.started": "task_id",
    "task.completed": "task_id",
    "task.failed": "task_id",
    "agent.action": "agent_id",
    "tool.called": "agent_id",
}


def fixture_events() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}[{i}]", raw) for path in FIXTURE_FILES for i, raw in enumerate(decode_message(path.read_bytes()))
    ]


def lacks_a_1_2_reference(raw: dict[str, Any]) -> bool:
    reference = TIGHTENED_1_2.get(raw["event_type"])
    return reference is not None and reference not in raw


def readable_events() -> list[tuple[str, dict[str, Any]]]:
    """The 1.0 fixtures that 1.2 still reads: all but those without a reference it requires."""
    return [(name, raw) for name, raw in fixture_events() if not lacks_a_1_2_reference(raw)]


def refused_events() -> list[tuple[str, dict[str, Any]]]:
    return [(name, raw) for name, raw in fixture_events() if lacks_a_1_2_reference(raw)]


def test_fixtures_of_released_versions_are_frozen() -> None:
    lines = (FIXTURES_1_0 / "SHA256SUMS").read_text().splitlines()
    recorded = {name: digest for digest, name in (line.split() for line in lines if line.strip())}
    actual = {f"v1.0/{path.name}": hashlib.sha256(path.read_bytes()).hexdigest() for path in FIXTURE_FILES}
    assert actual == recorded, "fixtures of a released version were changed; add new fixtures instead"


def test_fixtures_cover_every_1_0_type() -> None:
    assert {raw["event_type"] for _, raw in fixture_events()} == set(PAYLOADS_1_0)
    assert {raw["schema_version"] for _, raw in fixture_events()} == {"1.0"}


@pytest.mark.parametrize(("name", "raw"), readable_events(), ids=[name for name, _ in readable_events()])
def test_1_0_events_decode_with_the_current_classes(name: str, raw: dict[str, Any]) -> None:
    event = validate_event(raw)
    assert type(event) is EVENT_CLASSES_BY_TYPE[raw["event_type"]]
    assert event.schema_version == "1.0", "the version an event was written with is kept"
    assert str(event.event_id) == raw["event_id"]


@pytest.mark.parametrize(("name", "raw"), readable_events(), ids=[name for name, _ in readable_events()])
def test_1_0_values_survive_a_round_trip(name: str, raw: dict[str, Any]) -> None:
    encoded = orjson.loads(encode_event(validate_event(raw)))
    for field, value in raw.items():
        if field == "occurred_at":
            continue  # normalised to UTC; checked below
        if field == "payload":
            assert {k: encoded["payload"][k] for k in value} == value
        else:
            assert encoded[field] == value, field
    [again] = decode_message(orjson.dumps(encoded))
    assert validate_event(again) == validate_event(raw)


def test_1_0_events_without_a_reference_1_2_requires_are_refused_with_the_reason() -> None:
    """A task.started of no task, an agent.action of no agent: meaningless, so 1.2 refuses them."""
    assert [name for name, _ in refused_events()] == ["minimal.json[0]", "minimal.json[3]"]
    for _, raw in refused_events():
        event_type, reference = raw["event_type"], TIGHTENED_1_2[raw["event_type"]]
        with pytest.raises(EventValidationError) as caught:
            validate_event(raw)
        assert [e["loc"] for e in caught.value.errors] == [[event_type, reference]]
        assert f"{event_type}.{reference}: required field is missing: every {event_type} event names" in str(
            caught.value
        )


def test_offsets_of_1_0_timestamps_are_stored_in_utc() -> None:
    rows = decode_rows(encode_clean([event_to_row(validate_event(raw)) for _, raw in readable_events()]))
    by_id = {row[EVENT_ID]: row for row in rows}
    assert by_id["018e0c4a-3b5d-7e21-8f4a-2c6d8e0a1b0d"][OCCURRED_AT] == "2026-03-02T17:31:00.500000+00:00"
    offset = next(raw for _, raw in refused_events() if raw["occurred_at"].endswith("+02:00")) | {"task_id": "T-9"}
    [row] = decode_rows(encode_clean([event_to_row(validate_event(offset))]))
    assert row[OCCURRED_AT] == "2026-03-02T12:00:00+00:00"


def test_a_bundle_may_mix_1_0_and_current_events() -> None:
    old = orjson.loads((FIXTURES_1_0 / "task.created.json").read_bytes())
    new = orjson.loads(encode_event(TaskCreated(source="s", task_id="T-1", payload=TaskCreatedPayload(title="t"))))
    events = [validate_event(raw) for raw in decode_message(orjson.dumps([old, new]))]
    assert [e.schema_version for e in events] == ["1.0", SCHEMA_VERSION]


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.default_factory is not None:
            result[name] = "factory"
        elif info.default is PydanticUndefined:
            result[name] = REQUIRED
        elif isinstance(info.default, BaseModel):
            result[name] = "model"
        else:
            result[name] = info.default
    return result


@pytest.mark.parametrize("event_type", list(PAYLOADS_1_0))
def test_1_0_fields_keep_their_names_and_defaults_and_new_ones_are_optional(event_type: str) -> None:
    cls = EVENT_CLASSES_BY_TYPE[event_type]
    envelope = {k: v for k, v in _fields(cls).items() if k not in ("event_type", "payload")}
    tightened = {TIGHTENED_1_2[event_type]: REQUIRED} if event_type in TIGHTENED_1_2 else {}
    assert {k: envelope[k] for k in ENVELOPE_1_0} == ENVELOPE_1_0 | tightened
    assert all(envelope[k] is not REQUIRED for k in envelope.keys() - ENVELOPE_1_0.keys())
    payload_cls = cls.model_fields["payload"].annotation
    assert isinstance(payload_cls, type)
    assert issubclass(payload_cls, BaseModel)
    payload = _fields(payload_cls)
    assert {k: payload.get(k, "missing") for k in PAYLOADS_1_0[event_type]} == PAYLOADS_1_0[event_type]
    added = payload.keys() - PAYLOADS_1_0[event_type].keys()
    assert all(payload[k] is not REQUIRED for k in added), f"{event_type}: a field added in 1.x must be optional"
    assert (not cls.model_fields["payload"].is_required()) == (event_type in OPTIONAL_PAYLOAD_1_0)


def test_this_reader_accepts_every_minor_of_its_major_and_no_other() -> None:
    raw = orjson.loads((FIXTURES_1_0 / "task.started.json").read_bytes())
    for version in ("1.0", "1.1", "1.9", "1.250"):
        assert validate_event(raw | {"schema_version": version}).schema_version == version
    for version in (f"{SCHEMA_MAJOR + 1}.0", "0.9"):
        with pytest.raises(Exception, match="not supported"):
            validate_event(raw | {"schema_version": version})


def test_new_event_types_are_unknown_to_nothing_that_1_0_knew() -> None:
    assert set(PAYLOADS_1_0) <= set(EVENT_CLASSES_BY_TYPE)
    assert all(issubclass(cls, Envelope) for cls in EVENT_CLASSES_BY_TYPE.values())
