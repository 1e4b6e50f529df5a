from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from devtrail.consumers.clean import OCCURRED_AT, decode_rows, encode_clean, event_to_row
from devtrail.schemas.events import EVENT_ADAPTER, TaskCompleted, TaskCreated
from devtrail.schemas.ids import uuid7, uuid7_millis
from tests.factories import llm_called, task_created


def test_uuid7_has_version_variant_and_current_time() -> None:
    before = int(datetime.now(UTC).timestamp() * 1000)
    value = uuid7()
    after = int(datetime.now(UTC).timestamp() * 1000)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= uuid7_millis(value) <= after


def test_uuid7_is_a_plain_uuid_with_74_random_bits() -> None:
    """``uuid7`` builds the UUID without its constructor: it must behave as one built by it."""
    made = [uuid7() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for value in made[:50]:
        again = uuid.UUID(str(value))
        assert (again, hash(again), again.int, again.bytes) == (value, hash(value), value.int, value.bytes)
        assert value.is_safe is uuid.SafeUUID.unknown
        assert pickle.loads(pickle.dumps(value)) == value
        assert TaskCompleted.model_validate({**_minimal_completed(), "event_id": value}).event_id == value
    # Every one of the 74 random bits (12 after the version, 62 after the variant) takes both values.
    random_bits = [(u.int >> 64) & 0xFFF | (u.int & 0x3FFF_FFFF_FFFF_FFFF) << 12 for u in made]
    for bit in range(74):
        ones = sum(r >> bit & 1 for r in random_bits)
        assert 800 < ones < 1200, (bit, ones)


def _minimal_completed() -> dict[str, object]:
    return {"event_type": "task.completed", "source": "t", "task_id": "T-1", "occurred_at": datetime.now(UTC)}


def test_uuid7_sorts_by_creation_time_across_milliseconds() -> None:
    first = uuid7()
    while uuid7_millis(second := uuid7()) == uuid7_millis(first):
        pass
    assert first < second


def test_occurred_at_keeps_its_instant_and_the_clean_row_carries_it_in_utc() -> None:
    plus_two = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event = task_created(occurred_at=plus_two.isoformat())
    assert event.occurred_at == plus_two
    [row] = decode_rows(encode_clean([event_to_row(event)]))
    assert row[OCCURRED_AT] == "2026-05-01T10:00:00+00:00"


@pytest.mark.parametrize(
    ("occurred_at", "message"),
    [
        ("2026-01-01T10:00:00", "timezone"),
        ("9999-01-01T00:00:00Z", "less than 2100-01-01"),
        ("1999-12-31T23:59:59Z", "greater than or equal to 2000-01-01"),
    ],
)
def test_occurred_at_must_be_aware_and_sane(occurred_at: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        task_created(occurred_at=occurred_at)


def test_unknown_major_schema_version_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"schema_version must be 1\.MINOR .* other majors are not supported"):
        task_created(schema_version="2.0")


def test_unknown_fields_are_rejected() -> None:
    raw = task_created().model_dump(mode="json") | {"surprise": 1}
    with pytest.raises(ValidationError, match="surprise"):
        EVENT_ADAPTER.validate_python(raw)


def test_negative_tokens_are_rejected() -> None:
    with pytest.raises(ValidationError, match="input_tokens"):
        llm_called(tokens_in=-1)


def test_discriminator_picks_the_class_from_event_type() -> None:
    raw = TaskCompleted(source="s", task_id="T").model_dump(mode="json")
    assert type(EVENT_ADAPTER.validate_python(raw)) is TaskCompleted


def test_partition_key_prefers_task_then_session_then_correlation() -> None:
    assert task_created(task_id="T", session_id="S").partition_key() == b"T"
    assert llm_called(session_id="S", correlation_id="C").partition_key() == b"S"
    assert llm_called(session_id=None, correlation_id="C").partition_key() == b"C"
    lone = llm_called(session_id=None)
    assert lone.partition_key() == str(lone.event_id).encode()


def test_events_are_immutable() -> None:
    event: TaskCreated = task_created()
    with pytest.raises(ValidationError):
        event.task_id = "other"  # type: ignore[misc]
