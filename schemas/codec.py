"""Wire format: one JSON event per Kafka message, or a bundle (a JSON array of events).

Any Kafka client can publish a single JSON object. The devtrail producer packs events
bound for the same partition into one array, so a processor pays its per-message cost
once per bundle instead of once per event.

What is accepted is stored as sent, or rejected with reasons a person reads
(``devtrail.schemas.reasons``): types are strict on the wire, ``event_id`` and ``occurred_at`` must
be sent, and repeated keys, NaN, Infinity, numbers out of range and strings holding NUL
(PostgreSQL cannot store it) or a lone surrogate are rejected (``devtrail.schemas.wire``).
``devtrail.schemas.wire.validate_message`` is the fast path for whole messages; ``decode_message``
and ``validate_event`` take a close look and say why. ``encode_event`` refuses to encode
a string holding NUL, and ``EVENT_ADAPTER.validate_json`` / ``EVENT_LIST_ADAPTER.validate_json``
reject one in JSON bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from devtrail.schemas.envelope import Envelope
from devtrail.schemas.errors import DecodeError, EventValidationError
from devtrail.schemas.events import EVENT_ADAPTER, EVENT_CLASSES_BY_TYPE, EVENT_LIST_ADAPTER, Event
from devtrail.schemas.nul import NUL_ERROR_MESSAGE, NUL_ERROR_TYPE, JsonPath, event_nul_locs, has_nul_escape
from devtrail.schemas.reasons import MAX_ERRORS, ErrorEntry, entry, json_kind, readable, summary
from devtrail.schemas.wire import SENT_BY_PRODUCER, decode_exact, encode_raw, plain_event, wire_problems

__all__ = [
    "decode_message",
    "encode_bundle",
    "encode_event",
    "has_nul_escape",
    "join_encoded",
    "validate_event",
]

_MISSING_ON_WIRE = {
    "event_id": "required on the wire: the producer sets it once, and a re-sent copy keeps it (deduplication key)",
    "occurred_at": "required on the wire: when it happened (the time it was processed is no substitute)",
}


def decode_message(value: bytes | None, marks: list[str] | None = None) -> list[Any]:
    """Split a Kafka message value into raw (still unvalidated) event objects.

    Args:
        value: the message value.
        marks: if given, receives a note for each repeated key and each number JSON cannot
            hold (``devtrail.schemas.wire.decode_exact``); with none, ``validate_event(raw, plain=True)``
            takes a shorter way for valid events.

    Returns:
        The JSON values it carries: one for a single event, all of them for a bundle.
        Repeated keys and numbers JSON cannot hold are kept, so that ``validate_event``
        rejects them.

    Raises:
        DecodeError: the value is empty, not UTF-8, not JSON, an empty array, or neither an
            object nor an array.
    """
    decoded = decode_exact(value, marks)
    if isinstance(decoded, dict):
        return [decoded]
    if isinstance(decoded, list):
        if not decoded:
            raise DecodeError("an empty array carries no event; a bundle holds at least one")
        return decoded
    raise DecodeError(f"expected a JSON object or array, got {json_kind(decoded)}")


def validate_event(raw: Any, plain: bool = False) -> Event:
    """Validate one raw JSON value as an event of the catalog, as the wire contract says.

    Args:
        raw: one value returned by ``decode_message`` (or any JSON-like value).
        plain: ``decode_message`` noted no marks for the message ``raw`` came from, so a
            valid event is found the short way (``devtrail.schemas.wire.plain_event``).

    Raises:
        EventValidationError: with at most ``MAX_ERRORS`` readable errors (paths, messages,
            types) and their total; a string holding NUL is reported with type
            ``string_contains_nul``.
    """
    if not isinstance(raw, dict):
        error = entry((), f"an event must be a JSON object, got {json_kind(raw)}", "model_type")
        raise EventValidationError(summary([error]), [error])
    if plain and (quick := plain_event(raw)) is not None:
        return quick
    prefix = _loc_prefix(raw)
    errors, total = _wire_errors(raw, prefix)
    if any(e["type"] in _UNVALIDATABLE for e in errors):
        raise EventValidationError(summary(errors, total), errors, total)
    try:
        event: Event = EVENT_ADAPTER.validator.validate_json(_encoded(raw, bool(errors)))  # NUL found above
    except ValidationError as exc:
        details = exc.errors(include_url=False)
        if not (errors and details[0]["type"] == "json_invalid"):  # that is a problem reported above
            errors += [readable(d) for d in details[: max(0, MAX_ERRORS - len(errors))]]
            total += len(details)
    if errors:
        raise EventValidationError(summary(errors, total), errors, total)
    return event


#: Problems after which pydantic is not asked (the value cannot be written as JSON to it).
_UNVALIDATABLE = frozenset({"too_deep", "not_json"})


def _wire_errors(raw: dict[str, Any], prefix: JsonPath) -> tuple[list[ErrorEntry], int]:
    """The first ``MAX_ERRORS`` things the wire forbids in ``raw`` (``devtrail.schemas.wire``), and their total."""
    errors: list[ErrorEntry] = []
    total = 0
    for problem in wire_problems(raw, prefix):
        total += 1
        if len(errors) < MAX_ERRORS:
            errors.append(problem)
    for name in sorted(SENT_BY_PRODUCER - raw.keys()):
        total += 1
        if len(errors) < MAX_ERRORS:
            errors.append(entry((*prefix, name), _MISSING_ON_WIRE[name], "missing"))
    return errors, total


def _encoded(raw: dict[str, Any], exact: bool) -> bytes:
    """JSON text to validate: orjson's when the value is plain JSON (fast), else as sent."""
    if not exact:
        try:
            return orjson.dumps(raw)
        except orjson.JSONEncodeError:
            pass
    return encode_raw(raw)


def _loc_prefix(raw: dict[str, Any]) -> JsonPath:
    """pydantic's errors for the tagged ``Event`` union start with a known ``event_type``."""
    event_type = raw.get("event_type")
    return (event_type,) if isinstance(event_type, str) and event_type in EVENT_CLASSES_BY_TYPE else ()


def _nul_errors(locs: Iterable[JsonPath]) -> list[ErrorEntry]:
    return [entry(loc, NUL_ERROR_MESSAGE, NUL_ERROR_TYPE) for loc in locs]


def _reject_nul(event: Envelope) -> None:
    errors = _nul_errors(event_nul_locs(event.model_dump()))
    if errors:
        raise EventValidationError(summary(errors), errors[:MAX_ERRORS], len(errors))


def encode_event(event: Envelope) -> bytes:
    """Encode one event as a single JSON object.

    Raises:
        EventValidationError: a string in the event holds NUL (PostgreSQL cannot store it).
    """
    encoded = event.__pydantic_serializer__.to_json(event)
    if has_nul_escape(encoded):
        _reject_nul(event)
    return encoded


def encode_bundle(events: Sequence[Event]) -> bytes:
    """Encode validated events as one bundle (a JSON array).

    Raises:
        EventValidationError: a string in one of the events holds NUL.
    """
    encoded = EVENT_LIST_ADAPTER.dump_json(list(events))
    if has_nul_escape(encoded):
        for event in events:
            _reject_nul(event)
    return encoded


def join_encoded(encoded_events: Iterable[bytes]) -> bytes:
    """Join already-encoded JSON objects into a bundle without re-encoding them."""
    return b"[" + b",".join(encoded_events) + b"]"
