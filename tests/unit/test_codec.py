from __future__ import annotations

import orjson
import pytest

from devtrail.schemas.codec import decode_message, encode_bundle, encode_event, join_encoded, validate_event
from devtrail.schemas.errors import DecodeError, EventValidationError
from devtrail.schemas.events import TaskCreated
from tests.factories import llm_called, task_created


def test_single_event_roundtrips() -> None:
    event = task_created()
    [raw] = decode_message(encode_event(event))
    assert validate_event(raw) == event


def test_bundle_roundtrips_in_order() -> None:
    events = [task_created(task_id=f"T{i}") for i in range(5)]
    decoded = [validate_event(raw) for raw in decode_message(encode_bundle(events))]
    assert decoded == events


def test_joined_encodings_are_a_bundle() -> None:
    events = [task_created(), llm_called()]
    assert decode_message(join_encoded(encode_event(e) for e in events)) == orjson.loads(encode_bundle(events))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"{nope", "not valid JSON"),
        (b'"a string"', "got a string"),
        (b"42", "got an integer"),
    ],
)
def test_undecodable_messages_say_why(value: bytes | None, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_message(value)


def test_validation_error_carries_paths() -> None:
    raw = orjson.loads(encode_event(llm_called()))
    raw["payload"]["output_tokens"] = -3
    del raw["source"]
    with pytest.raises(EventValidationError) as caught:
        validate_event(raw)
    locs = {tuple(e["loc"]) for e in caught.value.errors}  # type: ignore[arg-type]
    assert ("llm.called", "payload", "output_tokens") in locs
    assert ("llm.called", "source") in locs
    assert "output_tokens" in str(caught.value)


def test_unknown_event_type_is_a_validation_error() -> None:
    with pytest.raises(EventValidationError, match=r"unknown event_type 'no\.such\.type'"):
        validate_event({"event_type": "no.such.type", "source": "x"})


def test_non_object_in_bundle_is_a_validation_error() -> None:
    with pytest.raises(EventValidationError):
        validate_event([1, 2])


def test_encoded_event_is_plain_json_with_utc_timestamp() -> None:
    body = orjson.loads(encode_event(task_created()))
    assert body["event_type"] == TaskCreated.model_fields["event_type"].default
    assert body["occurred_at"].endswith("Z")


def test_a_python_value_that_is_no_json_is_a_validation_error_not_a_crash() -> None:
    raw = orjson.loads(encode_event(task_created())) | {"occurred_at": object()}
    with pytest.raises(EventValidationError, match="occurred_at: not a JSON value: a Python object"):
        validate_event(raw)
