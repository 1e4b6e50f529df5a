"""Wire format: one JSON event per Kafka message, or a bundle (a JSON array of events).

Any Kafka client can publish a single JSON object. The devtrail producer packs events
bound for the same partition into one array, so a processor pays its per-message cost
once per bundle instead of once per event.

Strings holding the NUL character are rejected (``schemas.nul`` says how, cheaply):
``decode_message`` marks the events that hold one, ``validate_event`` rejects a marked
event with the path of each such string, ``encode_event`` refuses to encode one, and
``EVENT_ADAPTER.validate_json`` / ``EVENT_LIST_ADAPTER.validate_json`` reject them in
JSON bytes. Only ``validate_python`` on a dict that did not come from ``decode_message``
does not look.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.envelope import Envelope
from schemas.errors import DecodeError, EventValidationError
from schemas.events import EVENT_ADAPTER, EVENT_LIST_ADAPTER, Event
from schemas.nul import NUL_ERROR_MESSAGE, NUL_ERROR_TYPE, JsonPath, event_nul_locs, has_nul_escape

__all__ = [
    "decode_message",
    "encode_bundle",
    "encode_event",
    "has_nul_escape",
    "join_encoded",
    "validate_event",
]


class _NulBearingEvent(dict[str, Any]):
    """A decoded event in which some string (a value or a key) holds NUL.

    Equal to, and encoded by orjson exactly like, the plain dict it copies;
    ``validate_event`` rejects it with ``nul_locs``.
    """

    __slots__ = ("nul_locs",)
    nul_locs: list[JsonPath]


def decode_message(value: bytes | None) -> list[Any]:
    """Split a Kafka message value into raw (still unvalidated) event objects.

    Args:
        value: the message value.

    Returns:
        The JSON values it carries: one for a single event, all of them for a bundle. An
        event holding a NUL character comes marked, so that ``validate_event`` rejects it.

    Raises:
        DecodeError: the value is empty, not JSON, or neither an object nor an array.
    """
    if not value:
        raise DecodeError("empty message value; expected a JSON object or array")
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from exc
    if isinstance(decoded, dict):
        raws = [decoded]
    elif isinstance(decoded, list):
        raws = decoded
    else:
        raise DecodeError(f"expected a JSON object or array, got {type(decoded).__name__}")
    if has_nul_escape(value):  # rare
        raws = [_mark_nul(raw) for raw in raws]
    return raws


def validate_event(raw: Any) -> Event:
    """Validate one raw JSON value as an event of the catalog.

    Args:
        raw: one value returned by ``decode_message`` (NUL characters are found there).

    Raises:
        EventValidationError: with pydantic's error list (paths, messages, types); a string
            holding NUL is reported with type ``string_contains_nul``.
    """
    if type(raw) is _NulBearingEvent:
        errors = _nul_errors(raw.nul_locs)
        try:
            EVENT_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            errors += _pydantic_errors(exc)
        raise EventValidationError(_summary(errors), errors)
    try:
        return EVENT_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        errors = _pydantic_errors(exc)
        raise EventValidationError(_summary(errors), errors) from exc


def _pydantic_errors(exc: ValidationError) -> list[dict[str, object]]:
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _mark_nul(raw: Any) -> Any:
    locs = event_nul_locs(raw) if isinstance(raw, dict) else []
    if not locs:
        return raw
    marked = _NulBearingEvent(raw)
    marked.nul_locs = locs
    return marked


def _nul_errors(locs: Iterable[JsonPath]) -> list[dict[str, object]]:
    return [{"loc": list(loc), "msg": NUL_ERROR_MESSAGE, "type": NUL_ERROR_TYPE} for loc in locs]


def _reject_nul(event: Envelope) -> None:
    errors = _nul_errors(event_nul_locs(event.model_dump()))
    if errors:
        raise EventValidationError(_summary(errors), errors)


def _summary(errors: Sequence[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<event>'}: {e['msg']}" for e in errors[:5]]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


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
