"""What a JSON text on the wire must hold beyond its types, checked cheaply.

pydantic validates types, but some things a producer sends it takes in silently: of two
equal keys in one object the last wins, a free-form value (``detail``: any JSON) keeps NaN,
Infinity, a number beyond a double (parsed as infinity) or an integer of any size, and
the Python classes fill in a missing ``event_id`` or ``occurred_at`` (for their callers;
on the wire a missing one is an error). Each would change what the producer sent.

Two paths:

* ``validate_message`` (the hot path): pydantic validates the bytes, then a count proves
  that no key was dropped. Every key in a JSON text ends with ``"``, optional whitespace
  and ``:``, so with the whitespace taken out the occurrences of ``":`` bound the number
  of keys from above; the validated events say how many keys they were built from
  (``model_fields_set``, and the free-form values, which are checked for numbers on the
  way). Equal counts mean no duplicate. Anything unequal or unsure returns ``None``.
* ``decode_exact`` and ``wire_problems`` (the close look, when the hot path said ``None``):
  the standard library's parser keeps every key (``object_pairs_hook``), every integer
  exactly and every number literal, and the problems come out with their paths.

Measured on ~490-byte events (2026-11, ``process_batch`` of bundles): the count costs ~0.75
us an event (``translate`` 0.3, ``count`` 0.45), the rest ~0.1, on top of ~3.5 us of
validation. orjson parses the same bytes in ~0.6 us, but it too keeps the last of two keys.
"""

from __future__ import annotations

import json
import math
import re
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, ValidationError

from devtrail.schemas.errors import DecodeError
from devtrail.schemas.events import EVENT_ADAPTER, EVENT_LIST_ADAPTER, Event
from devtrail.schemas.nul import NUL_ERROR_MESSAGE, NUL_ERROR_TYPE
from devtrail.schemas.reasons import ErrorEntry, echo, entry

__all__ = [
    "MAX_DEPTH",
    "SENT_BY_PRODUCER",
    "DuplicateKeys",
    "decode_exact",
    "encode_raw",
    "key_bound",
    "plain_event",
    "validate_message",
    "wire_problems",
]

#: How deep a JSON text may nest (the event object is level 1).
MAX_DEPTH = 64
#: Envelope fields the Python classes fill in for their callers; on the wire they must be sent.
SENT_BY_PRODUCER = frozenset({"event_id", "occurred_at"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_JSON_WHITESPACE = b" \t\n\r"
_BOM = b"\xef\xbb\xbf"

# ---- the hot path ----------------------------------------------------------------------


def validate_message(value: bytes) -> list[Event] | None:
    """The events of a message when they are valid exactly as sent; ``None`` to look closer.

    ``None`` does not mean invalid: a message with a key written ``"key" : value`` may be
    fine. ``decode_exact`` and ``devtrail.schemas.codec.validate_event`` give the verdict and reasons.
    """
    if may_underflow(value):
        return None
    try:
        if value.startswith(b"{"):
            events = [EVENT_ADAPTER.validate_json(value)]
        elif value.startswith(b"["):
            events = EVENT_LIST_ADAPTER.validate_json(value)
        else:
            return None
    except ValidationError:
        return None
    keys = 0
    for event in events:
        sent = event.__pydantic_fields_set__
        if not sent >= SENT_BY_PRODUCER:
            return None
        # An envelope holds objects in its payload only (were there more, the count would come
        # out short: the close look, never a wrong verdict).
        payload = event.payload
        keys += len(sent) + len(payload.__pydantic_fields_set__)
        names = _STRUCTURED.get(type(payload))
        for name in _structured(type(payload)) if names is None else names:
            found = _keys_in(getattr(payload, name), 3)
            if found is None:
                return None
            keys += found
    return events if events and keys == key_bound(value) else None


def key_bound(value: bytes) -> int:
    """At least the number of keys in a JSON text (exactly it, unless a string holds ``":``).

    A key ends with ``"``, optional whitespace and ``:``; with the whitespace taken out each
    key ends in ``":``. Removing whitespace inside strings can only add occurrences.
    """
    return value.translate(None, _JSON_WHITESPACE).count(b'":')


_STRUCTURED: dict[type[BaseModel], tuple[str, ...]] = {}


def _structured(cls: type[BaseModel]) -> tuple[str, ...]:
    """The fields of a model class that may hold JSON objects or free-form numbers."""
    names = _STRUCTURED.get(cls)
    if names is None:
        names = _STRUCTURED[cls] = tuple(n for n, f in cls.model_fields.items() if _may_hold_objects(f.annotation))
    return names


def _model_keys(model: BaseModel, depth: int) -> int | None:
    """Keys the model was validated from (``None``: a free-form value the wire forbids)."""
    count = len(model.__pydantic_fields_set__)
    for name in _structured(type(model)):
        found = _keys_in(getattr(model, name), depth + 1)
        if found is None:
            return None
        count += found
    return count


def _keys_in(value: Any, depth: int) -> int | None:
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        if depth > MAX_DEPTH:
            return None
        count = len(value) if kind is dict else 0
        for item in value.values() if kind is dict else value:
            found = _keys_in(item, depth + 1)
            if found is None:
                return None
            count += found
        return count
    if kind is int:
        return 0 if INT64_MIN <= value <= INT64_MAX else None
    if kind is float:
        return 0 if math.isfinite(value) else None
    if isinstance(value, BaseModel):
        return _model_keys(value, depth)
    return 0


def _may_hold_objects(annotation: Any) -> bool:
    """Whether a field of this type can hold a JSON object or a free-form number."""
    if annotation is Any or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return True
    origin = get_origin(annotation)
    if origin is dict:
        return True
    if origin in (typing.Annotated, Union, types.UnionType, list, tuple):
        return any(_may_hold_objects(arg) for arg in get_args(annotation)[: 1 if origin is typing.Annotated else None])
    return False


# ---- the close look --------------------------------------------------------------------


class DuplicateKeys(dict[str, Any]):
    """A decoded JSON object that held a key more than once (``pairs`` keeps them all)."""

    __slots__ = ("duplicates", "pairs")

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs
        self.duplicates: list[str] = []
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen and key not in self.duplicates:
                self.duplicates.append(key)
            seen.add(key)


class NumberLiteral:
    """A number in the text that a JSON value cannot be: ``NaN``, ``Infinity``, or beyond a double."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


_JSON_SCALARS = frozenset({int, float, bool, type(None), NumberLiteral})


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else DuplicateKeys(pairs)


def _float(text: str) -> float | NumberLiteral:
    number = float(text)
    if not math.isfinite(number) or (number == 0.0 and _nonzero_mantissa(text)):
        return NumberLiteral(text)  # beyond a double, or so small it would be stored as 0
    return number


def _nonzero_mantissa(text: str) -> bool:
    mantissa = text.lower().partition("e")[0]
    return any(digit in mantissa for digit in "123456789")


#: A number literal whose exponent may underflow a double (below about 4.9e-324); such a
#: message takes the close look, where ``_float`` tells.
#: A number starts after ``:``, ``[``, ``,`` or whitespace (never inside an id such as a UUID,
#: where ``9e-4512`` is hex). ``may_underflow`` finds the same texts faster.
TINY_EXPONENT = re.compile(rb"[:\[,\s]-?[0-9]+(?:\.[0-9]*)?[eE]-0*(?:3[2-9][0-9]|[4-9][0-9]{2}|[1-9][0-9]{3,})")
#: The exponent part of ``TINY_EXPONENT``, matched where an ``e-`` is found.
_TINY_TAIL = re.compile(rb"[eE]-0*(?:3[2-9][0-9]|[4-9][0-9]{2}|[1-9][0-9]{3,})")
_DIGITS = frozenset(b"0123456789")
_MANTISSA_END = frozenset(b"0123456789.")
_NUMBER_AFTER = frozenset(b":[, \t\n\r\x0b\x0c")  # ``\s`` in a bytes pattern: ASCII whitespace


def may_underflow(value: bytes) -> bool:
    """Whether ``TINY_EXPONENT`` occurs in ``value``; the same answer, several times faster.

    Searching the pattern tried it at every ``:``, ``,`` and space of a message: ~6 us an
    event, a quarter of the hot path (measured on the load generator's bundles, 2026-11).
    This looks only where ``e-`` or ``E-`` occurs (a substring search in C), and reads the
    mantissa backwards from there; most ``e-`` are in text (``claude-sonnet``) and end at
    the first test.
    """
    for marker in (b"e-", b"E-"):
        at = value.find(marker, 1)
        while at != -1:
            if value[at - 1] in _MANTISSA_END and _TINY_TAIL.match(value, at) and _number_ends_at(value, at):
                return True
            at = value.find(marker, at + 2)
    return False


def _number_ends_at(value: bytes, end: int) -> bool:
    """Whether ``value[:end]`` ends with ``[:[,\\s]-?[0-9]+(\\.[0-9]*)?`` (``TINY_EXPONENT`` before its exponent)."""
    i, digits = end - 1, 0
    while i >= 0 and value[i] in _DIGITS:
        i, digits = i - 1, digits + 1
    if i >= 0 and value[i] == 0x2E:  # "."
        i, digits = i - 1, 0
        while i >= 0 and value[i] in _DIGITS:
            i, digits = i - 1, digits + 1
    if not digits:
        return False
    if i >= 0 and value[i] == 0x2D:  # "-"
        i -= 1
    return i >= 0 and value[i] in _NUMBER_AFTER


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=NumberLiteral, parse_float=_float)


def _noting_decoder(marks: list[str]) -> json.JSONDecoder:
    """A decoder like ``_DECODER`` that notes each repeated key and number literal in ``marks``."""

    def noted_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = _object(pairs)
        if type(obj) is DuplicateKeys:
            marks.append("repeated key")
        return obj

    def noted_constant(text: str) -> NumberLiteral:
        marks.append(text)
        return NumberLiteral(text)

    def noted_float(text: str) -> float | NumberLiteral:
        number = _float(text)
        if type(number) is NumberLiteral:
            marks.append(text)
        return number

    return json.JSONDecoder(object_pairs_hook=noted_object, parse_constant=noted_constant, parse_float=noted_float)


def decode_exact(value: bytes | None, marks: list[str] | None = None) -> Any:
    """Decode a JSON text keeping what pydantic or orjson would drop (repeated keys, exact numbers).

    Args:
        value: the JSON text.
        marks: if given, receives a note for each repeated key and each number JSON cannot
            hold; none means an event that encodes as JSON is as sent (``plain_event``).

    Raises:
        DecodeError: the value is empty, not UTF-8, not JSON, or nested too deeply; the
            message says where (``not valid UTF-8 at byte 12``).
    """
    if not value:
        raise DecodeError("empty message value; expected a JSON object or array")
    if value.startswith(_BOM):
        raise DecodeError("starts with a UTF-8 byte order mark (BOM); JSON text must not (RFC 8259, section 8.1)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"not valid UTF-8 at byte {exc.start:,} (0x{value[exc.start]:02x}): JSON text must be UTF-8"
            " (was it written as Latin-1 or Windows-1252?)"
        ) from None
    if "\x00" in text:
        raise DecodeError(f"holds a NUL byte at byte {value.index(0):,}: not JSON text (written as UTF-16 or UTF-32?)")
    try:
        return (_DECODER if marks is None else _noting_decoder(marks)).decode(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise DecodeError(f"JSON nested too deeply (more than {MAX_DEPTH} levels are not accepted)") from None
    except ValueError:  # the only other failure: an integer of more digits than Python converts
        raise DecodeError(
            f"holds an integer of more than {sys.get_int_max_str_digits():,} digits; integers must fit in 64 bits"
        ) from None


def wire_problems(raw: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[ErrorEntry]:
    """What a decoded event holds that the wire forbids, with paths (after ``prefix``).

    Repeated keys, NUL characters, lone surrogates, NaN and Infinity, numbers beyond a double,
    integers beyond 64 bits, nesting deeper than ``MAX_DEPTH``, and (from Python callers)
    values that are no JSON at all.
    """
    yield from _problems(raw, prefix, 1)


def _problems(value: Any, path: tuple[str | int, ...], depth: int) -> Iterator[ErrorEntry]:
    kind = type(value)
    if kind is str:
        yield from _string_problems(value, path)
    elif kind is dict or kind is DuplicateKeys:
        if depth > MAX_DEPTH:
            yield entry(path, f"nested more than {MAX_DEPTH} levels deep", "too_deep")
            return
        for key in getattr(value, "duplicates", ()):
            yield entry(
                (*path, key), f"duplicate key '{echo(key)}': a JSON object holds each key once", "duplicate_key"
            )
        for key, item in value.items():
            where = (*path, key.replace("\x00", "\\u0000"))
            yield from _string_problems(key, where)
            yield from _problems(item, where, depth + 1)
    elif kind is list:
        if depth > MAX_DEPTH:
            yield entry(path, f"nested more than {MAX_DEPTH} levels deep", "too_deep")
            return
        for index, item in enumerate(value):
            yield from _problems(item, (*path, index), depth + 1)
    elif kind is NumberLiteral:
        yield entry(path, _literal_reason(value.text), "number_not_json")
    elif kind is float and not math.isfinite(value):
        yield entry(path, f"{value} is not a JSON number: numbers must be finite", "number_not_json")
    elif kind is int and not INT64_MIN <= value <= INT64_MAX:
        digits = len(str(abs(value)))
        yield entry(path, f"integer out of range ({digits:,} digits): integers must fit in 64 bits", "int_out_of_range")
    elif kind not in _JSON_SCALARS:
        yield entry(path, f"not a JSON value: a Python {kind.__name__}", "not_json")


def _string_problems(text: str, path: tuple[str | int, ...]) -> Iterator[ErrorEntry]:
    if "\x00" in text:
        yield entry(path, NUL_ERROR_MESSAGE, NUL_ERROR_TYPE)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        yield entry(path, f"holds a lone surrogate \\u{code:04x}: not a Unicode character", "string_lone_surrogate")


def _literal_reason(text: str) -> str:
    if text in ("NaN", "Infinity", "-Infinity"):
        return f"{text} is not valid JSON: JSON numbers are finite"
    if _nonzero_mantissa(text) and float(text) == 0.0:
        return f"number {echo(text, 40)} is out of range: too small for a 64-bit float (it would be stored as 0)"
    return f"number {echo(text, 40)} is out of range: beyond a 64-bit float (about 1.8e308)"


def plain_event(raw: dict[str, Any]) -> Event | None:
    """The event, if ``raw`` is valid as sent; ``None`` to look closer (``wire_problems``).

    Only for a value from ``decode_exact`` that noted no marks: it holds no repeated key
    and no number literal JSON cannot hold, so what remains to check is what the hot
    path checks (``validate_message``) without the key count.
    """
    try:
        event = EVENT_ADAPTER.validate_json(orjson.dumps(raw))  # orjson refuses lone surrogates, big integers
    except (orjson.JSONEncodeError, ValidationError):
        return None
    if not event.__pydantic_fields_set__ >= SENT_BY_PRODUCER or _model_keys(event, 1) is None:
        return None
    return event


def encode_raw(raw: Any) -> bytes:
    """JSON text of a decoded value as it was sent: repeated keys, number literals, lone
    surrogates (as ``\\uXXXX``) and all. For a dead letter's copy of one event of a bundle.

    Raises:
        RecursionError: nested deeper than Python recurses.
    """
    return "".join(_encoded(raw)).encode("utf-8")


def _encoded(value: Any) -> Iterator[str]:
    kind = type(value)
    if kind is DuplicateKeys or kind is dict:
        pairs = value.pairs if kind is DuplicateKeys else value.items()
        yield "{"
        for index, (key, item) in enumerate(pairs):
            yield ("," if index else "") + _string(key) + ":"
            yield from _encoded(item)
        yield "}"
    elif kind is list:
        yield "["
        for index, item in enumerate(value):
            if index:
                yield ","
            yield from _encoded(item)
        yield "]"
    elif kind is str:
        yield _string(value)
    elif kind is NumberLiteral:
        yield value.text
    else:
        yield json.dumps(value)


def _string(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(text)  # ASCII, with \\uXXXX escapes for the lone surrogates
    return json.dumps(text, ensure_ascii=False)
