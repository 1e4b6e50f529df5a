"""The dead-letter store: every record of the dead-letter topic, as a row of ``dead_letters``.

Runs as a checkpointed consumer of its own (``devtrail run dead-letters``): its offsets are
stored with the rows, and the primary key is the record's own topic, partition and
offset, so a record is stored once however often it is read.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from consumers import metrics
from consumers.clean import Row

_INSERT = """
INSERT INTO dead_letters (
    topic, partition, "offset", error_kind, error, errors, source_topic, source_partition,
    source_offset, event_index, event_id, event_type, original, original_size,
    original_truncated, dead_lettered_at
)
SELECT * FROM unnest(
    $1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::text[], $8::int[],
    $9::bigint[], $10::int[], $11::text[], $12::text[], $13::bytea[], $14::int[],
    $15::bool[], $16::timestamptz[]
)
ON CONFLICT DO NOTHING
"""


def record_row(topic: str, partition: int, offset: int, value: bytes | None) -> Row:
    """A dead-letter record (``DeadLetter.to_json``) as a ``dead_letters`` row.

    Raises:
        ValueError: the value is not a dead-letter record.
    """
    record: dict[str, Any] = orjson.loads(value or b"")
    if not isinstance(record, dict) or "error_kind" not in record:
        raise ValueError("not a dead-letter record")
    original = base64.b64decode(record.get("original_base64") or b"")
    event_id, event_type = _identify(original)
    return [
        topic,
        partition,
        offset,
        str(record["error_kind"]),
        str(record.get("error", "")),
        orjson.dumps(record.get("errors") or []).decode(),
        str(record.get("source_topic", "")),
        int(record.get("source_partition", -1)),
        int(record.get("source_offset", -1)),
        record.get("event_index"),
        event_id,
        event_type,
        original,
        int(record.get("original_size", len(original))),
        bool(record.get("original_truncated", False)),
        datetime.fromisoformat(record["dead_lettered_at"]),
    ]


def _identify(original: bytes) -> tuple[str | None, str | None]:
    """``event_id`` and ``event_type`` of the original, when it is a JSON object that has them."""
    try:
        decoded = orjson.loads(original)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(decoded, dict):
        return None, None
    event_id, event_type = decoded.get("event_id"), decoded.get("event_type")
    return (
        event_id if isinstance(event_id, str) and len(event_id) <= 64 else None,
        event_type if isinstance(event_type, str) and len(event_type) <= 64 else None,
    )


class DeadLetterStore:
    """``BatchWriter`` for ``dead_letters`` (see ``consumers.checkpoint``)."""

    stage = "dead_letters"

    @staticmethod
    def decode(topic: str, partition: int, offset: int, value: bytes | None) -> list[Row]:
        return [record_row(topic, partition, offset, value)]

    async def write(self, conn: asyncpg.Connection, rows: list[Row]) -> int:
        """Insert the records not stored yet; return how many were inserted."""
        columns = list(zip(*rows, strict=True))
        status: str = await conn.execute(_INSERT, *columns)
        inserted = int(status.rsplit(" ", 1)[-1])
        metrics.EVENTS_IN.labels(self.stage, "*").inc(len(rows))
        return inserted
