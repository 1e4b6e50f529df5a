"""Dead-letter records stay bounded, and the store turns any record into a row PostgreSQL takes."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtrail.consumers.clean import row_as_object
from devtrail.consumers.deadletter import MAX_ORIGINAL_BYTES, MAX_RECORD_BYTES, DeadLetter
from devtrail.consumers.deadletter_store import DEAD_LETTER_COLUMNS, DeadLetterRow, record_row
from devtrail.schemas.errors import DecodeError, EventValidationError
from devtrail.schemas.wire import key_bound

REFUSED_BY_POSTGRES = re.compile("[\x00\ud800-\udfff]")


def record(**changes: Any) -> bytes:
    dead = DeadLetter("validation", "bad", "devtrail.task", 1, 2, b'{"event_id": "x"}', event_index=None)
    return json.dumps(orjson.loads(dead.to_json()) | changes).encode()  # json: any integer


def storable(row: DeadLetterRow) -> None:
    """What PostgreSQL would refuse: NUL or lone surrogates in text, ints out of their column's range."""
    assert len(row) == len(DEAD_LETTER_COLUMNS)
    for name, value in zip(DEAD_LETTER_COLUMNS, row, strict=True):
        if isinstance(value, str):
            assert not REFUSED_BY_POSTGRES.search(value), name
        elif name in ("partition", "source_partition", "event_index", "original_size", "errors_total"):
            assert value is None or -(2**31) <= value < 2**31, name
    orjson.loads(row[5])  # errors: valid JSON for jsonb
    assert isinstance(row[12], bytes)
    orjson.dumps(row_as_object(row))  # the consumer's dead-letter path can always encode it


# ---- the record ----------------------------------------------------------------------------


def test_a_record_keeps_the_head_of_a_large_original_with_its_size_and_hash() -> None:
    original = b"x" * (MAX_ORIGINAL_BYTES * 3)
    body = orjson.loads(DeadLetter("decode", "bad", "t", 0, 0, original).to_json())
    assert (body["original_size"], body["original_truncated"]) == (len(original), True)
    assert body["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert base64.b64decode(body["original_base64"]) == original[:MAX_ORIGINAL_BYTES]


def test_a_character_cut_by_the_head_is_dropped_from_the_text_but_not_from_the_bytes() -> None:
    original = b"x" * (MAX_ORIGINAL_BYTES - 1) + "é".encode()
    body = orjson.loads(DeadLetter("decode", "bad", "t", 0, 0, original).to_json())
    assert body["original"] == "x" * (MAX_ORIGINAL_BYTES - 1)
    assert base64.b64decode(body["original_base64"]) == original[:MAX_ORIGINAL_BYTES]


def test_a_record_is_bounded_whatever_its_errors_and_original_hold() -> None:
    errors: list[dict[str, object]] = [
        {"loc": ["\x00" * 500] * 1000, "msg": "\x01" * 100_000, "type": "t" * 1000} for _ in range(1000)
    ]
    exc = EventValidationError("\x00" * 1_000_000, errors, 10**6)
    dead = DeadLetter.for_error(exc, "t", 0, 0, bytes(range(32)) * 100_000, None, {"event_id": "\x00" * 10**5})
    encoded = dead.to_json()
    assert len(encoded) <= MAX_RECORD_BYTES
    body = orjson.loads(encoded)
    assert body["errors_total"] == 10**6 and len(body["errors"]) <= 20
    assert "\x00" not in encoded.decode() and len(body["event_id"]) < 1000


def test_a_decode_error_has_no_error_list() -> None:
    body = orjson.loads(DeadLetter.for_error(DecodeError("not JSON"), "t", 0, 0, b"\xff").to_json())
    assert (body["errors"], body["errors_total"], body["original"]) == ([], 0, None)


# ---- the store's row ---------------------------------------------------------------------


def test_a_record_becomes_a_row() -> None:
    row = record_row("devtrail.dead-letters", 0, 5, record())
    storable(row)
    assert row[:5] == ["devtrail.dead-letters", 0, 5, "validation", "bad"]
    assert row[10] == "x" and bytes(row[12]) == b'{"event_id": "x"}'


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (record(event_id="a\x00b", event_type="task.created\x00"), {10: "a\\u0000b", 11: "task.created\\u0000"}),
        (record(errors=[{"loc": ["k\x00"], "msg": "m\x00", "type": "t"}]), {5: '[{"loc":["k\\\\u0000"]'}),
        (record(error="\x00" * 3, error_kind="v\x00"), {4: "\\u0000" * 3, 3: "v\\u0000"}),
        (record(original_base64="not base64!"), {3: "validation"}),
        (record(source_partition=2**40, source_offset=2**70, event_index="x"), {7: -1, 8: -1, 9: None}),
        (record(dead_lettered_at="yesterday"), {3: "validation"}),
        (record(dead_lettered_at="2026-01-01T00:00:00"), {15: datetime(2026, 1, 1, tzinfo=UTC)}),
        (record(original_truncated="false"), {14: False}),
        (b'{"error_kind": 5, "errors": "no"}', {3: "5", 5: "[]", 6: ""}),
        (b"not json at all \x00\xff", {3: "unreadable_record", 12: b"not json at all \x00\xff"}),
        (b'"\\ud800"', {3: "unreadable_record"}),
        (b"[1, 2]", {3: "unreadable_record"}),
        (None, {3: "unreadable_record", 12: b""}),
    ],
)
def test_whatever_a_record_holds_its_row_is_storable(value: bytes | None, where: dict[int, Any]) -> None:
    row = record_row("devtrail.dead-letters", 0, 1, value)
    storable(row)
    for position, expected in where.items():
        if isinstance(expected, str) and position == 5:
            assert str(row[position]).startswith(expected), row[position]
        else:
            assert row[position] == expected, (DEAD_LETTER_COLUMNS[position], row[position])


def test_the_event_id_and_type_come_from_the_original_when_the_record_does_not_name_them() -> None:
    original = b'{"event_id": "i\\u0000d", "event_type": "task.created"}'
    row = record_row(
        "t", 0, 0, record(event_id=None, event_type=None, original_base64=base64.b64encode(original).decode())
    )
    assert (row[10], row[11]) == ("i\\u0000d", "task.created")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_make_a_storable_row(value: bytes) -> None:
    storable(record_row("t", 0, 0, value))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["error_kind", "error", "errors", "event_id", "source_offset"]), st.text()))
def test_any_record_fields_make_a_storable_row(fields: dict[str, Any]) -> None:
    storable(record_row("t", 0, 0, record(**fields)))


def test_a_row_of_any_table_can_be_dead_lettered_as_json() -> None:
    row = record_row("t", 0, 0, record())
    row[4] = "lone \ud800 and \x00"
    encoded = orjson.loads(orjson.dumps(row_as_object(row)))
    assert encoded["original"] == {"base64": base64.b64encode(b'{"event_id": "x"}').decode()}
    assert encoded["error"] == "lone \\ud800 and \x00"
    assert set(encoded) == set(DEAD_LETTER_COLUMNS)


def test_an_events_row_is_named_by_the_event_columns() -> None:
    encoded = row_as_object(["id", "2026-01-01T00:00:00+00:00", "task.created", 2**70, float("nan")])
    assert orjson.loads(orjson.dumps(encoded)) == {
        "event_id": "id",
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "event_type": "task.created",
        "schema_version": str(2**70),
        "source": "nan",
    }


# ---- the key count the hot path relies on --------------------------------------------------

keys = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\\'), max_size=4)
layouts = st.sampled_from(["", " ", "\n  ", "\t", "\r\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys, st.text(max_size=6), layouts, layouts), max_size=8))
def test_the_key_bound_is_never_below_the_keys_written(pairs: list[tuple[str, str, str, str]]) -> None:
    body = ",".join(
        f"{orjson.dumps(k).decode()}{before}:{after}{orjson.dumps(v).decode()}" for k, v, before, after in pairs
    )
    assert key_bound(("{" + body + "}").encode()) >= len(pairs)
