"""Wire format: one JSON event per Kafka message, or a bundle (a JSON array of events).

Any Kafka client can publish a single JSON object. The devtrail producer packs events
bound for the same partition into one array, so a processor pays its per-message cost
once per bundle instead of once per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.envelope import Envelope
from schemas.errors import DecodeError, EventValidationError
from schemas.events import EVENT_ADAPTER, EVENT_LIST_ADAPTER, Event


def decode_message(value: bytes | None) -> list[Any]:
    """Split a Kafka message value into raw (still unvalidated) event objects.

    Args:
        value: the message value.

    Returns:
        The JSON values it carries: one for a single event, all of them for a bundle.

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
        return [decoded]
    if isinstance(decoded, list):
        return decoded
    raise DecodeError(f"expected a JSON object or array, got {type(decoded).__name__}")


def validate_event(raw: Any) -> Event:
    """Validate one raw JSON value as an event of the catalog.

    Raises:
        EventValidationError: with pydantic's error list (paths, messages, types).
    """
    try:
        return EVENT_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        errors: list[dict[str, object]] = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise EventValidationError(_summary(errors), errors) from exc


def _summary(errors: Sequence[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<event>'}: {e['msg']}" for e in errors[:5]]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def encode_event(event: Envelope) -> bytes:
    """Encode one event as a single JSON object."""
    return event.__pydantic_serializer__.to_json(event)


def encode_bundle(events: Sequence[Event]) -> bytes:
    """Encode validated events as one bundle (a JSON array)."""
    return EVENT_LIST_ADAPTER.dump_json(list(events))


def join_encoded(encoded_events: Iterable[bytes]) -> bytes:
    """Join already-encoded JSON objects into a bundle without re-encoding them."""
    return b"[" + b",".join(encoded_events) + b"]"


def chunk_encoded(encoded_events: Sequence[bytes], max_events: int, max_bytes: int) -> list[bytes]:
    """Join encoded events into bundles of at most ``max_events`` and about ``max_bytes``.

    An event larger than ``max_bytes`` travels alone.
    """
    bundles: list[bytes] = []
    start, size = 0, 2
    for i, encoded in enumerate(encoded_events):
        if i > start and (i - start >= max_events or size + len(encoded) + 1 > max_bytes):
            bundles.append(join_encoded(encoded_events[start:i]))
            start, size = i, 2
        size += len(encoded) + 1
    if start < len(encoded_events):
        bundles.append(join_encoded(encoded_events[start:]))
    return bundles
