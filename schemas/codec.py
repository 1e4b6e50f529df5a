"""Wire format: one JSON event per Kafka message, or a bundle (a JSON array of events).

Any Kafka client can publish a single JSON object. The devtrail producer packs events
bound for the same partition into one array, so a processor pays its per-message cost
once per bundle instead of once per event.

Strings holding the NUL character are rejected here, not in the models: PostgreSQL text and
jsonb cannot store NUL, and a JSON text can only spell it ``\\u0000``. ``has_nul_escape``
looks for that escape in the bytes (a memchr for a backslash, then a substring search only
if there is one: tens of nanoseconds an event). Only when it is there does
``decode_message`` walk the decoded values and mark the events that really hold a NUL;
``validate_event`` rejects a marked event with the path of each such string, and
``encode_event`` refuses to encode one. Validation itself pays nothing per string (a
pattern on every string field cost about 10 % of validation throughput, measured).

A caller that validates JSON bytes straight with ``EVENT_ADAPTER.validate_json`` or
``EVENT_LIST_ADAPTER.validate_json`` bypasses this; it must send a message for which
``has_nul_escape`` is true through ``decode_message`` and ``validate_event`` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.envelope import Envelope
from schemas.errors import DecodeError, EventValidationError
from schemas.events import EVENT_ADAPTER, EVENT_CLASSES_BY_TYPE, EVENT_LIST_ADAPTER, Event

#: How JSON spells NUL. A JSON text cannot hold a raw NUL byte inside a string, and orjson
#: and pydantic both write it this way, so no NUL gets past a search for these bytes.
NUL_ESCAPE = b"\\u0000"
_BACKSLASH = 0x5C  # ``int in bytes`` is a memchr; most events have no backslash at all
#: ``type`` of the validation error for a string holding NUL.
NUL_ERROR_TYPE = "string_contains_nul"
NUL_ERROR_MESSAGE = "String should not contain the NUL character (\\u0000): PostgreSQL cannot store it"

Path = tuple[str | int, ...]


class _NulBearingEvent(dict[str, Any]):
    """A decoded event in which some string (a value or a key) holds NUL.

    Equal to, and encoded by orjson exactly like, the plain dict it copies;
    ``validate_event`` rejects it with ``nul_paths``.
    """

    __slots__ = ("nul_paths",)
    nul_paths: list[Path]


def has_nul_escape(value: bytes) -> bool:
    """Whether JSON bytes may hold a NUL character in some string.

    False means certainly not. True means the bytes contain ``\\u0000``: a NUL, or a
    backslash followed by the text ``u0000`` (``decode_message`` tells them apart).
    """
    return _BACKSLASH in value and value.rfind(NUL_ESCAPE) != -1


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
        errors = _nul_errors(raw.get("event_type"), raw.nul_paths)
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


def nul_paths(value: Any, path: Path = ()) -> Iterator[Path]:
    """Yield the path of every string in a JSON-like value that holds NUL.

    A dict key holding NUL is reported as the path to it (its NUL written ``\\u0000``).
    """
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            where = (*path, key.replace("\x00", "\\u0000")) if isinstance(key, str) else (*path, str(key))
            if isinstance(key, str) and "\x00" in key:
                yield where
            yield from nul_paths(item, where)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from nul_paths(item, (*path, index))


def _mark_nul(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return raw
    paths = list(nul_paths(raw))
    if not paths:
        return raw
    marked = _NulBearingEvent(raw)
    marked.nul_paths = paths
    return marked


def _nul_errors(event_type: object, paths: Iterable[Path]) -> list[dict[str, object]]:
    prefix: list[str | int] = (
        [event_type] if isinstance(event_type, str) and event_type in EVENT_CLASSES_BY_TYPE else []
    )
    return [{"loc": [*prefix, *path], "msg": NUL_ERROR_MESSAGE, "type": NUL_ERROR_TYPE} for path in paths]


def _reject_nul(event: Envelope) -> None:
    dumped = event.model_dump()
    errors = _nul_errors(dumped.get("event_type"), nul_paths(dumped))
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
    if _BACKSLASH in encoded and encoded.rfind(NUL_ESCAPE) != -1:
        _reject_nul(event)
    return encoded


def encode_bundle(events: Sequence[Event]) -> bytes:
    """Encode validated events as one bundle (a JSON array).

    Raises:
        EventValidationError: a string in one of the events holds NUL.
    """
    encoded = EVENT_LIST_ADAPTER.dump_json(list(events))
    if _BACKSLASH in encoded and encoded.rfind(NUL_ESCAPE) != -1:
        for event in events:
            _reject_nul(event)
    return encoded


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
