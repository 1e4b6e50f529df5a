"""The typed view of clean rows: named fields, the typed event back, malformed rows named."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from devtrail.consumers.clean import (
    CLEAN_ROWS,
    EVENT_COLUMNS,
    CleanRow,
    Malformed,
    MalformedRowError,
    encode_rows,
    event_to_row,
)
from devtrail.schemas.events import LlmCalled, TaskCreated
from tests.factories import llm_called, task_created


def decode(*rows: object) -> list[CleanRow | Malformed]:
    return list(CLEAN_ROWS.decode("clean", 0, 7, encode_rows([orjson.dumps(r) for r in rows])))


def test_a_clean_row_has_names_and_gives_its_typed_event_back() -> None:
    event = llm_called()
    (row,) = decode(event_to_row(event))
    assert isinstance(row, CleanRow)
    assert row.event_id == str(event.event_id)
    assert row.session_id == event.session_id
    assert row.occurred_at == event.occurred_at.astimezone(UTC)
    assert row._fields == EVENT_COLUMNS
    typed = row.event()
    assert isinstance(typed, LlmCalled)
    assert typed == event


def test_rows_from_another_writer_of_the_topic_are_malformed_with_a_reason() -> None:
    good = event_to_row(task_created(task_id="ok"))
    bad_date = [*good[:1], "yesterday", *good[2:]]
    naive = [*good[:1], "2026-01-01T10:00:00", *good[2:]]
    number_id = [*good[:5], 42, *good[6:]]
    short = good[:5]
    rows = decode(good, bad_date, naive, number_id, short, "text", {"a": 1})
    assert isinstance(rows[0], CleanRow)
    reasons = [r.reason for r in rows[1:] if isinstance(r, Malformed)]
    assert len(reasons) == 6
    assert "Invalid isoformat string: 'yesterday'" in reasons[0]
    assert "no UTC offset" in reasons[1]
    assert "project_id is neither a string nor null" in reasons[2]
    assert "5 columns" in reasons[3]
    bad = rows[1]
    assert isinstance(bad, Malformed) and bad.original["task_id"] == "ok"  # named, for the dead letter


def test_a_message_that_is_not_a_clean_message_is_one_malformed_item() -> None:
    (item,) = CLEAN_ROWS.decode("clean", 0, 1, b"not json")
    assert isinstance(item, Malformed) and item.original == b"not json"
    (item,) = CLEAN_ROWS.decode("clean", 0, 1, b'{"columns": ["event_id"], "rows": [1]}')
    assert isinstance(item, Malformed)


def test_event_of_a_row_whose_payload_is_not_the_types_is_refused_data() -> None:
    row = decode(event_to_row(task_created(task_id="T")))[0]
    assert isinstance(row, CleanRow)
    broken = row._replace(payload='{"title": 5}')
    with pytest.raises(MalformedRowError, match="does not hold a valid event"):
        broken.event()
    assert isinstance(row.event(), TaskCreated)


def test_rows_with_extra_columns_keep_the_known_ones() -> None:
    event = task_created(task_id="T")
    row = [*event_to_row(event), "extra"]
    message = orjson.dumps({"columns": [*EVENT_COLUMNS, "later"], "rows": [row]})
    (typed,) = CLEAN_ROWS.decode("clean", 0, 0, message)
    assert isinstance(typed, CleanRow) and typed.task_id == "T"
    assert typed.occurred_at.tzinfo is not None and typed.occurred_at <= datetime.now(UTC)
