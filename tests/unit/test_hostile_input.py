"""Hostile and awkward input through the processor's core: every event is stored exactly as
sent or dead-lettered with a readable, bounded reason; nothing raises, nothing is dropped."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtrail.consumers.clean import EVENT_COLUMNS, decode_rows
from devtrail.consumers.deadletter import MAX_RECORD_BYTES, DeadLetter
from devtrail.consumers.processor.dedup import DedupIndex
from devtrail.consumers.processor.pipeline import BatchOutcome, SourceMessage, process_batch
from devtrail.schemas.codec import encode_event
from devtrail.schemas.events import EVENT_CLASSES_BY_TYPE
from devtrail.schemas.examples import example_event
from devtrail.schemas.reasons import MAX_ERRORS, MAX_MESSAGE_CHARS
from devtrail.schemas.wire import TINY_EXPONENT, may_underflow, validate_message
from tests.factories import llm_called, task_created

UUID = "01a2171e-1164-7bff-94a7-b0e4dd52132e"
WHEN = "2026-05-01T10:00:00Z"


def event(**changes: Any) -> dict[str, Any]:
    """A valid task.created as a producer in any language would send it."""
    raw: dict[str, Any] = {
        "event_id": UUID,
        "event_type": "task.created",
        "source": "tests",
        "occurred_at": WHEN,
        "task_id": "T-1",
        "payload": {"title": "t"},
    }
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not ...}


def action(detail: str) -> bytes:
    """An agent.action whose free-form ``detail`` is the given JSON text."""
    head = orjson.dumps(
        event(event_type="agent.action", task_id=..., agent_id="A-1", payload={"action": "a", "detail": {}})
    )
    return head.replace(b'"detail":{}', b'"detail":' + detail.encode())


def run(value: bytes | None) -> BatchOutcome:
    outcome = process_batch([SourceMessage("devtrail.task", 2, 7, value)], DedupIndex(60), 0.0)
    assert_bounded(outcome)
    return outcome


def assert_bounded(outcome: BatchOutcome) -> None:
    for dead in outcome.dead_letters:
        record = orjson.loads(dead.to_json())
        assert len(dead.to_json()) <= MAX_RECORD_BYTES
        assert record["error"], record
        assert len(record["errors"]) <= MAX_ERRORS
        assert all(len(str(e["msg"])) <= MAX_MESSAGE_CHARS for e in record["errors"])
        assert all(len(str(part)) <= 140 for e in record["errors"] for part in e["loc"])


def rows(outcome: BatchOutcome) -> list[dict[str, Any]]:
    return [dict(zip(EVENT_COLUMNS, r, strict=True)) for b in outcome.bundles.get(2, []) for r in decode_rows(b)]


def stored(value: bytes) -> dict[str, Any]:
    """The one clean row ``value`` makes; fails if it was dead-lettered."""
    outcome = run(value)
    assert not outcome.dead_letters, [d.error for d in outcome.dead_letters]
    [row] = rows(outcome)
    return row


def rejected(value: bytes | None, kind: str, *reasons: str) -> DeadLetter:
    """The one dead letter ``value`` makes, of ``kind`` and with each of ``reasons`` in it."""
    outcome = run(value)
    assert not rows(outcome), "accepted, expected a dead letter"
    [dead] = outcome.dead_letters
    assert dead.error_kind == kind, dead.error
    for reason in reasons:
        assert reason in dead.error, dead.error
    assert dead.original == (value or b"")
    assert (dead.source_topic, dead.source_partition, dead.source_offset) == ("devtrail.task", 2, 7)
    return dead


# ---- not JSON events at all -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message value"),
        (b"", "empty message value"),
        (b"   \n", "not valid JSON: Expecting value at line 2 column 1"),
        (b"null", "expected a JSON object or array, got null"),
        (b"42", "got an integer"),
        (b'"just a string"', "got a string"),
        (b"true", "got a boolean"),
        (b"[]", "an empty array carries no event"),
        (b'{"event_type": "task.created", ', "not valid JSON"),
        (orjson.dumps(event()) + b" trailing", "not valid JSON: Extra data"),
        (b"\xef\xbb\xbf" + orjson.dumps(event()), "byte order mark"),
        (orjson.dumps(event()).replace(b'"tests"', b'"t\xe9sts"'), "not valid UTF-8 at byte "),
        (orjson.dumps(event()).decode().encode("utf-16-le"), "UTF-16"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (orjson.dumps(event()).replace(b'"t"', b"1" + b"0" * 5000), "integer of more than 4,300 digits"),
        (b"\x00\x01\x02 binary", "NUL byte at byte 0"),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, bytes) else None,
)
def test_a_message_that_is_not_json_events_is_dead_lettered_whole(value: bytes | None, reason: str) -> None:
    dead = rejected(value, "decode", reason)
    assert dead.event_index is None


def test_latin1_is_reported_at_its_byte() -> None:
    value = orjson.dumps(event()).replace(b'"tests"', b'"t\xe9sts"')
    dead = rejected(value, "decode")
    assert f"at byte {value.index(0xE9)} (0xe9)" in dead.error
    assert "surrogates" not in dead.error


# ---- one event per message ----------------------------------------------------------------


REJECTED_EVENTS: list[tuple[str, bytes, str]] = [
    ("missing event_id", orjson.dumps(event(event_id=...)), "event_id: required on the wire"),
    ("missing occurred_at", orjson.dumps(event(occurred_at=...)), "occurred_at: required on the wire"),
    ("null event_id", orjson.dumps(event(event_id=None)), "event_id"),
    ("braced uuid", orjson.dumps(event(event_id="{" + UUID + "}")), "xxxxxxxx-xxxx"),
    ("urn uuid", orjson.dumps(event(event_id="urn:uuid:" + UUID)), "xxxxxxxx-xxxx"),
    ("uuid of letters", orjson.dumps(event(event_id="z" * 8 + UUID[8:])), "not a UUID"),
    ("integer time", orjson.dumps(event(occurred_at=1767225600)), "RFC 3339"),
    ("unix seconds in a string", orjson.dumps(event(occurred_at="1767225600")), "RFC 3339"),
    ("leap second", orjson.dumps(event(occurred_at="2026-12-31T23:59:60Z")), "leap seconds are not supported"),
    ("nanoseconds", orjson.dumps(event(occurred_at="2026-05-01T10:00:00.123456789Z")), "at most 6 fractional"),
    ("no timezone", orjson.dumps(event(occurred_at="2026-05-01T10:00:00")), "timezone offset"),
    ("no seconds", orjson.dumps(event(occurred_at="2026-05-01T10:00Z")), "with seconds"),
    ("space separator", orjson.dumps(event(occurred_at="2026-05-01 10:00:00Z")), "RFC 3339"),
    ("year 1999", orjson.dumps(event(occurred_at="1999-12-31T23:59:59Z")), "2000 <= year < 2100"),
    ("true for an integer", orjson.dumps(event(payload={"title": "t", "priority": True})), "got a boolean"),
    ("string for an integer", orjson.dumps(event(payload={"title": "t", "priority": "3"})), "got a string"),
    ("float for an integer", orjson.dumps(event(payload={"title": "t", "priority": 3.0})), "got a number"),
    (
        "string for a boolean",
        orjson.dumps(event(event_type="task.failed", payload={"error": "e", "retriable": "true"})),
        "got a string",
    ),
    ("leading space in an id", orjson.dumps(event(task_id=" T-1")), "without whitespace at either end"),
    ("trailing tab in an id", orjson.dumps(event(project_id="P\t")), "without whitespace at either end"),
    ("blank id", orjson.dumps(event(agent_id=" ")), "without whitespace at either end"),
    ("id of 201 characters", orjson.dumps(event(task_id="x" * 201)), "1 to 200 characters"),
    ("unknown event type", orjson.dumps(event(event_type="task.exploded")), "unknown event_type 'task.exploded'"),
    (
        "event type not a string",
        orjson.dumps(event(event_type=5)),
        "event_type must be a string naming a type, got an integer",
    ),
    ("no event type", orjson.dumps(event(event_type=...)), "event_type is missing"),
    ("unknown envelope field", orjson.dumps(event(surprise=1)), "surprise: unknown field"),
    (
        "no task_id on a task event",
        orjson.dumps(event(task_id=...)),
        "task.created.task_id: required field is missing: every task.created event names the task it is about",
    ),
    ("payload an array", orjson.dumps(event(payload=[])), "payload"),
    ("schema major 2", orjson.dumps(event(schema_version="2.0")), "other majors are not supported"),
    ("empty object", b"{}", "event_type is missing"),
    ("NUL in the event id", orjson.dumps(event(event_id=UUID[:-1] + "\x00")), "NUL character"),
    ("NUL in the event type", orjson.dumps(event(event_type="task.created\x00")), "NUL character"),
    ("NUL in an unknown key", orjson.dumps(event(**{"sur\x00prise": 1})), "NUL character"),
    ("NUL in a free-form key", action('{"a": {"k\\u0000": 1}}'), "detail.a.k\\u0000: String should not contain"),
    ("lone surrogate", orjson.dumps(event()).replace(b'"tests"', b'"\\ud800"'), "lone surrogate \\ud800"),
    ("lone surrogate in a key", action('{"\\udc00": 1}'), "lone surrogate \\udc00"),
    ("reversed surrogate pair", action('{"s": "\\ude00\\ud83d"}'), "lone surrogate"),
    (
        "duplicate event_id",
        orjson.dumps(event()).replace(b"{", b'{"event_id":"' + UUID.encode() + b'",', 1),
        "duplicate key 'event_id'",
    ),
    (
        "duplicate key, equal values",
        orjson.dumps(event()).replace(b'"source":"tests"', b'"source":"tests","source":"tests"'),
        "duplicate key 'source'",
    ),
    (
        "duplicate in the payload",
        orjson.dumps(event()).replace(b'"title":"t"', b'"title":"t","title":"u"'),
        "payload.title: duplicate key",
    ),
    (
        "duplicate deep in detail",
        action('{"a":{"b":{"c":{"d":{"x":1,"x":2}}}}}'),
        "detail.a.b.c.d.x: duplicate key 'x'",
    ),
    (
        "duplicate spelled with an escape",
        orjson.dumps(event()).replace(b'"source":"tests"', b'"source":"tests","sourc\\u0065":"x"'),
        "duplicate key 'source'",
    ),
    (
        "duplicate written Jackson-style",
        orjson.dumps(event()).replace(b'"source":"tests"', b'"source" : "a", "source" : "b"'),
        "duplicate key 'source'",
    ),
    (
        "NaN in a typed number",
        orjson.dumps(llm_called().model_dump(mode="json")).replace(b'"cost_usd":0.0', b'"cost_usd":NaN'),
        "NaN is not valid JSON",
    ),
    ("NaN in detail", action('{"n": NaN}'), "detail.n: NaN is not valid JSON"),
    ("Infinity in detail", action('{"n": [1, Infinity]}'), "detail.n.1: Infinity is not valid JSON"),
    ("-Infinity in detail", action('{"n": -Infinity}'), "-Infinity is not valid JSON"),
    ("1e400 in detail", action('{"n": 1e400}'), "number 1e400 is out of range"),
    (
        "-1e400 in a typed number",
        orjson.dumps(llm_called().model_dump(mode="json")).replace(b'"cost_usd":0.0', b'"cost_usd":-1e400'),
        "out of range",
    ),
    ("2**64 in detail", action('{"n": 18446744073709551616}'), "integer out of range (20 digits)"),
    (
        "2**63 tokens",
        orjson.dumps(llm_called().model_dump(mode="json")).replace(
            b'"input_tokens":10', b'"input_tokens":9223372036854775808'
        ),
        "input_tokens",
    ),
    (
        "negative tokens",
        orjson.dumps(llm_called().model_dump(mode="json")).replace(b'"input_tokens":10', b'"input_tokens":-1'),
        "input_tokens",
    ),
    ("nested 100 deep", action('{"d":' * 100 + "1" + "}" * 100), "nested more than 64 levels deep"),
    ("1e-400 in detail", action('{"n": 1e-400}'), "too small for a 64-bit float"),
    (
        "1e-400 in a typed number",
        orjson.dumps(llm_called().model_dump(mode="json")).replace(b'"cost_usd":0.0', b'"cost_usd":1e-400'),
        "too small for a 64-bit float",
    ),
    (
        "2**53 + 1 in a number field",
        orjson.dumps(llm_called().model_dump(mode="json")).replace(b'"cost_usd":0.0', b'"cost_usd":9007199254740993'),
        "beyond 2**53",
    ),
    (
        "2**63 in metric attributes",
        orjson.dumps(
            {**example_event("metric.recorded"), "event_id": UUID}
            | {"payload": {**example_event("metric.recorded")["payload"], "attributes": {"n": 2**63}}}
        ),
        "attributes",
    ),
]


@pytest.mark.parametrize(("name", "value", "reason"), REJECTED_EVENTS, ids=[n for n, _, _ in REJECTED_EVENTS])
def test_a_bad_event_is_dead_lettered_with_a_readable_reason(name: str, value: bytes, reason: str) -> None:
    dead = rejected(value, "validation", reason)
    assert dead.errors and dead.errors_total and dead.errors_total >= len(dead.errors)


def test_a_64_kb_event_type_is_not_echoed_back_whole() -> None:
    dead = rejected(orjson.dumps(event(event_type="x" * 65_536)), "validation", "(65,536 characters)")
    assert len(dead.error) < 400
    assert len(dead.to_json()) < 200_000  # the head of the original (base64 and text), and little else


def test_a_64_kb_unknown_key_is_not_echoed_back_whole() -> None:
    dead = rejected(orjson.dumps(event(**{"k" * 65_536: 1})), "validation", "unknown field")
    assert all(len(str(part)) < 140 for e in dead.errors for part in e["loc"])  # type: ignore[attr-defined]
    assert len(dead.error) < 400


def test_150000_unknown_fields_make_a_small_dead_letter_with_the_count() -> None:
    value = orjson.dumps(event(**{f"f{i}": i for i in range(150_000)}))
    assert len(value) > 2_000_000
    dead = rejected(value, "validation", "unknown field", "(+149,995 more)")
    assert dead.errors_total == 150_000
    record = orjson.loads(dead.to_json())
    assert len(dead.to_json()) < 200_000
    assert (record["errors_total"], len(record["errors"]), record["original_size"]) == (150_000, 20, len(value))
    assert record["original_truncated"] is True and len(record["original"]) == 64 * 1024
    assert record["event_id"] == UUID and record["event_type"] == "task.created"


# ---- accepted exactly as sent -----------------------------------------------------------


def test_an_event_is_stored_as_sent() -> None:
    row = stored(orjson.dumps(event(project_id="P 1", payload={"title": 'a\tb\n\\c "q" é 😀', "priority": 5})))
    assert (row["event_id"], row["occurred_at"], row["task_id"], row["project_id"]) == (
        UUID,
        "2026-05-01T10:00:00+00:00",
        "T-1",
        "P 1",
    )
    assert orjson.loads(row["payload"]) | {} == {
        "title": 'a\tb\n\\c "q" é 😀',
        "priority": 5,
        "description": None,
        "parent_task_id": None,
    }


def test_escapes_of_ordinary_characters_and_surrogate_pairs_are_the_characters() -> None:
    row = stored(orjson.dumps(event()).replace(b'"title":"t"', b'"title":"\\u00e9\\ud83d\\ude00\\/"'))
    assert orjson.loads(row["payload"])["title"] == "é😀/"


@pytest.mark.parametrize(
    "value",
    [
        orjson.dumps(event(), option=orjson.OPT_INDENT_2),
        orjson.dumps(event()).replace(b'":', b'" :').replace(b",", b" ,\r\n\t"),
        orjson.dumps(event()).replace(b'"title":"t"', b'"title":"he said \\":\\" then \\" :x"'),
        orjson.dumps(event()).replace(b'"title":"t"', b'"title":":","description":"\\"\\":"'),
    ],
    ids=["pretty-printed", "whitespace before colons", "quote-colon inside a string", "strings starting with a colon"],
)
def test_unusual_but_valid_layouts_are_accepted(value: bytes) -> None:
    row = stored(value)
    assert row["event_id"] == UUID
    assert orjson.loads(row["payload"])["title"] == orjson.loads(value)["payload"]["title"]


def test_free_form_values_are_kept_exactly() -> None:
    detail = '{"big": 9223372036854775807, "small": -9223372036854775808, "f": 1.5e300, "z": -0.0, "x": 1e-5,'
    detail += ' "deep": ' + '{"d":' * 50 + "[true, null]" + "}" * 50 + ', "s": "NaN", "t": "Infinity"}'
    row = stored(action(detail))
    kept = orjson.loads(row["payload"])["detail"]
    assert kept["big"] == 2**63 - 1 and kept["small"] == -(2**63)
    assert kept["f"] == 1.5e300 and math.copysign(1, kept["z"]) == -1 and kept["x"] == 1e-5
    assert (kept["s"], kept["t"]) == ("NaN", "Infinity")


def test_an_upper_case_uuid_is_the_same_uuid() -> None:
    assert stored(orjson.dumps(event(event_id=UUID.upper())))["event_id"] == UUID


@pytest.mark.parametrize("event_type", [["task.created"], {"t": 1}, 7, None])
def test_an_event_type_that_is_not_a_string_is_a_validation_dead_letter(event_type: Any) -> None:
    dead = rejected(orjson.dumps(event(event_type=event_type)), "validation", "event_type")
    assert "processor failed" not in dead.error


def test_ids_that_look_like_exponents_keep_the_fast_path() -> None:
    """``1e-1164`` inside the UUID is hex, not a number that underflows (a regex that took it
    for one sent about every bundle of 50 down the slow path: 70 % more CPU per event)."""
    assert "1e-1164" in UUID
    assert validate_message(orjson.dumps(event())) is not None


_NOISE = st.text(alphabet='0123456789.eE-:[, \t\n\x0bx"', max_size=8)
#: Texts near a number with an exponent: a separator or not, a sign, a mantissa, e-, an exponent.
_NEAR_NUMBERS = st.builds(
    "".join,
    st.lists(
        st.one_of(
            _NOISE,
            st.sampled_from([":", "[", ",", " ", "\t", "\n", "\x0b", "\x0c", "x", "-", "."]),
            st.from_regex(r"\A-?[0-9]{0,3}(\.[0-9]{0,2})?[eE]-0{0,2}[0-9]{1,4}\Z"),
        ),
        max_size=5,
    ),
).map(str.encode)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=24) | _NEAR_NUMBERS)
def test_the_fast_underflow_scan_finds_what_the_pattern_finds(value: bytes) -> None:
    assert may_underflow(value) == bool(TINY_EXPONENT.search(value))


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (b'{"n": 1e-400}', True),
        (b'{"n": [0,1e-400]}', True),
        (b'{"n":-12.5E-0400}', True),
        (b'{"n": [1.e-999]}', True),
        (b'{"n": .5e-400}', False),  # not a JSON number: the pattern needs a digit first
        (b'{"id": "0199e-4512"}', False),  # hex in an id: the character before is no separator
        (b'{"n": 1e-300}', False),  # a double holds it
        (b'{"model": "claude-sonnet-4-5"}', False),
    ],
)
def test_the_fast_underflow_scan_on_examples(text: bytes, found: bool) -> None:
    assert may_underflow(text) is found
    assert bool(TINY_EXPONENT.search(text)) is found


def test_tiny_numbers_that_a_double_holds_are_kept() -> None:
    value = action('{"n": 5e-324, "m": 1e-320}')
    outcome = run(value)
    assert not outcome.dead_letters, outcome.dead_letters[0].error if outcome.dead_letters else None


def test_an_integer_for_a_number_field_is_the_same_number() -> None:
    raw = llm_called().model_dump(mode="json") | {"occurred_at": WHEN}
    raw["payload"]["cost_usd"] = 2
    assert orjson.loads(stored(orjson.dumps(raw))["payload"])["cost_usd"] == 2


def test_trailing_zeros_beyond_microseconds_lose_nothing() -> None:
    row = stored(orjson.dumps(event(occurred_at="2026-05-01T12:00:00.123456000+02:00")))
    assert row["occurred_at"] == "2026-05-01T10:00:00.123456+00:00"


def test_sql_looking_strings_are_data() -> None:
    row = stored(orjson.dumps(event(task_id="T'; DROP TABLE events; --", source="x'); DELETE FROM events;--")))
    assert (row["task_id"], row["source"]) == ("T'; DROP TABLE events; --", "x'); DELETE FROM events;--")


def test_the_python_classes_still_fill_in_event_id_and_occurred_at_for_their_callers() -> None:
    made = task_created()
    row = stored(encode_event(made))
    assert row["event_id"] == str(made.event_id)


# ---- bundles --------------------------------------------------------------------------


def test_in_a_bundle_only_the_bad_events_are_dead_lettered_each_with_its_copy() -> None:
    good = [event(event_id=f"01a2171e-1164-7bff-94a7-b0e4dd5213{i:02x}") for i in range(3)]
    value = b"[%s,%s,1,%s]" % (
        orjson.dumps(good[0]),
        orjson.dumps(good[1]).replace(b'"source":"tests"', b'"source":"a","source":"b"'),
        orjson.dumps(good[2]),
    )
    outcome = run(value)
    assert [r["event_id"] for r in rows(outcome)] == [good[0]["event_id"], good[2]["event_id"]]
    duplicate, number = outcome.dead_letters
    assert (duplicate.event_index, number.event_index) == (1, 2)
    assert b'"source":"a","source":"b"' in duplicate.original  # the copy keeps both keys, as sent
    assert duplicate.event_id == good[1]["event_id"]
    assert "an event must be a JSON object, got an integer" in number.error


def test_every_event_is_accounted_for() -> None:
    messages = [orjson.dumps([event(), event(event_id=...)]), b"[[]]", b'[{"event_type": "x"}]']
    outcome = process_batch([SourceMessage("t", 0, i, m) for i, m in enumerate(messages)], DedupIndex(60), 0.0)
    assert outcome.accepted + len(outcome.dead_letters) + outcome.duplicates == 4


# ---- nothing raises, whatever comes ---------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_stored_or_dead_lettered(value: bytes) -> None:
    outcome = run(value)
    assert outcome.accepted + len(outcome.dead_letters) >= 1


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["event_id", "source", "payload", "task_id", "x"]), json_values, max_size=4))
def test_any_json_in_an_event_is_stored_or_dead_lettered(changes: dict[str, Any]) -> None:
    try:
        value = orjson.dumps(event(**changes))
    except orjson.JSONEncodeError:  # the strategy made what JSON cannot hold (int > 64 bits): as text then
        value = repr(event(**changes)).encode()
    outcome = run(value)
    assert outcome.accepted + len(outcome.dead_letters) == 1


def test_a_bug_on_one_message_dead_letters_it_and_the_rest_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import devtrail.consumers.processor.pipeline as pipeline

    def broken(value: bytes) -> None:
        if b"boom" in value:
            raise KeyError("boom")

    monkeypatch.setattr(pipeline, "validate_message", lambda value: broken(value))
    messages = [orjson.dumps(event(source="boom")), encode_event(task_created())]
    outcome = process_batch([SourceMessage("t", 0, i, m) for i, m in enumerate(messages)], DedupIndex(60), 0.0)
    [dead] = outcome.dead_letters
    assert dead.error_kind == "processing" and "KeyError" in dead.error and dead.source_offset == 0
    assert outcome.accepted == 1


@pytest.mark.parametrize("event_type", list(EVENT_CLASSES_BY_TYPE))
def test_every_type_takes_the_fast_path_when_sent_as_is(event_type: str) -> None:
    """The close look is for what is wrong or unusual; a plain event of any type never needs it."""
    one = orjson.dumps(example_event(event_type))
    assert validate_message(one) is not None
    assert validate_message(orjson.dumps([example_event(event_type)] * 3)) is not None
    assert validate_message(one.replace(b'"event_type"', b'"event_type":"x","event_type"', 1)) is None


def json_text(draw: st.DrawFn, depth: int) -> tuple[str, bool]:
    """A JSON object as text with keys from a tiny alphabet and any whitespace; whether a key repeats."""
    space = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])
    keys = draw(st.lists(st.sampled_from(["a", "b", "é", 'q"', "a\\"]), max_size=4))
    members, repeated = [], len(set(keys)) < len(keys)
    for key in keys:
        if depth < 3 and draw(st.booleans()):
            value, inner = json_text(draw, depth + 1)
            repeated |= inner
        else:
            value = draw(st.sampled_from(["1", '"x"', '"\\":"', "true", "null", "[1, {}]", '":"']))
        members.append(f"{draw(space)}{orjson.dumps(key).decode()}{draw(space)}:{draw(space)}{value}")
    return "{" + ",".join(members) + draw(space) + "}", repeated


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_a_repeated_key_anywhere_is_never_accepted_and_nothing_else_is_refused(data: st.DataObject) -> None:
    text, repeated = data.draw(st.composite(lambda draw: json_text(draw, 0))())
    outcome = run(action(text))
    assert (len(outcome.dead_letters), outcome.accepted) == ((1, 0) if repeated else (0, 1)), text
    if repeated:
        assert "duplicate key" in outcome.dead_letters[0].error
