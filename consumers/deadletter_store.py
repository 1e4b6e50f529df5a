"""The dead-letter store: every record of the dead-letter topic, as a row of ``dead_letters``.

Runs as a checkpointed consumer of its own (``devtrail run dead-letters``): its offsets are
stored with the rows, and the primary key is the record's own topic, partition and
offset, so a record is stored once however often it is read.

Whatever a record holds, it becomes a row PostgreSQL takes, and the store never stops on
one: text PostgreSQL refuses (NUL, a lone surrogate) is written escaped (``\\u0000``) while
the original bytes are kept as they are (``original``, bytea); numbers out of a column's
range are dropped; a record that is not a dead-letter record at all is stored as one of
kind ``unreadable_record`` with its own bytes as the original. Should PostgreSQL refuse a
row all the same, the row is stored in a plain ASCII form with the refusal appended.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from devtrail.consumers import metrics
from devtrail.consumers.clean import LabelledRow, Row, row_as_object
from devtrail.consumers.deadletter import MAX_ORIGINAL_BYTES
from devtrail.consumers.poison import is_poison
from devtrail.schemas.errors import ContractError

DEAD_LETTER_COLUMNS = (
    "topic",
    "partition",
    "offset",
    "error_kind",
    "error",
    "errors",
    "source_topic",
    "source_partition",
    "source_offset",
    "event_index",
    "event_id",
    "event_type",
    "original",
    "original_size",
    "original_truncated",
    "dead_lettered_at",
    "original_sha256",
    "errors_total",
)
ERROR, ERRORS, ORIGINAL, DEAD_LETTERED_AT = 4, 5, 12, 15

_INSERT = """
INSERT INTO dead_letters (
    topic, partition, "offset", error_kind, error, errors, source_topic, source_partition,
    source_offset, event_index, event_id, event_type, original, original_size,
    original_truncated, dead_lettered_at, original_sha256, errors_total
)
SELECT * FROM unnest(
    $1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::text[], $8::int[],
    $9::bigint[], $10::int[], $11::text[], $12::text[], $13::bytea[], $14::int[],
    $15::bool[], $16::timestamptz[], $17::text[], $18::int[]
)
ON CONFLICT DO NOTHING
"""
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
_REFUSED_BY_POSTGRES = re.compile("[\x00\ud800-\udfff]")


class DeadLetterRow(LabelledRow):
    """A row of ``dead_letters`` (``DEAD_LETTER_COLUMNS`` order)."""

    columns = DEAD_LETTER_COLUMNS


def record_row(topic: str, partition: int, offset: int, value: bytes | None) -> DeadLetterRow:
    """A dead-letter record (``DeadLetter.to_json``), or anything else, as a ``dead_letters`` row."""
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        return _unreadable_row(topic, partition, offset, value or b"", f"not JSON: {exc}")
    if not isinstance(record, dict) or "error_kind" not in record:
        return _unreadable_row(topic, partition, offset, value or b"", "a JSON value without error_kind")
    original = _original(record.get("original_base64"), value or b"")
    named_id, named_type = _identify(original)
    errors = record.get("errors")
    return DeadLetterRow(
        [
            topic,
            partition,
            offset,
            _text(record.get("error_kind"), 64) or "unknown",
            _text(record.get("error"), 10_000),
            _jsonb(errors if isinstance(errors, list) else []),
            _text(record.get("source_topic"), 300),
            _integer(record.get("source_partition"), INT32_MAX, -1),
            _integer(record.get("source_offset"), INT64_MAX, -1),
            _integer(record.get("event_index"), INT32_MAX, None),
            _text(record.get("event_id"), 200) or named_id,
            _text(record.get("event_type"), 200) or named_type,
            original,
            _integer(record.get("original_size"), INT32_MAX, len(original)),
            record.get("original_truncated") is True,
            _when(record.get("dead_lettered_at")),
            _text(record.get("original_sha256"), 64) or hashlib.sha256(original).hexdigest(),
            _integer(record.get("errors_total"), INT32_MAX, len(errors) if isinstance(errors, list) else 0),
        ]
    )


def _unreadable_row(topic: str, partition: int, offset: int, value: bytes, reason: str) -> DeadLetterRow:
    """A record that is not a dead-letter record, kept whole (its head) for a person to look at."""
    head = value[:MAX_ORIGINAL_BYTES]
    error = f"the dead-letter topic held a record that is not a dead-letter record ({_text(reason, 300)})"
    row = DeadLetterRow([topic, partition, offset, "unreadable_record", error, "[]", "", -1, -1, None, None, None])
    row += [head, len(value), len(head) < len(value), datetime.now(UTC), hashlib.sha256(value).hexdigest(), 0]
    return row


def _original(encoded: Any, value: bytes) -> bytes:
    """The original's bytes from ``original_base64`` (the record's own bytes if that is not base64)."""
    if isinstance(encoded, str):
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            pass
    return value[:MAX_ORIGINAL_BYTES]


def _identify(original: bytes) -> tuple[str | None, str | None]:
    """``event_id`` and ``event_type`` of the original, when it is a JSON object that has them."""
    try:
        decoded = orjson.loads(original)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(decoded, dict):
        return None, None
    return _text(decoded.get("event_id"), 200) or None, _text(decoded.get("event_type"), 200) or None


def _text(value: Any, limit: int) -> str:
    """A string PostgreSQL's text takes: NUL and lone surrogates written ``\\uXXXX``, cut to ``limit``."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return _REFUSED_BY_POSTGRES.sub(lambda m: f"\\u{ord(m.group()):04x}", text[:limit])


def _storable(value: Any) -> Any:
    """A JSON value jsonb takes: every string (key or value) escaped as ``_text`` does."""
    if isinstance(value, str):
        return _text(value, 10_000)
    if isinstance(value, dict):
        return {_text(k, 1000): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _jsonb(value: Any) -> str:
    try:
        return orjson.dumps(_storable(value)).decode()
    except (orjson.JSONEncodeError, RecursionError):
        return "[]"


def _integer(value: Any, largest: int, default: int | None) -> int | None:
    if type(value) is int and -largest - 1 <= value <= largest:
        return value
    return default


def _when(value: Any) -> datetime:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None:
        return datetime.now(UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _plain_row(row: Row, refusal: BaseException) -> DeadLetterRow:
    """The row in a form any PostgreSQL takes: ASCII text, the refusal appended to the reason."""
    plain = DeadLetterRow(row)
    for position, value in enumerate(plain):
        if isinstance(value, str):
            plain[position] = value.encode("ascii", "backslashreplace").decode().replace("\x00", "\\x00")
    reason = f"{type(refusal).__name__}: {getattr(refusal, 'sqlstate', '')} {refusal}"
    plain[ERROR] = f"{plain[ERROR]} [stored in plain form: PostgreSQL refused the row: {_text(reason, 500)}]"
    plain[ERRORS] = "[]"
    return plain


class UnencodableRecordError(ContractError):
    """A ``dead_letters`` row asyncpg cannot encode (judged refused data: halved, stored plain)."""

    kind = "unencodable_record"


class DeadLetterRecordFormat:
    """Reads the dead-letter topic as ``dead_letters`` rows (a ``devtrail.consumers.checkpoint.RowFormat``)."""

    @staticmethod
    def decode(topic: str, partition: int, offset: int, value: bytes | None) -> list[DeadLetterRow]:
        """The row of one record of the dead-letter topic (never raises, never ``Malformed``)."""
        return [record_row(topic, partition, offset, value)]

    @staticmethod
    def occurred_at(row: DeadLetterRow) -> datetime | None:
        """When the record was dead-lettered."""
        when = row[DEAD_LETTERED_AT]
        return when if isinstance(when, datetime) else None

    @staticmethod
    def as_object(row: DeadLetterRow) -> dict[str, Any]:
        return row_as_object(row)


DEAD_LETTER_RECORDS = DeadLetterRecordFormat()


class DeadLetterStore:
    """``Writer`` of ``dead_letters`` (see ``devtrail.consumers.checkpoint.host``)."""

    name = "dead_letters"

    async def write(self, conn: asyncpg.Connection, rows: list[DeadLetterRow]) -> int:
        """Insert the records not stored yet; return how many were inserted.

        A batch PostgreSQL refuses is halved by the consumer until the row stands alone;
        a lone refused row is stored in plain form (``_plain_row``) instead.
        """
        if len(rows) > 1:
            return await self._insert(conn, rows)
        try:
            async with conn.transaction():
                return await self._insert(conn, rows)
        except Exception as exc:  # refused data (SQLSTATE 22/23/54, or not encodable): see consumers.poison
            if not is_poison(exc):
                raise
            return await self._insert(conn, [_plain_row(rows[0], exc)])

    async def _insert(self, conn: asyncpg.Connection, rows: list[DeadLetterRow]) -> int:
        columns = list(zip(*rows, strict=True))
        try:
            status: str = await conn.execute(_INSERT, *columns)
        except (ValueError, TypeError) as exc:  # asyncpg could not encode a value: refused data
            raise UnencodableRecordError(f"{type(exc).__name__}: {exc}") from exc
        inserted = int(status.rsplit(" ", 1)[-1])
        metrics.EVENTS_IN.labels(self.name, "*").inc(len(rows))
        return inserted
