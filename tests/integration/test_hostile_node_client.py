"""Hostile, malformed and awkward input from a producer that is not devtrail's (kafkajs, Node).

Every input of a battery of raw byte strings, sent to the input topics by a Node service
(``tests/integration/node/hostile_producer.js``: uncompressed, ``acks -1``), must end in
exactly one place: ``events``, stored exactly as it was sent, or ``dead_letters``, with a
readable, bounded reason of the right kind. No worker may restart and no partition may
stall: valid sentinel events sent after the battery on every input partition are all
stored. Where the outcome is a policy (an id with whitespace at either end: rejected or
kept as sent?), either is fine, but never "stored altered" nor "neither".

The test installs kafkajs (pinned in ``tests/integration/node/package-lock.json``) with npm
into a cache directory (``$DEVTRAIL_NODE_CACHE``, else ``~/.cache/devtrail-node``) and
points ``NODE_PATH`` at it; it skips only when ``node`` or ``npm`` is missing. Set
``DEVTRAIL_HOSTILE_REPORT=path.json`` to get every input's outcome written there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import time
import unicodedata
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import asyncpg
import pytest
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from devtrail.consumers.clean import EVENT_COLUMNS
from devtrail.schemas.envelope import SCHEMA_VERSION, Family
from devtrail.schemas.events import EVENT_CLASSES_BY_TYPE
from devtrail.schemas.examples import example_event, example_types
from devtrail.schemas.ids import uuid7
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.integration.nodejs import kafkajs_modules, kafkajs_send
from tests.integration.pipeline import wait_for

pytestmark = pytest.mark.integration


# ---- outcomes -----------------------------------------------------------------------------

STORED = "stored"  # must be in events, exactly as sent
DEAD = "dead"  # must be in dead_letters, with a reason of the given kind
EITHER = "either"  # a policy: stored exactly as sent, or dead-lettered; never altered, never dropped
RESENT = "resent"  # a re-sent copy of an event already in the battery: one row, no dead letter

DECODE = frozenset({"decode"})
VALIDATION = frozenset({"validation"})
NOT_AN_EVENT = frozenset({"decode", "validation"})  # which stage refuses it is the processor's business
#: Dead-letter kinds that say the processor failed on an input (a bug), not that the input is bad.
BUG_KINDS = frozenset({"processing", "unencodable", "database"})
#: Longest readable reason accepted: consumers.deadletter.MAX_ERROR_CHARS and the "… (N characters)" it appends.
MAX_REASON_CHARS = 2000 + 40
#: Error entries a dead letter may list (schemas.reasons keeps 20; the total is counted apart).
MAX_ERRORS_LISTED = 100
UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass
class Unit:
    """One thing that must be accounted for: a whole message, or one event of a bundle.

    Attributes:
        sent: the event as sent, decoded by Python's json with numbers as written (``Decimal``):
            what a stored row is compared with.
        event_id: the event_id text as sent, when it is a string.
        kinds: acceptable dead-letter kinds (``None``: any but a bug's).
        reason: a regular expression the dead letter's reason must match (case-insensitive).
        marker: a string the original bytes hold, to recognise the dead letter by.
    """

    name: str
    category: str
    expect: str
    index: int | None = None
    sent: dict[str, Any] | None = None
    event_id: str | None = None
    kinds: frozenset[str] | None = None
    reason: str | None = None
    marker: str | None = None
    outcome: str = "?"
    detail: str = ""


@dataclass
class Hostile:
    """One Kafka message of the battery."""

    name: str
    category: str
    family: str
    value: bytes | None
    units: list[Unit]
    key: bytes | None = None
    partition: int = -1
    offset: int | None = None
    bundle: bool = False


# ---- building the battery ---------------------------------------------------------------------


def fresh_id() -> str:
    return str(uuid7())


def ev(example: str, /, *, payload: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """The catalog's example of type ``example`` with a fresh UUIDv7 (first key), changed.

    ``payload`` entries replace the example's; a value of ``...`` removes a field.
    """
    event = example_event(example)
    event["event_id"] = fresh_id()
    event = {"event_id": event.pop("event_id"), **event}
    if payload is not None:
        event["payload"] = {k: v for k, v in (event["payload"] | payload).items() if v is not ...}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def dumps(value: Any) -> bytes:
    """Compact JSON, UTF-8, non-ASCII as is (what most producers write)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def as_sent(value: bytes, event: dict[str, Any]) -> dict[str, Any]:
    """What a valid message says, read from its bytes by Python's json (the event it was made from otherwise)."""
    try:
        decoded = json.loads(value, parse_float=Decimal)  # numbers as written, not as doubles
    except ValueError:
        return event
    return decoded if isinstance(decoded, dict) else event


def family_of(event_type: str) -> str:
    cls = EVENT_CLASSES_BY_TYPE.get(event_type)
    return cls.family.value if cls is not None else event_type.split(".", 1)[0]


def replace_once(value: bytes, old: bytes, new: bytes) -> bytes:
    assert value.count(old) == 1, (old, value[:200])
    return value.replace(old, new)


class Battery:
    """Collects the hostile messages, each with the inputs it must account for (``Unit``)."""

    def __init__(self) -> None:
        self.messages: list[Hostile] = []
        self._families = [f.value for f in Family]
        self._next_family = 0

    def _rotating_family(self) -> str:
        family = self._families[self._next_family % len(self._families)]
        self._next_family += 1
        return family

    def event(
        self,
        category: str,
        name: str,
        event: dict[str, Any],
        expect: str,
        *,
        raw: bytes | None = None,
        kinds: frozenset[str] | None = None,
        reason: str | None = None,
        family: str | None = None,
        key: bytes | None = None,
    ) -> bytes:
        """One event in a message of its own: ``raw`` bytes if given, else ``event`` encoded."""
        value = dumps(event) if raw is None else raw
        event_id = event.get("event_id")
        unit = Unit(
            name,
            category,
            expect,
            sent=as_sent(value, event) if expect in (STORED, EITHER, RESENT) else None,
            event_id=event_id if isinstance(event_id, str) else None,
            kinds=kinds if kinds is not None else (VALIDATION if expect == DEAD else None),
            reason=reason,
            marker=event_id
            if isinstance(event_id, str) and event_id and event_id in value.decode("utf-8", "replace")
            else None,
        )
        event_type = event.get("event_type")
        default_family = (
            family_of(event_type) if isinstance(event_type, str) and event_type in EVENT_CLASSES_BY_TYPE else None
        )
        self.messages.append(
            Hostile(name, category, family or default_family or self._rotating_family(), value, [unit], key=key)
        )
        return value

    def stored(self, category: str, name: str, event: dict[str, Any], **kw: Any) -> bytes:
        return self.event(category, name, event, STORED, **kw)

    def either(self, category: str, name: str, event: dict[str, Any], **kw: Any) -> bytes:
        return self.event(category, name, event, EITHER, **kw)

    def dead(self, category: str, name: str, event: dict[str, Any], reason: str, **kw: Any) -> bytes:
        return self.event(category, name, event, DEAD, reason=reason, **kw)

    def message(
        self,
        category: str,
        name: str,
        value: bytes | None,
        reason: str,
        *,
        kinds: frozenset[str] = DECODE,
        marker: str | None = None,
        family: str | None = None,
        key: bytes | None = None,
    ) -> None:
        """A message that is not an event at all: it must be dead-lettered whole."""
        unit = Unit(name, category, DEAD, kinds=kinds, reason=reason, marker=marker)
        self.messages.append(Hostile(name, category, family or self._rotating_family(), value, [unit], key=key))

    def bundle(
        self, category: str, name: str, members: list[tuple[bytes, Unit]], family: str, key: bytes | None = None
    ) -> None:
        """A JSON array of events, each member accounted for on its own (``Unit.index``)."""
        units = []
        for index, (_, unit) in enumerate(members):
            unit.index = index
            units.append(unit)
        value = b"[" + b",".join(m for m, _ in members) + b"]"
        self.messages.append(Hostile(name, category, family, value, units, key=key, bundle=True))


def member(
    name: str, category: str, event: Any, expect: str, raw: bytes | None = None, **kw: Any
) -> tuple[bytes, Unit]:
    """One member of a bundle."""
    value = dumps(event) if raw is None else raw
    event_id = event.get("event_id") if isinstance(event, dict) else None
    unit = Unit(
        name,
        category,
        expect,
        sent=as_sent(value, event) if expect in (STORED, EITHER, RESENT) else None,
        event_id=event_id if isinstance(event_id, str) else None,
        kinds=kw.pop("kinds", VALIDATION if expect == DEAD else None),
        reason=kw.pop("reason", None),
        marker=event_id if isinstance(event_id, str) else kw.pop("marker", None),
    )
    assert not kw, kw
    return value, unit


def action(detail_json: str, **changes: Any) -> tuple[dict[str, Any], bytes]:
    """An agent.action whose free-form ``detail`` is the given JSON text (as the event and its bytes)."""
    event = ev("agent.action", payload={"detail": {}}, **changes)
    raw = replace_once(dumps(event), b'"detail":{}', b'"detail":' + detail_json.encode())
    return event, raw


def nested(levels: int, leaf: str = '"x"') -> str:
    return '{"d":' * levels + leaf + "}" * levels


def build_battery() -> list[Hostile]:
    b = Battery()

    # -- valid events, awkward but valid: stored exactly as sent --------------------------
    cat = "valid: one example per type"
    for event_type in example_types():
        b.stored(cat, event_type, ev(event_type))

    cat = "valid: unicode"
    texts = {
        "emoji": "deploy 🚀🔥 done ✅ 👩🏽\u200d💻 family 👨\u200d👩\u200d👧\u200d👦 flags 🇫🇷🇯🇵",
        "RTL Arabic and Hebrew": "مرحبا بالعالم — שלום עולם — mixed ltr",
        "RTL override and isolates": "abc\u202edcba\u202c \u2067iso\u2069 \u200fmark",
        "zero-width characters": "zero\u200bwidth\u200cnon\u200djoiner\u2060word\ufeffbom-inside",
        "combining marks": "e\u0301 a\u0308 Z\u0351\u0354\u0353a\u036b\u0350l\u0306g\u0314o",
        "CJK and astral planes": "漢字かなカナ한글 𠀀𪛖 \U0010fffd "
        "\U0001d54f\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522",
        "escapes and quotes": 'tab\there nl\nthere cr\r back\\slash "quoted" /slash/ \\u0000 as text',
        "JSON-looking text": '{"event_type":"system.error"}","x":[1,2]}]  ":" : " ":',
        "SQL-looking text": "Robert'); DROP TABLE events;-- $1::jsonb \\'",
    }
    for name, text in texts.items():
        b.stored(cat, f"title: {name}", ev("task.created", payload={"title": text[:200], "description": text}))
    b.stored(cat, "emoji in every id", ev("task.created", project_id="🚀", agent_id="агент-1", task_id="タスク-42"))
    b.stored(cat, "zero-width inside an id", ev("task.created", task_id="T\u200b42"))
    b.stored(
        cat,
        "free-form keys in any script",
        ev("agent.action", payload={"detail": {"ключ": 1, "🔑": "v", "": "empty key", "a.b": [None, True]}}),
    )
    event = ev("task.created", payload={"title": "escaped"})
    b.stored(
        cat,
        "\\u escapes of ordinary and astral characters",
        event | {"payload": {"title": "é😀/"}},
        raw=replace_once(dumps(event), b'"title":"escaped"', b'"title":"\\u00e9\\ud83d\\ude00\\/"'),
    )
    e = ev("chat.message", payload={"content": "ünïcödé 🚀 עברית"})
    b.stored(cat, "ASCII-only encoding (every non-ASCII escaped)", e, raw=json.dumps(e).encode())

    cat = "valid: sizes and bounds"
    b.stored(cat, "description of 10,000 characters", ev("task.created", payload={"description": "x" * 10_000}))
    b.stored(cat, "description of 10,000 emoji", ev("task.created", payload={"description": "😀" * 10_000}))
    b.stored(cat, "title of 200 characters (astral)", ev("task.created", payload={"title": "\U0001d54f" * 200}))
    b.stored(cat, "id of 200 characters", ev("task.created", task_id="T" * 200))
    b.stored(cat, "chat content of 100,000 characters", ev("chat.message", payload={"content": "c" * 100_000}))
    b.stored(cat, "duration 2**63-1", ev("task.completed", payload={"duration_ms": 2**63 - 1}))
    b.stored(
        cat,
        "zero tokens and zero cost",
        ev("llm.called", payload={"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "cost_usd": 0}),
    )
    b.stored(
        cat,
        "int64 min and max in metric attributes",
        ev(
            "metric.recorded", payload={"attributes": {"lo": -(2**63), "hi": 2**63 - 1, "f": 1.5, "b": False, "s": "x"}}
        ),
    )
    b.stored(cat, "largest double", ev("metric.recorded", payload={"value": 1.7976931348623157e308}))
    b.stored(cat, "smallest subnormal double", ev("metric.recorded", payload={"value": 5e-324}))
    b.stored(cat, "negative metric value", ev("metric.recorded", payload={"value": -123456.789e-10}))
    b.stored(cat, "priority 0", ev("task.created", payload={"priority": 0}))
    b.stored(cat, "priority 5", ev("task.created", payload={"priority": 5}))
    b.stored(cat, "largest pull request number", ev("deployment.started", payload={"pr_number": 2_147_483_647}))
    b.stored(
        cat,
        "free-form extremes",
        ev(
            "agent.action",
            payload={
                "detail": {
                    "big": 2**63 - 1,
                    "small": -(2**63),
                    "f": 1.5e300,
                    "tiny": 1e-300,
                    "z": 0,
                    "s": "NaN",
                    "t": "Infinity",
                    "n": None,
                }
            },
        ),
    )
    _, raw = action(nested(50, "[true,null,1.5]"))
    b.stored(cat, "free-form 50 levels deep", json.loads(raw), raw=raw)
    b.stored(cat, "earliest time 2000-01-01T00:00:00Z", ev("task.created", occurred_at="2000-01-01T00:00:00Z"))
    b.stored(
        cat, "latest time 2099-12-31T23:59:59.999999Z", ev("task.created", occurred_at="2099-12-31T23:59:59.999999Z")
    )
    b.stored(cat, "offset +14:00", ev("task.created", occurred_at="2026-05-04T23:30:00.5+14:00"))
    b.stored(cat, "offset -12:00", ev("task.created", occurred_at="2026-05-04T00:00:00-12:00"))
    b.stored(cat, "microseconds", ev("task.created", occurred_at="2026-05-04T09:30:00.000001Z"))
    b.stored(
        cat, "trailing zeros beyond microseconds", ev("task.created", occurred_at="2026-05-04T09:30:00.123456000Z")
    )
    b.stored(cat, "time on a month boundary", ev("task.created", occurred_at="2026-05-31T23:59:59.999999+00:00"))

    cat = "valid: empty and optional"
    b.stored(cat, "empty description", ev("task.created", payload={"description": ""}))
    b.stored(cat, "null description", ev("task.created", payload={"description": None}))
    b.stored(
        cat,
        "no optional envelope fields",
        {k: v for k, v in ev("task.created").items() if k not in ("project_id", "requirement_id")},
    )
    b.stored(cat, "empty free-form detail", ev("agent.action", payload={"detail": {}}))
    b.stored(cat, "empty capabilities", ev("agent.registered", payload={"capabilities": []}))
    b.stored(cat, "no schema_version", {k: v for k, v in ev("task.created").items() if k != "schema_version"})
    b.stored(cat, "schema_version 1.0", ev("task.created", schema_version="1.0"))
    b.stored(cat, "causation_id set", ev("task.started", causation_id=fresh_id()))

    cat = "valid: layout"
    e = ev("task.created")
    b.stored(cat, "pretty-printed", e, raw=json.dumps(e, indent=4, ensure_ascii=False).encode())
    e = ev("task.created")
    b.stored(
        cat, "spaces before colons, CRLF between members", e, raw=json.dumps(e, separators=(" ,\r\n\t", " : ")).encode()
    )
    e = ev("task.created", payload={"title": 'he said ":" then " :x'})
    b.stored(cat, "quote-colon inside strings", e)
    e = ev("task.created")
    b.stored(cat, "keys in reverse order", e, raw=dumps(dict(reversed(list(e.items())))))
    e = ev("task.created")
    b.stored(cat, "surrounding whitespace", e, raw=b" \r\n\t" + dumps(e) + b"\n\n ")

    cat = "valid: hostile Kafka keys"
    for name, key in {
        "SQL injection key": b"x'); DROP TABLE events;--",
        "JSON injection key": b'{"event_id":"00000000-0000-0000-0000-000000000000"}',
        "NUL and binary key": b"\x00\xff\xfe\x00 key",
        "10 KB key": b"k" * 10_240,
        "empty key": b"",
    }.items():
        b.stored(cat, name, ev("task.created"), key=key)
    b.stored(cat, "no key", ev("task.created"), key=None)

    cat = "valid: injection text in values"
    b.stored(
        cat,
        "SQL in ids and source",
        ev(
            "task.created",
            task_id="T'; DROP TABLE events; --",
            source="x'); DELETE FROM events;--",
            project_id="$$; TRUNCATE dead_letters; $$",
        ),
    )
    b.stored(cat, "JSON in ids", ev("task.created", task_id='"},{"event_id":"x', agent_id="\\", session_id="'\""))
    b.stored(
        cat,
        "SQL and JSON in free-form keys",
        ev("agent.action", payload={"detail": {"'; DROP TABLE events;--": 1, '"}': '{"', "$1::jsonb": "\\u0000"}}),
    )

    # -- policies: stored exactly as sent, or dead-lettered ---------------------------------
    cat = "policy"
    b.either(cat, "event_id with spaces around", ev("task.created", event_id=f" {fresh_id()} "))
    b.either(cat, "task_id with spaces around", ev("task.created", task_id=" T-1 "))
    b.either(cat, "task_id with a trailing no-break space", ev("task.created", task_id="T-1\u00a0"))
    b.either(cat, "task_id of one zero-width space", ev("task.created", task_id="\u200b"))
    b.either(cat, "upper-case event_id", ev("task.created", event_id=fresh_id().upper()))
    b.either(cat, "UUIDv4 event_id", ev("task.created", event_id=str(uuid.uuid4())))
    b.either(cat, "nil UUID event_id", ev("task.created", event_id="00000000-0000-0000-0000-000000000000"))
    b.either(cat, "max UUID event_id", ev("task.created", event_id="ffffffff-ffff-ffff-ffff-ffffffffffff"))
    b.either(cat, "lower-case t and z in the time", ev("task.created", occurred_at="2026-05-04t09:30:00z"))
    b.either(cat, "offset -00:00", ev("task.created", occurred_at="2026-05-04T09:30:00-00:00"))
    b.either(
        cat, "control characters in a title", ev("task.created", payload={"title": "bell\u0007 esc\u001b del\u007f"})
    )
    b.either(cat, "task.created on the agent topic", ev("task.created"), family="agent")
    b.either(cat, "agent.action on the system topic", ev("agent.action"), family="system")
    b.either(cat, "integer 2**53+1 for a float", ev("metric.recorded", payload={"value": 2**53 + 1}))
    b.either(cat, "integer 10**30 for a float", ev("metric.recorded", payload={"value": 10**30}))
    b.either(
        cat, "int64 min - 1 in a metric attribute", ev("metric.recorded", payload={"attributes": {"lo": -(2**63) - 1}})
    )
    b.either(cat, "2**63 in a metric attribute", ev("metric.recorded", payload={"attributes": {"hi": 2**63}}))
    e, raw = action('{"n": 1e-400}')
    b.either(cat, "1e-400 in free-form detail (below the smallest double)", e, raw=raw)
    e = ev("metric.recorded", payload={"value": 1.25})
    b.either(cat, "1e-400 for a metric value", e, raw=replace_once(dumps(e), b'"value":1.25', b'"value":1e-400'))
    e, raw = action('{"n": 0.10000000000000001, "m": 123456789012345678901234567890.5}')
    b.either(cat, "more digits than a double holds", e, raw=raw)
    b.either(cat, "integer for a float", ev("llm.called", payload={"cost_usd": 2}))
    e = ev("task.created", payload={"priority": 3})
    b.either(cat, "3e0 for an integer", e, raw=replace_once(dumps(e), b'"priority":3', b'"priority":3e0'))
    e, raw = action(nested(60))
    b.either(cat, "free-form 62 levels deep", e, raw=raw)
    b.either(cat, "task.started without payload", {k: v for k, v in ev("task.started").items() if k != "payload"})
    b.either(cat, "upper-case SHA-256", ev("context.stored", payload={"sha256": "A" * 64}))

    # -- not JSON events at all: dead-lettered whole ---------------------------------------
    cat = "not JSON"
    marker = f"hostile-{uuid7()}"
    b.message(cat, "empty bytes", b"", r"empty")
    b.message(cat, "null value (tombstone)", None, r"empty")
    b.message(cat, "whitespace only", b" \t\r\n ", r"not valid JSON")
    b.message(cat, "plain text", f"hello {marker}".encode(), r"not valid JSON", marker=marker)
    e = ev("task.created")
    b.message(cat, "truncated JSON", dumps(e)[: len(dumps(e)) // 2], r"not valid JSON", marker=e["event_id"])
    e = ev("task.created")
    b.message(cat, "trailing garbage", dumps(e) + b" trailing", r"not valid JSON|extra data", marker=e["event_id"])
    e, e2 = ev("task.created"), ev("task.created")
    b.message(cat, "two objects back to back", dumps(e) + dumps(e2), r"not valid JSON|extra data", marker=e["event_id"])
    e = ev("task.created")
    b.message(cat, "Python repr (single quotes)", repr(e).encode(), r"not valid JSON", marker=e["event_id"])
    e = ev("task.created")
    b.message(cat, "trailing comma", dumps(e)[:-1] + b",}", r"not valid JSON", marker=e["event_id"])
    e = ev("task.created")
    b.message(cat, "comment", b"/* devtrail */ " + dumps(e), r"not valid JSON", marker=e["event_id"])
    e = ev("task.created")
    b.message(
        cat,
        "raw control character in a string",
        replace_once(dumps(e), b'"source":"agent-runtime"', b'"source":"a\x01b"'),
        r"not valid JSON|control",
        marker=e["event_id"],
    )
    b.message(cat, "NaN as the whole message", b"NaN", r"NaN|object|array|not valid JSON", kinds=NOT_AN_EVENT)
    b.message(
        cat, "binary garbage", b"\x89PNG\r\n\x1a\n" + hashlib.sha256(marker.encode()).digest(), r"UTF-8|not valid JSON"
    )
    b.message(cat, "100,000 nested arrays", b"[" * 100_000 + b"]" * 100_000, r"nest|deep")
    b.message(cat, "integer of 5,000 digits", b'{"n":' + b"9" * 5000 + b"}", r"digit|integer", kinds=NOT_AN_EVENT)

    cat = "not UTF-8"
    e = ev("task.created")
    b.message(cat, "byte order mark", b"\xef\xbb\xbf" + dumps(e), r"byte order mark|BOM", marker=e["event_id"])
    e = ev("task.created", source="tests-é")
    b.message(cat, "Latin-1", dumps(e).decode().encode("latin-1"), r"UTF-8", marker=e["event_id"])
    e = ev("task.created", source="cp1252 “quotes”")
    b.message(cat, "Windows-1252", dumps(e).decode().encode("cp1252"), r"UTF-8", marker=e["event_id"])
    e = ev("task.created")
    b.message(
        cat,
        "overlong encoding",
        replace_once(dumps(e), b'"agent-runtime"', b'"\xc0\xaf"'),
        r"UTF-8",
        marker=e["event_id"],
    )
    e = ev("task.created")
    b.message(
        cat,
        "CESU-8 surrogate bytes",
        replace_once(dumps(e), b'"agent-runtime"', b'"\xed\xa0\xbd\xed\xb8\x80"'),
        r"UTF-8",
        marker=e["event_id"],
    )
    e = ev("task.created")
    b.message(cat, "UTF-16", dumps(e).decode().encode("utf-16-le"), r"UTF-16|NUL|UTF-8")
    e = ev("task.created")
    b.message(cat, "UTF-32 with BOM", dumps(e).decode().encode("utf-32"), r"UTF-32|UTF-16|NUL|UTF-8|byte order")

    cat = "raw NUL bytes"
    for where, old in {
        "in the event id": b'"event_id":"',
        "in the event type": b'"event_type":"task.',
        "in the payload": b'"title":"',
        "in a key": b'"source"',
    }.items():
        e = ev("task.created")
        b.message(
            cat,
            f"raw NUL {where}",
            replace_once(dumps(e), old, old[:-1] + b"\x00" + old[-1:]),
            r"NUL",
            marker=e["event_id"],
        )

    cat = "JSON, not an event"
    b.message(cat, "null", b"null", r"null")
    b.message(cat, "integer", b"42", r"integer|number")
    b.message(cat, "float", b"-0.5e-3", r"number|float")
    b.message(cat, "string", f'"{marker}"'.encode(), r"string", marker=marker)
    b.message(cat, "true", b"true", r"boolean|bool")
    b.message(cat, "false", b"false", r"boolean|bool")
    b.message(cat, "empty array", b"[]", r"empty array|no event")
    b.message(cat, "empty object", b"{}", r"event_type|missing|required", kinds=VALIDATION)
    b.message(
        cat,
        "object of junk",
        f'{{"{marker}": 1}}'.encode(),
        r"event_type|missing|unknown",
        kinds=VALIDATION,
        marker=marker,
    )
    b.bundle(
        cat,
        "array of scalars",
        [
            member("scalar 1", cat, 1, DEAD, raw=b"1", reason=r"object"),
            member("scalar 'x'", cat, "x", DEAD, raw=b'"x"', reason="object"),
            member("scalar null", cat, None, DEAD, raw=b"null", reason="object"),
        ],
        family="llm",
    )
    b.bundle(
        cat, "array of arrays", [member("nested array", cat, [], DEAD, raw=b"[]", reason=r"object")], family="tool"
    )
    b.bundle(
        cat,
        "array holding {}",
        [member("empty object member", cat, {}, DEAD, raw=b"{}", reason=r"event_type|missing")],
        family="user",
    )

    # -- invalid events: dead-lettered with the reason -------------------------------------
    cat = "event type"
    b.dead(
        cat, "unknown event type", ev("task.created", event_type="task.exploded"), r"unknown event_type|task\.exploded"
    )
    b.dead(cat, "empty event type", ev("task.created", event_type=""), r"event_type")
    b.dead(
        cat, "upper-case event type", ev("task.created", event_type="TASK.CREATED"), r"unknown event_type|TASK\.CREATED"
    )
    b.dead(cat, "event type with a trailing space", ev("task.created", event_type="task.created "), r"event_type")
    b.dead(
        cat,
        "event type of 64 KB",
        ev("task.created", event_type="x" * 65_536),
        r"65,536 characters|event_type",
        family="task",
    )
    b.dead(
        cat,
        "event type of 64 KB, valid prefix",
        ev("task.created", event_type="task.created" + "x" * 65_524),
        r"characters|event_type",
        family="task",
    )
    b.dead(cat, "event type a number", ev("task.created", event_type=5), r"event_type", family="task")
    b.dead(cat, "event type null", ev("task.created", event_type=None), r"event_type", family="task")
    b.dead(cat, "event type an array", ev("task.created", event_type=["task.created"]), r"event_type", family="task")
    b.dead(
        cat,
        "event type an object",
        ev("task.created", event_type={"name": "task.created"}),
        r"event_type",
        family="task",
    )
    b.dead(
        cat,
        "no event type",
        {k: v for k, v in ev("task.created").items() if k != "event_type"},
        r"event_type",
        family="task",
    )

    cat = "NUL escapes"
    nul = r"NUL"
    b.dead(cat, "\\u0000 in the event id", ev("task.created", event_id=fresh_id()[:-1] + "\x00"), nul)
    e = ev("task.created")
    b.dead(cat, "\\u0000 in the event type", e | {"event_type": "task.created\x00"}, nul, family="task")
    b.dead(cat, "\\u0000 in the source", ev("task.created", source="a\x00b"), nul)
    b.dead(cat, "\\u0000 in a task id", ev("task.created", task_id="\x00"), nul)
    b.dead(cat, "\\u0000 in the title", ev("task.created", payload={"title": "t\x00"}), nul)
    b.dead(cat, "\\u0000 in a free-form value", ev("agent.action", payload={"detail": {"v": ["ok", "\x00"]}}), nul)
    b.dead(cat, "\\u0000 in a free-form key", ev("agent.action", payload={"detail": {"k\x00": 1}}), nul)
    b.dead(cat, "\\u0000 in an unknown key", ev("task.created", **{"x\x00": 1}), nul)

    cat = "lone surrogates"
    sur = r"surrogate"
    for name, old, new in [
        ("high surrogate in the source", b'"agent-runtime"', b'"\\ud800"'),
        ("low surrogate in the title", b'"title":"Fix', b'"title":"\\udc00Fix'),
        ("reversed pair in the description", b'"description":"Users', b'"description":"\\ude00\\ud83dUsers'),
        ("high surrogate at the end of the task id", b'"T-42"', b'"T-42\\ud83d"'),
    ]:
        e = ev("task.created")
        b.dead(cat, name, e, sur, raw=replace_once(dumps(e), old, new))
    e, raw = action('{"\\udc00": 1}')
    b.dead(cat, "lone surrogate in a free-form key", e, sur, raw=raw)
    e = ev("task.created")
    b.dead(
        cat,
        "lone surrogate in the event id",
        e,
        r"surrogate|UUID",
        raw=replace_once(dumps(e), e["event_id"][-6:].encode() + b'"', b'\\ud800"'),
    )

    cat = "duplicate keys"
    dup = r"duplicate key"
    e = ev("task.created")
    b.dead(cat, "event_id twice, same value", e, dup, raw=b'{"event_id":"%s",' % e["event_id"].encode() + dumps(e)[1:])
    e = ev("task.created")
    b.dead(cat, "event_id twice, two values", e, dup, raw=b'{"event_id":"%s",' % fresh_id().encode() + dumps(e)[1:])
    e = ev("task.created")
    b.dead(
        cat,
        "event_type twice, two types",
        e,
        dup,
        raw=replace_once(
            dumps(e), b'"event_type":"task.created"', b'"event_type":"task.created","event_type":"task.failed"'
        ),
    )
    e = ev("task.created")
    b.dead(
        cat,
        "source twice",
        e,
        dup,
        raw=replace_once(dumps(e), b'"source":"agent-runtime"', b'"source":"a","source":"b"'),
    )
    e = ev("task.created")
    b.dead(
        cat,
        "payload twice",
        e,
        dup,
        raw=replace_once(dumps(e), b'"payload":', b'"payload":{"title":"first"},"payload":'),
    )
    e = ev("task.created")
    b.dead(
        cat,
        "occurred_at twice",
        e,
        dup,
        raw=replace_once(dumps(e), b'"occurred_at":', b'"occurred_at":"2026-01-01T00:00:00Z","occurred_at":'),
    )
    e = ev("task.created")
    b.dead(cat, "payload.title twice", e, dup, raw=replace_once(dumps(e), b'"title":"Fix', b'"title":"x","title":"Fix'))
    e, raw = action('{"a":{"b":{"c":{"d":{"x":1,"x":2}}}}}')
    b.dead(cat, "duplicate deep in free-form detail", e, dup, raw=raw)
    e = ev("task.created")
    b.dead(
        cat,
        "duplicate spelled with an escape",
        e,
        dup,
        raw=replace_once(dumps(e), b'"source":"agent-runtime"', b'"source":"a","sourc\\u0065":"b"'),
    )
    e = ev("task.created")
    b.dead(
        cat,
        "duplicate written with spaces",
        e,
        dup,
        raw=replace_once(dumps(e), b'"source":"agent-runtime"', b'"source" : "a" , "source" : "a"'),
    )

    cat = "NaN and infinities"
    for literal in ("NaN", "Infinity", "-Infinity"):
        e, raw = action(f'{{"n": {literal}}}')
        b.dead(
            cat,
            f"{literal} in free-form detail",
            e,
            rf"{re.escape(literal)}.*not valid JSON|{re.escape(literal)}",
            raw=raw,
        )
        e = ev("metric.recorded", payload={"value": 1.25})
        b.dead(
            cat,
            f"{literal} for a metric value",
            e,
            rf"{re.escape(literal)}",
            raw=replace_once(dumps(e), b'"value":1.25', b'"value":' + literal.encode()),
        )
    e = ev("llm.called")
    b.dead(cat, "NaN for a cost", e, r"NaN", raw=replace_once(dumps(e), b'"cost_usd":0.01168', b'"cost_usd":NaN'))
    e = ev("task.created")
    b.dead(
        cat,
        "NaN as an unknown field",
        e,
        r"NaN|unknown field",
        raw=replace_once(dumps(e), b'"source"', b'"nan":NaN,"source"'),
    )

    cat = "numbers out of range"
    for text in ("1e400", "-1e400", "1E+999"):
        e, raw = action(f'{{"n": {text}}}')
        b.dead(cat, f"{text} in free-form detail", e, r"out of range|beyond|finite", raw=raw)
    e = ev("metric.recorded", payload={"value": 1.25})
    b.dead(
        cat,
        "1e400 for a metric value",
        e,
        r"out of range|finite|beyond",
        raw=replace_once(dumps(e), b'"value":1.25', b'"value":1e400'),
    )
    e, raw = action('{"n": 18446744073709551616}')
    b.dead(cat, "2**64 in free-form detail", e, r"out of range|64 bits", raw=raw)
    e, raw = action('{"n": -9223372036854775809}')
    b.dead(cat, "-2**63-1 in free-form detail", e, r"out of range|64 bits", raw=raw)
    b.dead(cat, "2**63 tokens", ev("llm.called", payload={"input_tokens": 2**63}), r"input_tokens")
    b.dead(cat, "10**30 priority", ev("task.created", payload={"priority": 10**30}), r"priority")
    b.dead(cat, "negative tokens", ev("llm.called", payload={"output_tokens": -1}), r"output_tokens")
    b.dead(cat, "priority 6", ev("task.created", payload={"priority": 6}), r"priority")
    b.dead(cat, "negative cost", ev("llm.called", payload={"cost_usd": -0.01}), r"cost_usd")

    cat = "wrong JSON types"
    b.dead(cat, "string for an integer", ev("task.created", payload={"priority": "3"}), r"priority.*string|string")
    b.dead(cat, "string for a duration", ev("task.completed", payload={"duration_ms": "100"}), r"duration_ms")
    b.dead(cat, "string for a float", ev("llm.called", payload={"cost_usd": "0.5"}), r"cost_usd")
    b.dead(cat, "true for an integer", ev("task.created", payload={"priority": True}), r"boolean")
    b.dead(cat, "false for tokens", ev("llm.called", payload={"input_tokens": False}), r"boolean")
    b.dead(cat, "1 for a boolean", ev("task.failed", payload={"retriable": 1}), r"retriable")
    b.dead(cat, '"true" for a boolean', ev("task.failed", payload={"retriable": "true"}), r"retriable")
    b.dead(cat, "3.0 for an integer", ev("task.created", payload={"priority": 3.0}), r"priority")
    b.dead(cat, "3.5 for an integer", ev("task.created", payload={"priority": 3.5}), r"priority")
    b.dead(cat, "number for a title", ev("task.created", payload={"title": 42}), r"title")
    b.dead(cat, "number for a task id", ev("task.created", task_id=7), r"task_id")
    b.dead(cat, "number for the source", ev("task.created", source=1.5), r"source")
    b.dead(cat, "object for a title", ev("task.created", payload={"title": {"text": "t"}}), r"title")
    b.dead(cat, "array for a title", ev("task.created", payload={"title": ["t"]}), r"title")
    b.dead(cat, "null for a required title", ev("task.created", payload={"title": None}), r"title")
    b.dead(cat, "payload an array", ev("task.created") | {"payload": []}, r"payload")
    b.dead(cat, "payload a string", ev("task.created") | {"payload": "title=x"}, r"payload")
    b.dead(cat, "payload null", ev("task.created") | {"payload": None}, r"payload")
    b.dead(cat, "event id a number", ev("task.created", event_id=12345), r"event_id|UUID", family="task")
    b.dead(
        cat, "metric attribute an object", ev("metric.recorded", payload={"attributes": {"o": {"x": 1}}}), r"attributes"
    )
    e, raw = action('[{"k":1}]')
    b.dead(cat, "free-form detail an array (not an object)", e, r"dict|object|valid", raw=raw)
    b.dead(cat, "unknown enum value", ev("task.status_changed", payload={"to_status": "exploded"}), r"to_status")

    cat = "timestamps"
    for name, when, reason in [
        ("integer timestamp", 1767225600, r"RFC 3339|string"),
        ("float timestamp", 1767225600.5, r"RFC 3339|string"),
        ("Unix seconds in a string", "1767225600", r"RFC 3339"),
        ("naive timestamp", "2026-05-04T09:30:00", r"timezone|offset"),
        ("naive with a space", "2026-05-04 09:30:00", r"RFC 3339|timezone|offset"),
        ("date only", "2026-05-04", r"RFC 3339"),
        ("no seconds", "2026-05-04T09:30Z", r"seconds|RFC 3339"),
        ("leap second", "2026-12-31T23:59:60Z", r"leap second"),
        ("year 0", "0000-01-01T00:00:00Z", r"year|2000|RFC 3339|valid"),
        ("year 1999", "1999-12-31T23:59:59Z", r"2000"),
        ("year 2100", "2100-01-01T00:00:00Z", r"2100"),
        ("year 10000", "10000-01-01T00:00:00Z", r"RFC 3339|year"),
        ("30 February", "2026-02-30T00:00:00Z", r"day|date|valid|RFC"),
        ("hour 24", "2026-05-04T24:00:00Z", r"hour|valid|RFC"),
        ("nanoseconds", "2026-05-04T09:30:00.123456789Z", r"6 fractional|fraction|RFC"),
        ("offset +24:00", "2026-05-04T09:30:00+24:00", r"offset|timezone|valid|RFC"),
        ("offset +05 (no minutes)", "2026-05-04T09:30:00+05", r"RFC 3339|offset"),
        ("empty string", "", r"RFC 3339|occurred_at"),
        ("null", None, r"occurred_at"),
        ("year 2026 in words", "May 4th 2026", r"RFC 3339"),
    ]:
        b.dead(cat, f"occurred_at: {name}", ev("task.created", occurred_at=when), reason)

    cat = "event id"
    for name, value, reason in [
        ("not a UUID", "not-a-uuid", r"UUID|event_id"),
        ("empty", "", r"UUID|event_id"),
        ("null", None, r"event_id"),
        ("braced", "{" + fresh_id() + "}", r"UUID|event_id"),
        ("urn:uuid:", "urn:uuid:" + fresh_id(), r"UUID|event_id"),
        ("32 hex digits, no dashes", fresh_id().replace("-", ""), r"UUID|event_id"),
        ("letters that are not hex", "zzzzzzzz" + fresh_id()[8:], r"UUID|event_id"),
        ("37 characters", fresh_id() + "0", r"UUID|event_id"),
        ("tab before it", "\t" + fresh_id(), r"UUID|event_id"),
    ]:
        b.dead(cat, f"event_id: {name}", ev("task.created", event_id=value), reason)
    b.dead(
        cat,
        "no event_id",
        {k: v for k, v in ev("task.created").items() if k != "event_id"},
        r"event_id.*required|required.*event_id|event_id",
    )
    b.dead(cat, "no occurred_at", {k: v for k, v in ev("task.created").items() if k != "occurred_at"}, r"occurred_at")
    b.dead(
        cat,
        "neither event_id nor occurred_at",
        {k: v for k, v in ev("task.created").items() if k not in ("event_id", "occurred_at")},
        r"event_id|occurred_at",
    )

    cat = "missing, unknown, oversized fields"
    b.dead(cat, "task event without its task id", ev("task.completed", task_id=...), r"task_id: required field")
    b.dead(cat, "tool call without its agent id", ev("tool.called", agent_id=...), r"agent_id: required field")
    b.dead(cat, "no source", {k: v for k, v in ev("task.created").items() if k != "source"}, r"source")
    b.dead(
        cat, "no payload where required", {k: v for k, v in ev("task.created").items() if k != "payload"}, r"payload"
    )
    b.dead(cat, "no title", ev("task.created", payload={"title": ...}), r"title")
    b.dead(cat, "unknown envelope field", ev("task.created", surprise=1), r"surprise|unknown field")
    b.dead(cat, "unknown payload field", ev("task.created", payload={"colour": "red"}), r"colour|unknown field")
    b.dead(cat, "unknown key of 64 KB", ev("task.created", **{"k" * 65_536: 1}), r"unknown field|characters")
    e = ev("task.created", **{f"f{i}": 0 for i in range(150_000)})
    b.dead(cat, "150,000 unknown fields", e, r"unknown field")
    b.dead(cat, "schema_version 2.0", ev("task.created", schema_version="2.0"), r"schema_version|major")
    b.dead(cat, "schema_version a number", ev("task.created", schema_version=1.1), r"schema_version")
    b.dead(cat, "id of 201 characters", ev("task.created", task_id="T" * 201), r"task_id|200")
    b.dead(cat, "title of 201 characters", ev("task.created", payload={"title": "t" * 201}), r"title|200")
    b.dead(
        cat,
        "description of 10,001 characters",
        ev("task.created", payload={"description": "x" * 10_001}),
        r"description|10000|10,000",
    )
    b.dead(
        cat,
        "chat content of 100,001 characters",
        ev("chat.message", payload={"content": "c" * 100_001}),
        r"content|100000|100,000",
    )
    b.dead(
        cat,
        "event larger than max_event_bytes",
        ev("agent.action", payload={"detail": {"blob": "b" * 1_500_000}}),
        r"bytes|large|limit",
        kinds=frozenset({"too_large", "validation"}),
    )
    b.dead(
        cat,
        "status unchanged",
        ev("task.status_changed", payload={"from_status": "blocked", "to_status": "blocked"}),
        r"status|changed",
    )
    b.dead(
        cat,
        "task depends on itself",
        ev("task.dependency_added", task_id="T-1", payload={"depends_on_task_id": "T-1"}),
        r"itself|depend",
    )
    b.dead(cat, "invalid commit sha", ev("deployment.started", payload={"commit_sha": "not-a-sha"}), r"commit_sha")
    b.dead(cat, "invalid URL", ev("deployment.completed", payload={"url": "javascript:alert(1)"}), r"url")

    cat = "deep nesting"
    e, raw = action(nested(10_000))
    b.dead(cat, "free-form detail 10,000 levels deep", e, r"nest|deep", raw=raw, kinds=NOT_AN_EVENT)
    e, raw = action(nested(100))
    b.dead(cat, "free-form detail 100 levels deep", e, r"nest|deep", raw=raw, kinds=NOT_AN_EVENT)
    e, raw = action("[" * 3000 + "]" * 3000)
    b.dead(
        cat,
        "free-form detail 3,000 nested arrays",
        e,
        r"nest|deep",
        raw=raw.replace(b'"detail":' + b"[" * 3000 + b"]" * 3000, b'"detail":{"a":' + b"[" * 3000 + b"]" * 3000 + b"}"),
        kinds=NOT_AN_EVENT,
    )

    # -- bundles -------------------------------------------------------------------------
    cat = "bundles"
    ok1, ok2, ok3 = ev("task.created"), ev("task.started"), ev("task.completed")
    no_id = {k: v for k, v in ev("task.created").items() if k != "event_id"}
    dup_source = ev("task.created")
    nan_detail, nan_raw = action('{"n": NaN}')
    b.bundle(
        cat,
        "valid and invalid mixed",
        [
            member("bundle: valid 1", cat, ok1, STORED),
            member(
                "bundle: duplicate key",
                cat,
                dup_source,
                DEAD,
                raw=replace_once(dumps(dup_source), b'"source":"agent-runtime"', b'"source":"a","source":"b"'),
                reason=r"duplicate key",
            ),
            member("bundle: a number", cat, 1, DEAD, raw=b"1", reason=r"object"),
            member("bundle: valid 2", cat, ok2, STORED),
            member("bundle: no event_id", cat, no_id, DEAD, reason=r"event_id"),
            member("bundle: NaN", cat, nan_detail, DEAD, raw=nan_raw, reason=r"NaN"),
            member("bundle: other family", cat, ev("llm.called"), EITHER),
            member("bundle: valid 3", cat, ok3, STORED),
            member(
                "bundle: unknown type",
                cat,
                ev("task.created", event_type="task.exploded"),
                DEAD,
                reason=r"unknown event_type",
            ),
        ],
        family="task",
    )
    b.bundle(
        cat,
        "all valid",
        [
            member(f"bundle of valid: {t}", cat, ev(t), STORED)
            for t in ("session.started", "chat.message", "chat.message", "session.ended")
        ],
        family="session",
    )
    same = ev("requirement.created")
    b.bundle(
        cat,
        "one event twice",
        [member("bundle: first copy", cat, same, STORED), member("bundle: second copy", cat, same, RESENT)],
        family="requirement",
    )
    lone = ev("deployment.started")
    b.bundle(cat, "one valid event in an array", [member("bundle of one", cat, lone, STORED)], family="deployment")

    cat = "re-sent copies"
    again = ev("task.created")
    raw = b.stored(cat, "sent once", again)
    b.event(cat, "sent again, same bytes", again, RESENT, raw=raw)
    again2 = ev("user.action")
    b.stored(cat, "sent once (user)", again2)
    b.event(cat, "sent again, pretty-printed", again2, RESENT, raw=json.dumps(again2, indent=2).encode())
    return assign_partitions(b.messages)


def assign_partitions(messages: list[Hostile], partitions: int = 4) -> list[Hostile]:
    """Spread each topic's messages over its partitions, in turn."""
    sent: Counter[str] = Counter()
    for message in messages:
        message.partition = sent[message.family] % partitions
        sent[message.family] += 1
    # A re-sent copy goes where its first copy went: that is where the dedup window holds it.
    first: dict[str, Hostile] = {}
    for message in messages:
        unit = message.units[0]
        if unit.event_id and not message.bundle:
            if unit.expect == RESENT:
                message.partition = first[unit.event_id].partition
            first.setdefault(unit.event_id, message)
    return messages


def sentinels(round_name: str, partitions: int) -> list[Hostile]:
    """A valid event on every partition of every input topic."""
    messages = []
    for family in Family:
        example = next(t for t in example_types() if family_of(t) == family.value)
        for partition in range(partitions):
            event = ev(example, source=f"sentinel-{round_name}")
            name = f"sentinel {round_name} {family.value}/{partition}"
            value = dumps(event)
            unit = Unit(name, "sentinel", STORED, sent=as_sent(value, event), event_id=event["event_id"])
            messages.append(Hostile(name, "sentinel", family.value, value, [unit], partition=partition))
    return messages


def check_unique(messages: list[Hostile]) -> None:
    """Each message is told apart by its partition and bytes, each event by its id (re-sent copies aside)."""
    seen: Counter[tuple[str, int, bytes | None]] = Counter(
        (m.family, m.partition, m.value) for m in messages if m.units[0].expect != RESENT
    )
    assert max(seen.values()) == 1, [(*k[:2], k[2][:80] if k[2] else k[2]) for k, n in seen.items() if n > 1]
    ids: Counter[str] = Counter(u.event_id for m in messages for u in m.units if u.event_id and u.expect != RESENT)
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1]


# ---- kafkajs ------------------------------------------------------------------------------


async def send_with_kafkajs(modules: Path, bootstrap: str, prefix: str, messages: list[Hostile], work: Path) -> None:
    """Send ``messages`` in order with the Node producer; note each one's offset."""
    records = []
    for m in messages:
        record: dict[str, Any] = {
            "topic": f"{prefix}.{m.family}",
            "partition": m.partition,
            "value_base64": None if m.value is None else base64.b64encode(m.value).decode(),
        }
        if m.key is None:
            record["key"] = None
        else:
            record["key_base64"] = base64.b64encode(m.key).decode()
        records.append(record)
    path = work / f"records-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(records))
    result = await kafkajs_send(modules, bootstrap, path, 120)
    assert result["sent"] == len(records), result
    for m, (partition, offset) in zip(messages, result["results"], strict=True):
        assert partition == m.partition, (m.name, partition)
        m.offset = offset


# ---- judging what was stored ------------------------------------------------------------

DeadRow = dict[str, Any]  # a row of dead_letters: its columns as the migrations at hand made them

ENVELOPE = frozenset(EVENT_COLUMNS) - {"attribution"}  # the envelope is what a row of events holds
ENVELOPE_TEXT = tuple(
    c
    for c in EVENT_COLUMNS
    if c in ENVELOPE and c not in {"event_id", "occurred_at", "schema_version", "causation_id", "payload"}
)
RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|([+-])(\d{2}):(\d{2}))$")


def short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} chars)"


def sent_instant(text: Any) -> datetime | None:
    """The instant an RFC 3339 text names exactly (``None``: none PostgreSQL holds exactly)."""
    match = RFC3339.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    if fraction[6:].strip("0"):
        return None
    if match.group(8).upper() == "Z":
        tz = UTC
    else:
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        tz = timezone(-offset if match.group(9) == "-" else offset)
    try:
        return datetime(year, month, day, hour, minute, second, int(fraction[:6].ljust(6, "0")), tzinfo=tz)
    except ValueError:
        return None


def lenient_uuid(text: str | None) -> uuid.UUID | None:
    """The UUID a sloppy reader would take ``text`` for (to find an event stored under an altered id)."""
    if not isinstance(text, str):
        return None
    try:
        return uuid.UUID(text.strip().strip("{}").removeprefix("urn:uuid:").replace("\x00", ""))
    except ValueError:
        return None


def same_number(sent: int | float | Decimal, stored: int | float | Decimal) -> bool:
    """An integer must come back exactly; a number written with a fraction or an exponent as the
    same double (most readers take JSON numbers as doubles), and never as zero when it was not."""
    kept = Decimal(repr(stored)) if isinstance(stored, float) else Decimal(stored)
    if isinstance(sent, int):
        return kept == sent
    wanted = Decimal(repr(sent)) if isinstance(sent, float) else sent
    if kept == wanted:
        return True
    if wanted == 0 or kept == 0 or not wanted.is_finite():
        return False
    return abs(kept - wanted) <= abs(wanted) * Decimal(2) ** -52


def same_json(sent: Any, stored: Any) -> bool:
    """Whether ``stored`` is the JSON value that was sent (true is not 1, null is not NaN, 1 is 1.0)."""
    if sent is None or isinstance(sent, bool | str):
        return type(stored) is type(sent) and stored == sent
    if isinstance(sent, int | float | Decimal):
        return isinstance(stored, int | float | Decimal) and not isinstance(stored, bool) and same_number(sent, stored)
    if isinstance(sent, dict):
        return (
            isinstance(stored, dict)
            and sent.keys() == stored.keys()
            and all(same_json(v, stored[k]) for k, v in sent.items())
        )
    if isinstance(sent, list):
        return isinstance(stored, list) and len(sent) == len(stored) and all(map(same_json, sent, stored))
    return False


def payload_defaults(event_type: str) -> dict[str, list[Any]]:
    """What the payload's optional fields hold when they are not sent (a stored row has them all)."""
    cls = EVENT_CLASSES_BY_TYPE.get(event_type)
    if cls is None:
        return {}
    annotation = cls.model_fields["payload"].annotation
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    defaults: dict[str, list[Any]] = defaultdict(list)
    for option in get_args(annotation) or (annotation,):
        if isinstance(option, type) and issubclass(option, BaseModel):
            for name, info in option.model_fields.items():
                if not info.is_required():
                    default = to_jsonable_python(info.get_default(call_default_factory=True))
                    defaults[name].append(json.loads(json.dumps(default), parse_float=Decimal))
    return defaults


def differences(sent: dict[str, Any], row: asyncpg.Record) -> list[str]:
    """How the stored row differs from the event as it was sent (empty: stored exactly).

    A reference the producer left out may be filled in by correlation, when the row's
    ``attribution`` says so (and how); a reference it sent must be stored as sent.
    """
    found = []
    attribution = row["attribution"]
    filled: dict[str, Any] = json.loads(attribution) if attribution is not None else {}
    for name, how in filled.items():
        if sent.get(name) is not None or row[name] is None or not isinstance(how, str):
            found.append(f"attribution claims {name} filled by {how!r}: sent {short(sent.get(name))}")
    sent_id = sent.get("event_id")
    if not (isinstance(sent_id, str) and UUID_TEXT.match(sent_id) and uuid.UUID(sent_id) == row["event_id"]):
        found.append(f"event_id {short(sent_id)} stored as {row['event_id']}")
    when = sent_instant(sent.get("occurred_at"))
    if when is None or when != row["occurred_at"]:
        found.append(f"occurred_at {short(sent.get('occurred_at'))} stored as {row['occurred_at'].isoformat()}")
    for name in ENVELOPE_TEXT:
        if sent.get(name) != row[name] and name not in filled:
            found.append(f"{name} {short(sent.get(name))} stored as {short(row[name])}")
    if sent.get("schema_version", SCHEMA_VERSION) != row["schema_version"]:
        found.append(f"schema_version {short(sent.get('schema_version'))} stored as {row['schema_version']!r}")
    causation = sent.get("causation_id")
    if causation is None:
        if row["causation_id"] is not None:
            found.append(f"causation_id added: {row['causation_id']}")
    elif not (
        isinstance(causation, str) and UUID_TEXT.match(causation) and uuid.UUID(causation) == row["causation_id"]
    ):
        found.append(f"causation_id {short(causation)} stored as {row['causation_id']}")
    found += [f"{key} sent, not stored" for key in sent.keys() - ENVELOPE]
    stored = json.loads(row["payload"], parse_float=Decimal)
    sent_payload = sent.get("payload", {})
    if not isinstance(sent_payload, dict) or not isinstance(stored, dict):
        return [*found, f"payload {short(sent_payload)} stored as {short(stored)}"]
    for key, value in sent_payload.items():
        if key not in stored:
            found.append(f"payload.{key} dropped")
        elif not same_json(value, stored[key]):
            found.append(f"payload.{key}: sent {short(value)}, stored {short(stored[key])}")
    defaults = payload_defaults(row["event_type"])
    for key in stored.keys() - sent_payload.keys():
        if not any(same_json(default, stored[key]) for default in defaults.get(key, [])):
            found.append(f"payload.{key} added: {short(stored[key])}")
    return found


# ---- judging what was dead-lettered ---------------------------------------------------------


def unreadable(reason: str) -> str | None:
    """What makes a reason unfit for a person (``None``: nothing)."""
    if not reason.strip():
        return "an empty reason"
    if len(reason) > MAX_REASON_CHARS:
        return f"a reason of {len(reason):,} characters"
    if re.search(r"""\bb['"][^'"]*\\x[0-9a-fA-F]{2}""", reason):
        return "a Python bytes repr in the reason"
    if "Traceback (most recent call last)" in reason or re.search(r" object at 0x[0-9a-f]+", reason):
        return "a Python traceback or object repr in the reason"
    control = [c for c in reason if unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t"]
    if control:
        return f"control characters in the reason: {control[:3]!r}"
    return None


def reason_text(dead: DeadRow) -> str:
    """The reason line and the messages and paths of the errors it lists."""
    text = str(dead["error"] or "")
    with contextlib.suppress(ValueError, TypeError):
        errors = json.loads(dead["errors"]) if isinstance(dead.get("errors"), str) else dead.get("errors")
        text += " " + " ".join(f"{e.get('loc')}: {e.get('msg')}" for e in errors or [] if isinstance(e, dict))
    return text


def consistent(message: Hostile, dead: DeadRow) -> bool:
    """Whether a dead letter is of ``message`` (or of its event at ``event_index``), by content.

    Whole messages by the SHA-256 of the original or by its head (the store keeps the first
    64 KiB), events of a bundle by their id. Optional columns may be missing: the table is young.
    """
    original = bytes(dead["original"]) if dead.get("original") is not None else None
    index = dead.get("event_index")
    if index is None or not message.bundle:
        value = message.value or b""
        digest = dead.get("original_sha256")
        if digest and digest == hashlib.sha256(value).hexdigest():
            return True
        if original is None:
            return not digest
        return original == value[: len(original)] and (len(original) == len(value) or len(original) >= 4096)
    if index >= len(message.units):
        return False
    unit = message.units[index]
    if unit.marker:
        return dead.get("event_id") == unit.marker or (original is not None and unit.marker.encode() in original)
    return True


def attribute(
    dead: DeadRow, by_offset: dict[tuple[str, int, int], Hostile], messages: list[Hostile], prefix: str
) -> Hostile | None:
    """The message a dead letter is of: by where it was read, checked by content; by content alone otherwise."""
    message = by_offset.get((dead["source_topic"], dead["source_partition"], dead["source_offset"]))
    if message is not None and consistent(message, dead):
        return message
    candidates = [
        m
        for m in messages
        if f"{prefix}.{m.family}" == dead["source_topic"] and m.partition == dead["source_partition"]
    ]
    matches = [m for m in candidates if consistent(m, dead)]
    if len(matches) > 1 and dead.get("original") is not None:
        original = bytes(dead["original"])
        matches = [m for m in matches if any(u.marker and u.marker.encode() in original for u in m.units)] or matches
    return matches[0] if len(matches) == 1 else None


def judge_dead(unit: Unit, dead: DeadRow) -> list[str]:
    """What is wrong with the dead letter of ``unit`` (empty: nothing)."""
    problems = []
    kind, reason = str(dead["error_kind"]), str(dead["error"] or "")
    if kind in BUG_KINDS:
        problems.append(
            f"dead-lettered as a processor failure ({kind}), not for what the input holds: {short(reason, 300)}"
        )
    elif unit.kinds is not None and kind not in unit.kinds:
        problems.append(f"error kind {kind!r}, expected one of {sorted(unit.kinds)}: {short(reason, 300)}")
    if unit.reason and not re.search(unit.reason, reason_text(dead), re.IGNORECASE):
        problems.append(f"reason does not say /{unit.reason}/: {short(reason, 300)}")
    bad = unreadable(reason)
    if bad:
        problems.append(f"{bad}: {short(reason, 300)}")
    named = dead.get("event_id")
    if unit.marker and UUID_TEXT.match(unit.marker) and named and named != unit.marker:
        problems.append(f"dead letter names event_id {named!r}, sent {unit.marker!r}")
    errors = dead.get("errors")
    with contextlib.suppress(ValueError, TypeError):
        listed = len(json.loads(errors) if isinstance(errors, str) else errors or [])
        if listed > MAX_ERRORS_LISTED:
            problems.append(f"{listed:,} errors listed: a dead letter's reasons must be bounded")
        total = dead.get("errors_total")
        if total is not None and total < listed:
            problems.append(f"errors_total {total} is less than the {listed} errors listed")
    return problems


def scan_logs(log_dir: Path) -> dict[str, dict[str, int]]:
    """Processor failures and tracebacks in each worker's log."""
    found = {}
    for path in sorted(log_dir.glob("*.log")):
        text = path.read_text(errors="replace")
        found[path.name] = {
            "failed on an input": text.count("failed on "),
            "tracebacks": text.count("Traceback (most recent call last)"),
        }
    return found


# ---- the test -----------------------------------------------------------------------------


async def test_hostile_input_from_a_node_client_is_stored_exactly_or_dead_lettered(
    stack_settings: StackSettings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    began = time.monotonic()
    modules = await asyncio.to_thread(kafkajs_modules)
    battery = build_battery()
    partitions = stack_settings.partitions
    first, last = sentinels("before", partitions), sentinels("after", partitions)
    everything = battery + first + last
    check_unique(everything)
    prefix = stack_settings.topic_prefix
    units = [u for m in everything for u in m.units]
    timings: dict[str, float] = {"npm and battery": time.monotonic() - began}
    problems: list[str] = []

    async def stored_ids() -> set[uuid.UUID]:
        return {uuid.UUID(str(r["event_id"])) for r in await db.fetch("SELECT event_id FROM events")}

    async def sentinels_missing(messages: list[Hostile]) -> list[str]:
        ids = await stored_ids()
        return [m.name for m in messages if uuid.UUID(m.units[0].event_id or "") not in ids]

    async with Stack(stack_settings) as stack:
        bootstrap = stack.settings.kafka_bootstrap_servers
        timings["stack started"] = time.monotonic() - began
        await send_with_kafkajs(modules, bootstrap, prefix, first, tmp_path)

        async def first_stored() -> bool:
            return not await sentinels_missing(first)

        await wait_for(first_stored, 90, "the first sentinels on every input partition (the pipeline is up)")
        timings["pipeline up"] = time.monotonic() - began
        await send_with_kafkajs(modules, bootstrap, prefix, battery + last, tmp_path)
        timings["battery sent"] = time.monotonic() - began

        async def last_stored() -> bool:
            return not await sentinels_missing(last)

        try:
            await wait_for(last_stored, 60, "the sentinels sent after the battery")
        except AssertionError:
            missing = await sentinels_missing(last)
            problems.append(
                f"partitions stalled: {len(missing)} sentinels sent after the battery never stored: {missing}"
            )
        timings["sentinels after the battery stored"] = time.monotonic() - began

        # Dead letters take another hop (dead-letter topic, then the store): wait until
        # everything is accounted for, then for a quiet moment that would show late duplicates.
        accountable = sum(1 for u in units if u.expect != RESENT)
        previous, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 30
        while time.monotonic() < deadline:
            now = int(await db.fetchval("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM dead_letters)"))
            if now != previous:
                previous, quiet_since = now, time.monotonic()
            elif now >= accountable and time.monotonic() - quiet_since >= 2:
                break
            await asyncio.sleep(0.25)
        timings["settled"] = time.monotonic() - began
        health = {w.name: {"alive": w.alive, "restarts": w.restarts, "exits": list(w.exits)} for w in stack.workers}
        log_dir = stack.log_dir
    logs = scan_logs(log_dir)
    for name, state in health.items():
        if not state["alive"] or state["restarts"] or state["exits"]:
            problems.append(f"worker {name} exited or restarted: {state}")

    # -- who is where ---------------------------------------------------------------------
    rows = {
        uuid.UUID(str(r["event_id"])): r
        for r in await db.fetch(
            "SELECT event_id, occurred_at, event_type, schema_version, source, project_id, agent_id, session_id,"
            " task_id, requirement_id, correlation_id, causation_id, payload::text AS payload,"
            " attribution::text AS attribution FROM events"
        )
    }
    row_count, distinct_ids = await db.fetchrow("SELECT count(*), count(DISTINCT event_id) FROM events")
    if row_count != distinct_ids:
        problems.append(f"events holds {row_count - distinct_ids} duplicate rows of one event_id")
    dead_rows = [dict(r) for r in await db.fetch("SELECT * FROM dead_letters ORDER BY id")]
    by_offset = {(f"{prefix}.{m.family}", m.partition, m.offset): m for m in everything if m.offset is not None}
    dead_of: dict[int, list[DeadRow]] = defaultdict(list)
    notes: list[str] = []
    for dead in dead_rows:
        message = attribute(dead, by_offset, everything, prefix)
        where = (dead["source_topic"], dead["source_partition"], dead["source_offset"])
        if message is None:
            problems.append(
                f"a dead letter of no input sent: {where} #{dead.get('event_index')} {dead['error_kind']}: "
                f"{short(dead['error'], 200)}"
            )
            continue
        if by_offset.get(where) is not message:
            notes.append(f"{message.name}: its dead letter names {where}, which kafkajs did not report for it")
        index = dead.get("event_index")
        targets = (
            [message.units[index]]
            if message.bundle and index is not None and index < len(message.units)
            else message.units
        )
        for unit in targets:
            dead_of[id(unit)].append(dead)

    # -- every input, judged ----------------------------------------------------------------
    claimed: set[uuid.UUID] = set()
    for message in everything:
        for unit in message.units:
            key = lenient_uuid(unit.event_id)
            if key is not None:
                claimed.add(key)
            row = rows.get(key) if key is not None else None
            deads = dead_of.get(id(unit), [])
            where = f"{message.family}/{message.partition}@{message.offset}" + (
                f" #{unit.index}" if message.bundle else ""
            )
            found: list[str] = []
            if row is not None and deads:
                unit.outcome = "both"
                found.append(
                    f"in events and in dead_letters ({deads[0]['error_kind']}: {short(deads[0]['error'], 200)})"
                )
            elif row is not None:
                altered = differences(unit.sent or {}, row) if unit.sent is not None else ["(should not be stored)"]
                unit.outcome = "stored altered" if altered and unit.sent is not None else "stored"
                if unit.expect == DEAD:
                    found.append(
                        "stored, expected a dead letter"
                        + (f" (and altered: {'; '.join(altered)})" if unit.sent else "")
                    )
                elif altered:
                    found.append("stored altered: " + "; ".join(altered))
            elif deads:
                unit.outcome = f"dead:{deads[0]['error_kind']}"
                unit.detail = str(deads[0]["error"])
                if unit.expect in (STORED, RESENT):
                    found.append(
                        f"dead-lettered, expected stored: {deads[0]['error_kind']}: {short(deads[0]['error'], 300)}"
                    )
                else:
                    found += judge_dead(unit, deads[0])
                if len(deads) > 1:
                    notes.append(
                        f"{unit.category} / {unit.name}: dead-lettered {len(deads)} times (at-least-once re-reading)"
                    )
            else:
                unit.outcome = "neither"
                found.append("neither stored nor dead-lettered (silently dropped)")
            problems += [f"{unit.category} / {unit.name} [{where}] expected {unit.expect}: {p}" for p in found]

    expected_rows = {lenient_uuid(u.event_id) for u in units if u.outcome.startswith("stored")}
    strays = [r for k, r in rows.items() if k not in claimed]
    problems += [
        f"an event stored that no input sent: {r['event_id']} {r['event_type']} source={short(r['source'])}"
        for r in strays
    ]
    if row_count != len(expected_rows) + len(strays):
        problems.append(f"events holds {row_count} rows, expected {len(expected_rows)}")
    timings["judged"] = time.monotonic() - began

    report(battery, first + last, dead_rows, timings, health, logs, problems, notes)
    if problems:
        pytest.fail(f"{len(problems)} problems:\n" + "\n".join(problems), pytrace=False)


def report(
    battery: list[Hostile],
    sentinel_messages: list[Hostile],
    dead_rows: list[dict[str, Any]],
    timings: dict[str, float],
    health: dict[str, Any],
    logs: dict[str, dict[str, int]],
    problems: list[str],
    notes: list[str],
) -> None:
    """Print a summary (pytest shows it with -s or on failure); write every outcome to $DEVTRAIL_HOSTILE_REPORT."""
    units = [(m, u) for m in battery for u in m.units]
    by_category: dict[str, Counter[str]] = defaultdict(Counter)
    for _, unit in units:
        by_category[unit.category][unit.outcome] += 1
    lines = [
        f"hostile battery: {len(battery)} messages, {len(units)} inputs to account for, "
        f"{len(sentinel_messages)} sentinels; {len(dead_rows)} dead letters",
        *(f"  {category:40} {dict(counts)}" for category, counts in by_category.items()),
        "timings (s from start): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        f"workers: {health}",
        f"worker logs: {logs}",
        *notes,
    ]
    print("\n".join(lines))
    path = os.environ.get("DEVTRAIL_HOSTILE_REPORT")
    if path:
        Path(path).write_text(
            json.dumps(
                {
                    "messages": len(battery),
                    "inputs": [
                        {
                            "category": u.category,
                            "name": u.name,
                            "expect": u.expect,
                            "outcome": u.outcome,
                            "reason": u.detail[:400],
                            "where": f"{m.family}/{m.partition}@{m.offset}",
                            "index": u.index,
                            "bytes": None if m.value is None else len(m.value),
                        }
                        for m, u in units
                    ],
                    "timings": timings,
                    "workers": health,
                    "logs": logs,
                    "problems": problems,
                    "notes": notes,
                },
                indent=1,
                default=str,
            )
        )
