"""Why an event was rejected, as a person reads it: plain reasons, few of them, input cut short.

A rejected event's reasons travel in its dead-letter record, so they are bounded whatever
the event holds: at most ``MAX_ERRORS`` errors (with the total count), each message at most
``MAX_MESSAGE_CHARS`` characters, any input they echo (a key, a tag, a value) at most
``MAX_ECHO_CHARS``, with control characters and lone surrogates written as ``\\uXXXX``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from devtrail.schemas.references import ENVELOPE_REFERENCES

#: Errors kept per rejected event (the total is counted apart).
MAX_ERRORS = 20
#: Characters of one error message, at most.
MAX_MESSAGE_CHARS = 300
#: Characters of echoed input (a key, a tag, a value), at most.
MAX_ECHO_CHARS = 100
#: Parts of an error location, at most (deeper ones are summarised).
MAX_LOC_PARTS = 16
#: Errors named in the one-line summary.
SUMMARY_ERRORS = 5

ErrorEntry = dict[str, object]

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_LEAP_SECOND = re.compile(r"[Tt ]\d{2}:\d{2}:60")
_JSON_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    tuple: "an array",
    dict: "an object",
}


def echo(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """Input text made safe to show: control characters escaped, cut to ``limit`` characters."""
    return _escaped(text[:limit]) + (f"… ({len(text):,} characters)" if len(text) > limit else "")


def _escaped(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_kind(value: object) -> str:
    """What JSON value this is, in words: ``an integer``, ``a string``, ``null``..."""
    for kind, name in _JSON_KINDS.items():
        if isinstance(value, kind):
            return name
    return type(value).__name__


def entry(loc: Iterable[object], message: str, error_type: str) -> ErrorEntry:
    """One bounded error entry (``loc``, ``msg``, ``type``)."""
    parts: list[object] = [p if type(p) is int else echo(str(p)) for p in loc]
    if len(parts) > MAX_LOC_PARTS:
        parts = [*parts[: MAX_LOC_PARTS - 1], f"… ({len(parts)} levels)"]
    return {"loc": parts, "msg": _cut(_escaped(message), MAX_MESSAGE_CHARS), "type": error_type[:64]}


def pydantic_entries(exc: ValidationError, limit: int = MAX_ERRORS) -> list[ErrorEntry]:
    """The first ``limit`` errors of a validation, with readable messages."""
    return [readable(err) for err in exc.errors(include_url=False)[:limit]]


def readable(err: ErrorDetails) -> ErrorEntry:
    """One pydantic error as a bounded entry with a readable message."""
    return entry(err["loc"], _message(err), err["type"])


def summary(errors: Sequence[ErrorEntry], total: int | None = None) -> str:
    """One line naming the first errors: ``loc: message; ... (+N more)``."""
    shown = errors[:SUMMARY_ERRORS]
    parts = [_cut(f"{'.'.join(str(p) for p in _loc(e)) or '<event>'}: {e['msg']}", 200) for e in shown]
    more = (total if total is not None else len(errors)) - len(shown)
    return "; ".join(parts) + (f" (+{more:,} more)" if more > 0 else "")


def _loc(error: ErrorEntry) -> list[object]:
    loc = error.get("loc")
    return list(loc) if isinstance(loc, list | tuple) else []


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message(err: ErrorDetails) -> str:
    """pydantic's message, made plain where it is not (or where it echoes unbounded input)."""
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "union_tag_invalid":
        return _unknown_tag(str(ctx.get("discriminator", "")).strip("'"), given, str(ctx.get("expected_tags", "")))
    if kind == "union_tag_not_found":
        return f"{str(ctx.get('discriminator', 'the type')).strip(chr(39))} is missing: it says which type this is"
    if kind == "extra_forbidden":
        return "unknown field: not part of the contract (see docs/events.md)"
    if kind == "missing":
        return _missing(err["loc"])
    if kind == "dict_type" and not err["loc"]:
        return f"an event must be a JSON object, got {json_kind(given)}"
    if kind.startswith("datetime") and isinstance(given, str) and _LEAP_SECOND.search(given):
        return f"leap seconds are not supported: {echo(given, 40)} has second 60; send 23:59:59 or the next second"
    if kind == "uuid_parsing":
        return f"not a UUID: {echo(str(given), 40)} ({ctx.get('error', 'invalid')})"
    message = err["msg"]
    if kind.endswith("_type") and "input" in err:
        message += f", got {json_kind(given)}"
    return message


def _missing(loc: tuple[int | str, ...]) -> str:
    """A missing field; for an envelope reference (``(event_type, "task_id")``), why the type requires it."""
    entity = ENVELOPE_REFERENCES.get(str(loc[-1])) if len(loc) == 2 else None
    if entity is None:
        return "required field is missing"
    return f"required field is missing: every {echo(str(loc[0]))} event names the {entity} it is about"


def _unknown_tag(discriminator: str, given: Any, expected: str) -> str:
    sent = given.get(discriminator) if isinstance(given, dict) else None
    if not isinstance(sent, str):
        return f"{discriminator} must be a string naming a type, got {json_kind(sent)}"
    where = "the catalog in docs/events.md" if discriminator == "event_type" else f"one of {_plain_tags(expected)}"
    return f"unknown {discriminator} '{echo(sent)}': not in the contract (see {where})"


def _plain_tags(expected: str) -> str:
    """``<LinkKind.X: 'x'>, ...`` or ``'x', ...`` as ``x, ...``."""
    return ", ".join(re.findall(r"'([^']*)'", expected)) or expected
