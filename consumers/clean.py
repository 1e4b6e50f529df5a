"""The clean topic's format: validated events as rows, cheap to read.

A clean message is one JSON object::

    {"columns": ["event_id", "occurred_at", ..., "payload"], "rows": [[...], [...]]}

Each row holds the envelope's fields as scalars (ISO timestamps in UTC, ids as text) and the
payload as JSON *text*. Readers pay for scalars only: the sink hands the payload text to
PostgreSQL's jsonb as it is, the aggregators never parse it. The column list travels with
every message, so columns added later (enrichment) do not break older readers, and a
reader maps a message with other columns onto the ones it knows.
"""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import orjson
import pydantic

from devtrail.schemas.envelope import Envelope
from devtrail.schemas.errors import ContractError
from devtrail.schemas.events import EVENT_ADAPTER

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "occurred_at",
    "event_type",
    "schema_version",
    "source",
    "project_id",
    "agent_id",
    "session_id",
    "task_id",
    "requirement_id",
    "correlation_id",
    "causation_id",
    "payload",
    "attribution",
)
EVENT_ID, OCCURRED_AT, EVENT_TYPE = 0, 1, 2
PROJECT_ID, AGENT_ID = 5, 6
PAYLOAD, ATTRIBUTION = 12, 13
#: Positions of the references enrichment may fill in (``devtrail.consumers.processor.correlate``).
REFERENCE_POSITIONS = {"project_id": 5, "agent_id": 6, "session_id": 7, "task_id": 8, "requirement_id": 9}

Row = list[Any]
_HEAD = b'{"columns":' + orjson.dumps(list(EVENT_COLUMNS)) + b',"rows":['


def event_to_row(event: Envelope, filled: Mapping[str, str] | None = None, attribution: str | None = None) -> Row:
    """A validated event as a clean row (``EVENT_COLUMNS`` order), ready for ``orjson.dumps``.

    ``filled`` holds references the producer left out and correlation found (by field
    name), ``attribution`` how each was matched (JSON text); both ``None`` for an event as
    sent.

    The ids stay ``UUID`` objects and the time a ``datetime`` (in UTC): orjson writes both
    in their canonical text (``str(uuid)``, ``isoformat()``) far faster than Python does,
    and encoding a whole bundle of rows in one call is about six times cheaper than one
    call per row (measured), so rows are encoded late, together (``encode_clean``).
    """
    payload = getattr(event, "payload", None)
    occurred_at = event.occurred_at
    if occurred_at.utcoffset():  # sent with another offset than UTC: rows carry UTC
        occurred_at = occurred_at.astimezone(UTC)
    row = [
        event.event_id,
        occurred_at,
        getattr(event, "event_type", None),
        event.schema_version,
        event.source,
        event.project_id,
        event.agent_id,
        event.session_id,
        event.task_id,
        event.requirement_id,
        event.correlation_id,
        event.causation_id,
        payload.__pydantic_serializer__.to_json(payload).decode() if payload is not None else "{}",
        attribution,
    ]
    if filled:
        for field, value in filled.items():
            row[REFERENCE_POSITIONS[field]] = value
    return row


def encode_clean(rows: Sequence[Row]) -> bytes:
    """One clean message holding ``rows`` (from ``event_to_row`` or ``decode_rows``).

    Raises:
        orjson.JSONEncodeError: a row holds something JSON cannot (e.g. a lone surrogate).
    """
    return _HEAD + orjson.dumps(rows)[1:] + b"}"


def encode_rows(encoded_rows: Sequence[bytes]) -> bytes:
    """One clean message from rows already encoded with ``orjson.dumps``."""
    return _HEAD + b",".join(encoded_rows) + b"]}"


def decode_rows(value: bytes | None) -> list[Row]:
    """The rows of a clean message, in ``EVENT_COLUMNS`` order.

    Raises:
        ValueError: the message is not a clean message.
    """
    decoded = orjson.loads(value or b"")
    if not isinstance(decoded, dict) or not isinstance(decoded.get("rows"), list):
        raise ValueError("not a clean message: expected an object with 'columns' and 'rows'")
    columns = decoded.get("columns")
    rows: list[Row] = decoded["rows"]
    if columns == list(EVENT_COLUMNS):
        return rows
    if not isinstance(columns, list):
        raise ValueError("clean message without a column list")
    where = {name: i for i, name in enumerate(columns)}
    picks = [where.get(name) for name in EVENT_COLUMNS]
    return [[row[i] if i is not None else None for i in picks] for row in rows]


class CleanRow(NamedTuple):
    """A clean row with names: what the sink, the projections and the aggregates read.

    Field order is ``EVENT_COLUMNS``, so a ``CleanRow`` is also the binary-COPY record of
    ``events``. ``payload`` stays JSON text (no reader pays for parsing it); ``event()``
    gives the typed event back to the writers that need the payload.
    """

    event_id: str
    occurred_at: datetime
    event_type: str
    schema_version: str
    source: str
    project_id: str | None
    agent_id: str | None
    session_id: str | None
    task_id: str | None
    requirement_id: str | None
    correlation_id: str | None
    causation_id: str | None
    payload: str
    attribution: str | None = None

    def event(self) -> Any:
        """The typed event (``devtrail.schemas.events.Event``) this row holds.

        Raises:
            MalformedRowError: the row does not hold a valid event (a writer of the clean
                topic other than the processor).
        """
        fields = {
            name: value
            for name, value in zip(EVENT_COLUMNS[:PAYLOAD], self[:PAYLOAD], strict=True)
            if value is not None
        }
        try:
            fields["payload"] = orjson.loads(self.payload)
            return EVENT_ADAPTER.validate_python(fields)
        except (ValueError, pydantic.ValidationError) as exc:
            raise MalformedRowError(f"clean row {self.event_id} does not hold a valid event: {exc}") from None


class MalformedRowError(ContractError):
    """A clean-topic row that is not what the processor writes (another writer of the topic)."""

    kind = "malformed_row"


@dataclass(frozen=True)
class Malformed:
    """A row (or message) a row format could not read: dead-lettered with ``reason``."""

    original: Any
    reason: str


_TEXT_FIELDS = (0, 2, 3, 4)  # event_id, event_type, schema_version, source: never null
_NULLABLE_FIELDS = range(5, 12)


def clean_row(row: Any) -> CleanRow | Malformed:
    """A decoded clean row (a list in ``EVENT_COLUMNS`` order) checked and typed."""
    try:
        if len(row) != len(EVENT_COLUMNS):
            raise ValueError(f"{len(row)} columns, expected {len(EVENT_COLUMNS)}")
        typed = CleanRow(row[0], _utc(row[1]), *row[2:])
        for i in _TEXT_FIELDS:
            if type(typed[i]) is not str:
                raise ValueError(f"{EVENT_COLUMNS[i]} is not a string")
        for i in _NULLABLE_FIELDS:
            if typed[i] is not None and type(typed[i]) is not str:
                raise ValueError(f"{EVENT_COLUMNS[i]} is neither a string nor null")
        if type(typed.payload) is not str:
            raise ValueError("payload is not JSON text")
        if typed.attribution is not None and type(typed.attribution) is not str:
            raise ValueError("attribution is neither JSON text nor null")
    except (TypeError, ValueError) as exc:
        named = isinstance(row, list) and len(row) == len(EVENT_COLUMNS)
        return Malformed(row_as_object(row) if named else row, f"malformed clean row: {exc}")
    return typed


def _utc(stamp: Any) -> datetime:
    if type(stamp) is not str:
        raise ValueError("occurred_at is not a string")
    when = datetime.fromisoformat(stamp)
    if when.utcoffset() is None:
        raise ValueError(f"occurred_at {stamp!r} has no UTC offset")
    return when


class CleanRowFormat:
    """Reads clean messages as ``CleanRow``s (a ``devtrail.consumers.checkpoint.RowFormat``)."""

    @staticmethod
    def decode(topic: str, partition: int, offset: int, value: bytes | None) -> list[CleanRow | Malformed]:
        """The rows of a clean message; a message or row that is not one is ``Malformed``."""
        try:
            rows = decode_rows(value)
        except (ValueError, TypeError, IndexError) as exc:
            return [Malformed(value, f"not a clean message: {exc}")]
        return [clean_row(row) for row in rows]

    @staticmethod
    def event_id(row: CleanRow) -> str:
        return row.event_id

    @staticmethod
    def occurred_at(row: CleanRow) -> datetime | None:
        return row.occurred_at

    @staticmethod
    def as_object(row: CleanRow) -> dict[str, Any]:
        """The row as a JSON object, for a dead letter."""
        return row_as_object(list(row))


CLEAN_ROWS = CleanRowFormat()


class LabelledRow(list[Any]):
    """A row of another table than ``events``, that names its own columns (``row_as_object``)."""

    columns: tuple[str, ...] = ()


def row_as_object(row: Row) -> dict[str, Any]:
    """A row as an object that ``orjson.dumps`` always encodes (for dead letters and tools).

    Columns are named by the row (``LabelledRow``) or are ``EVENT_COLUMNS``. Values JSON has
    no form for are written so that nothing is lost: bytes as ``{"base64": ...}``, a string
    with a lone surrogate with ``\\uXXXX`` escapes, an integer beyond 64 bits as its digits,
    anything else as its text.
    """
    columns = row.columns if isinstance(row, LabelledRow) else EVENT_COLUMNS
    return {name: jsonable(value) for name, value in zip(columns, row, strict=False)}


_JSON_AS_IS = (bool, type(None), float, datetime, date, uuid.UUID)


def jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return value if _encodable(value) else value.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, _JSON_AS_IS):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unique_rows(rows: Sequence[CleanRow]) -> list[CleanRow]:
    """Keep the first row of each ``event_id`` in a batch, in order."""
    seen: dict[str, CleanRow] = {}
    for row in rows:
        seen.setdefault(row.event_id, row)
    return list(seen.values())


def chunk_bounds(sizes: Sequence[int], max_rows: int, max_bytes: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``max_rows`` rows and about ``max_bytes``.

    Args:
        sizes: each row's size in bytes, encoded (or an estimate of it).
        max_rows: rows per chunk at most.
        max_bytes: bytes per chunk, about; a larger row makes a chunk alone.
    """
    bounds: list[tuple[int, int]] = []
    start, size = 0, len(_HEAD) + 2
    for i, row_size in enumerate(sizes):
        if i > start and (i - start >= max_rows or size + row_size + 1 > max_bytes):
            bounds.append((start, i))
            start, size = i, len(_HEAD) + 2
        size += row_size + 1
    if start < len(sizes):
        bounds.append((start, len(sizes)))
    return bounds


def chunk_rows(encoded_rows: Sequence[bytes], max_rows: int, max_bytes: int) -> list[bytes]:
    """Clean messages of at most ``max_rows`` rows and about ``max_bytes`` (a larger row travels alone)."""
    bounds = chunk_bounds([len(r) for r in encoded_rows], max_rows, max_bytes)
    return [encode_rows(encoded_rows[start:stop]) for start, stop in bounds]
